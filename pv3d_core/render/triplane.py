"""Tri-plane feature sampling.

Points are scaled by 2 / box_warp and projected onto three planes with the *inverses* of EG3D's
plane-axis matrices (the third plane's axes are (z, x, y), a quirk of the original code that the
trained weights depend on), then sampled bilinearly (zeros padding, align_corners False).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

PLANE_AXES = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                           [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                           [[0, 0, 1], [1, 0, 0], [0, 1, 0]]], dtype=torch.float32)
_INV_AXES = torch.linalg.inv(PLANE_AXES)


def project_onto_planes(coords: torch.Tensor) -> torch.Tensor:
    """(N, M, 3) points -> (N*3, M, 2) plane coordinates."""
    n, m, _ = coords.shape
    inv = _INV_AXES.to(coords.device, coords.dtype)
    pts = coords.unsqueeze(1).expand(-1, 3, -1, -1).reshape(n * 3, m, 3)
    return torch.bmm(pts, inv.unsqueeze(0).expand(n, -1, -1, -1).reshape(n * 3, 3, 3))[..., :2]


def sample_planes(planes: torch.Tensor, coords: torch.Tensor, box_warp: float = 1.0) -> torch.Tensor:
    """Features (N, 3, M, C) of points (N, M, 3) from tri-planes (N, 3, C, H, W)."""
    n, p, c, h, w = planes.shape
    m = coords.shape[1]
    grid = project_onto_planes((2.0 / box_warp) * coords).unsqueeze(1)
    feats = F.grid_sample(planes.reshape(n * p, c, h, w), grid.to(planes.dtype), mode="bilinear",
                          padding_mode="zeros", align_corners=False)
    return feats.permute(0, 3, 2, 1).reshape(n, p, m, c)
