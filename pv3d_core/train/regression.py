"""Regression of generated frames onto frames with ground truth: the loss the reconstruction warm start
(:mod:`.recon`) and the teacher distillation (:mod:`.distill`) share.

Terms (each an L1 mean): the final image; its spatial gradients (what keeps edges sharp: a plain L1
is content with a blur that halves every edge); the raw neural render against the image filtered down
to the neural resolution; the silhouette (accumulated opacity) against the coverage mask; and the
expected ray distance against the ground-truth distance, only on pixels the head covers entirely,
where depth blended with the background would otherwise pull the silhouette towards the camera.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass
class RegressionWeights:
    image: float = 1.0
    gradient: float = 1.0
    raw: float = 1.0
    mask: float = 0.5
    depth: float = 0.5

    def to_dict(self) -> dict:
        return asdict(self)


def resize(x: torch.Tensor, res: int) -> torch.Tensor:
    """Filtered (antialiased) resize of (N, C, H, W) images."""
    if x.shape[-1] == res and x.shape[-2] == res:
        return x
    return F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False, antialias=True)


def masked_resize(depth: torch.Tensor, mask: torch.Tensor, res: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth and coverage at another resolution: depth averaged over the covered area only.

    ``depth`` and ``mask`` are (N, 1, H, W); ``mask`` is coverage in [0, 1] (not 0..255)."""
    m = resize(mask, res)
    d = resize(depth * mask, res) / m.clamp_min(1e-6)
    return torch.where(m > 1e-6, d, torch.zeros_like(d)), m


def gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def frame_loss(out: dict, image: torch.Tensor, mask: torch.Tensor | None = None,
               depth: torch.Tensor | None = None, weights: RegressionWeights | None = None) -> tuple[torch.Tensor, dict]:
    """Loss of a generator's output dict against target frames.

    ``image`` (N, 3, H, W) in [-1, 1] at the output resolution; ``mask`` (N, 1, h, w) coverage in [0, 1];
    ``depth`` (N, 1, h, w) distance along the unit ray (any value where ``mask`` is 0). Returns the
    total and a dict of the terms (floats)."""
    w = weights or RegressionWeights()
    if mask is not None and (float(mask.max()) > 1.0 + 1e-6 or float(mask.min()) < -1e-6):
        raise ValueError("masks must be coverage in [0, 1]; scale 8-bit masks by 1/255")
    logs = {}
    img = out["image"]
    if img.shape[-1] != image.shape[-1]:
        image = resize(image, img.shape[-1])
    loss = w.image * (l_img := (img - image).abs().mean())
    logs["image"] = float(l_img.detach())
    if w.gradient:
        (gx, gy), (tx, ty) = gradients(img), gradients(image)
        l_grad = 0.5 * ((gx - tx).abs().mean() + (gy - ty).abs().mean())
        loss = loss + w.gradient * l_grad
        logs["gradient"] = float(l_grad.detach())
    res = out["image_raw"].shape[-1]
    if w.raw:
        l_raw = (out["image_raw"] - resize(image, res)).abs().mean()
        loss = loss + w.raw * l_raw
        logs["raw"] = float(l_raw.detach())
    if mask is not None and w.mask:
        if depth is not None:
            d, m = masked_resize(depth, mask, res)
        else:
            m = resize(mask, res)
        l_mask = (out["image_alpha"] - m).abs().mean()
        loss = loss + w.mask * l_mask
        logs["mask"] = float(l_mask.detach())
        if depth is not None and w.depth:
            sel = m > 0.99
            if bool(sel.any()):
                l_depth = (out["image_depth"][sel] - d[sel]).abs().mean()
                loss = loss + w.depth * l_depth
                logs["depth"] = float(l_depth.detach())
    logs["total"] = float(loss.detach())
    return loss, logs


def density_smoothness(G, ws, z_motion, t, planes, gen: torch.Generator, n: int = 1000) -> torch.Tensor:
    """EG3D's density regulariser: density at random points equals density at nearby points."""
    pts = torch.rand(len(ws), n, 3, generator=gen) * 2 - 1
    pert = pts + torch.randn(pts.shape, generator=gen) * G.rendering_kwargs["density_reg_p_dist"]
    both = torch.cat([pts, pert], 1).to(ws.device)
    sig = G.sample_mixed(both, torch.zeros_like(both), ws, z_motion, t, noise_mode="random", planes=planes)["sigma"]
    return (sig[:, :n] - sig[:, n:]).abs().mean()


__all__ = ["RegressionWeights", "frame_loss", "resize", "masked_resize", "density_smoothness"]
