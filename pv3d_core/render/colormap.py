"""Depth as a picture: a turbo-like rainbow (dark blue, blue, cyan, green, yellow, orange, dark red) over
the depth range of the head, near in red, far in blue, empty space dark.

The colours are nine anchors picked along Google's turbo map, joined linearly: close enough to read a
depth legend with, and free of banding at 8 bits. The range is taken per frame from the surface
(pixels whose accumulated opacity is above one half), widened to multiples of ``step`` scene units so
that it changes rarely while the camera moves, and returned for a legend.
"""
from __future__ import annotations

import torch

#: (position, RGB in [0, 1]) along the map, from its low end (dark blue) to its high end (dark red)
TURBO_ANCHORS = (
    (0.000, (0.190, 0.072, 0.232)),
    (0.125, (0.275, 0.385, 0.843)),
    (0.250, (0.212, 0.665, 0.975)),
    (0.375, (0.102, 0.895, 0.714)),
    (0.500, (0.447, 0.996, 0.369)),
    (0.625, (0.784, 0.937, 0.204)),
    (0.750, (0.980, 0.729, 0.224)),
    (0.875, (0.965, 0.420, 0.098)),
    (1.000, (0.478, 0.016, 0.012)),
)


def turbo(x: torch.Tensor) -> torch.Tensor:
    """(...,) values in [0, 1] (clamped) -> (..., 3) RGB in [0, 1]."""
    pos = torch.tensor([a[0] for a in TURBO_ANCHORS], dtype=torch.float32, device=x.device)
    rgb = torch.tensor([a[1] for a in TURBO_ANCHORS], dtype=torch.float32, device=x.device)
    x = x.float().clamp(0, 1)
    i = torch.clamp(torch.searchsorted(pos, x.contiguous(), right=True) - 1, 0, len(pos) - 2)
    w = ((x - pos[i]) / (pos[i + 1] - pos[i])).unsqueeze(-1)
    return rgb[i] * (1 - w) + rgb[i + 1] * w


def depth_range(depth: torch.Tensor, alpha: torch.Tensor, fallback: tuple[float, float], step: float = 0.05,
                ) -> tuple[float, float]:
    """(near, far) of the surface: the 1st and 99th percentiles of ``depth`` where ``alpha`` > 0.5,
    widened to multiples of ``step``; ``fallback`` when nothing is opaque."""
    d = depth[alpha > 0.5]
    if d.numel() < 4:
        return float(fallback[0]), float(fallback[1])
    q = torch.quantile(d.float(), torch.tensor([0.01, 0.99], device=d.device))
    lo = float(torch.floor(q[0] / step)) * step
    hi = float(torch.ceil(q[1] / step)) * step
    if hi - lo < step:
        hi = lo + step
    return round(lo, 6), round(hi, 6)


def depth_colours(depth: torch.Tensor, alpha: torch.Tensor, near: float, far: float) -> torch.Tensor:
    """(N, 1, H, W) depth and opacity -> (N, 3, H, W) in [-1, 1]: turbo with ``near`` red and ``far``
    blue, faded to black where the opacity is low (empty space)."""
    x = (far - depth[:, 0]) / max(1e-6, far - near)
    rgb = turbo(x).permute(0, 3, 1, 2) * alpha.clamp(0, 1)
    return rgb * 2 - 1
