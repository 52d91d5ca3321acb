"""Camera rays through pixel centres (EG3D convention: normalised intrinsics, OpenCV camera axes)."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=16)
def _pixel_grid(resolution: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, resolution**2) u and v of the pixel centres in [0, 1], row-major: u runs along columns (x),
    v along rows (y). Made once per resolution and device (every frame asks for the same grid), as
    ordinary tensors even under inference_mode, so that a later autograd caller can use them."""
    with torch.inference_mode(False), torch.no_grad():
        ii, jj = torch.meshgrid(torch.arange(resolution, dtype=torch.float32, device=device),
                                torch.arange(resolution, dtype=torch.float32, device=device), indexing="ij")
        u = (jj * (1.0 / resolution) + 0.5 / resolution).reshape(1, -1)
        v = (ii * (1.0 / resolution) + 0.5 / resolution).reshape(1, -1)
    return u, v


def pixel_rays(cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int):
    """Ray origins and unit directions, each (N, resolution**2, 3), row-major over pixels."""
    n = cam2world.shape[0]
    dev = cam2world.device
    fx, fy = intrinsics[:, 0, 0:1], intrinsics[:, 1, 1:2]
    cx, cy, sk = intrinsics[:, 0, 2:3], intrinsics[:, 1, 2:3], intrinsics[:, 0, 1:2]
    u, v = _pixel_grid(resolution, dev)
    u, v = u.expand(n, -1), v.expand(n, -1)
    z = torch.ones_like(u)
    x_lift = (u - cx + cy * sk / fy - sk * v / fy) / fx * z
    y_lift = (v - cy) / fy * z
    pts = torch.stack((x_lift, y_lift, z, torch.ones_like(z)), dim=-1)
    world = torch.bmm(cam2world, pts.permute(0, 2, 1)).permute(0, 2, 1)[:, :, :3]
    origins = cam2world[:, :3, 3]
    # contiguous first: the norm over the last axis of the strided difference took 5-8x as long
    dirs = F.normalize((world - origins[:, None, :]).contiguous(), dim=2)
    return origins.unsqueeze(1).expand(-1, dirs.shape[1], -1), dirs


def split_camera(c: torch.Tensor):
    """(cam2world (N,4,4), intrinsics (N,3,3)) of a batch of 25-vectors."""
    if c.ndim != 2 or c.shape[1] != 25:
        raise ValueError(f"cameras must be (N, 25), got {tuple(c.shape)}")
    return c[:, :16].reshape(-1, 4, 4), c[:, 16:25].reshape(-1, 3, 3)
