"""What separates an aligned real photo from a render, applied to renders: the augmentation of the
portrait encoder's training (:mod:`pv3d_core.train.encoder`).

:func:`augment` replaces the background by a random smooth colour field (the generator's opacity is
the matte), shifts, scales and turns the crop by a few per cent or degrees (landmark alignment is not
exact), jitters colour and contrast, blurs or scales down and up again (small faces) and adds sensor
noise; each with its own probability, deterministic under a torch.Generator.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _gauss_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample Gaussian blur (sigma (N,) in pixels; 0 leaves a sample as it is)."""
    rad = int(math.ceil(3 * float(sigma.max()))) if len(sigma) else 0
    if rad < 1:
        return x
    k = torch.arange(-rad, rad + 1, dtype=x.dtype, device=x.device)
    w = torch.exp(-0.5 * (k[None] / sigma.clamp(min=1e-3)[:, None]) ** 2)
    w = w / w.sum(1, keepdim=True)
    n, c, h, wd = x.shape
    xs = x.reshape(1, n * c, h, wd)
    wk = w.repeat_interleave(c, 0)
    xs = F.conv2d(F.pad(xs, (rad, rad, 0, 0), mode="reflect"), wk[:, None, None, :], groups=n * c)
    xs = F.conv2d(F.pad(xs, (0, 0, rad, rad), mode="reflect"), wk[:, None, :, None], groups=n * c)
    return xs.reshape(n, c, h, wd)


def augment(images: torch.Tensor, alpha: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """What separates an aligned real photo from a render, applied to renders (N, 3, R, R) in [-1, 1]
    with their opacity (N, 1, r, r): see the module doc. Deterministic under ``gen``."""
    n, _, R, _ = images.shape
    dev = images.device

    def u(lo, hi, *shape):
        return (lo + (hi - lo) * torch.rand(shape or (n,), generator=gen)).to(dev)

    def coin(p):
        return (torch.rand(n, generator=gen) < p).to(dev)

    x = images.float()
    # background: a smooth random colour field behind the head
    a = F.interpolate(alpha.float(), size=(R, R), mode="bilinear", align_corners=False).clamp(0, 1)
    bg = F.interpolate(u(-1, 1, n, 3, 4, 4), size=(R, R), mode="bicubic", align_corners=False).clamp(-1, 1)
    bg = bg + 0.1 * F.interpolate(u(-1, 1, n, 3, 16, 16), size=(R, R), mode="bilinear", align_corners=False)
    swap = coin(0.5).view(n, 1, 1, 1).float()
    x = swap * (a * x + (1 - a) * bg) + (1 - swap) * x
    # crop: scale, rotation, shift
    s = u(0.93, 1.07)
    rot = u(-1, 1) * math.radians(6)
    tx, ty = u(-0.05, 0.05) * 2, u(-0.05, 0.05) * 2
    theta = torch.stack([torch.stack([s * torch.cos(rot), -s * torch.sin(rot), tx], -1),
                         torch.stack([s * torch.sin(rot), s * torch.cos(rot), ty], -1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # small faces: down and up again
    small = coin(0.3)
    if bool(small.any()):
        for i in torch.nonzero(small).flatten().tolist():
            r = int(R * float(u(0.3, 0.8)[0]))
            xi = F.interpolate(x[i:i + 1], size=(r, r), mode="bilinear", align_corners=False, antialias=True)
            x[i:i + 1] = F.interpolate(xi, size=(R, R), mode="bilinear", align_corners=False)
    # blur
    x = _gauss_blur(x, u(0.3, 1.5) * coin(0.3).float())
    # colour: contrast, saturation, per-channel gain, brightness
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * u(0.8, 1.2).view(n, 1, 1, 1) + mean
    grey = x.mean(1, keepdim=True)
    x = (x - grey) * u(0.7, 1.3).view(n, 1, 1, 1) + grey
    x = (x + 1) * u(0.92, 1.08, n, 3).view(n, 3, 1, 1) - 1 + u(-0.1, 0.1).view(n, 1, 1, 1)
    # noise
    x = x + torch.randn(x.shape, generator=gen).to(dev) * (u(0, 0.04) * coin(0.3).float()).view(n, 1, 1, 1)
    return x.clamp(-1, 1)
