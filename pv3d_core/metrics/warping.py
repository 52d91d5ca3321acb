"""Multi-view warping error: the side render splatted into the frontal view through its depth.

As the official script computes it (``multiview_error/compute_multiview_error.py``, ``warp_side``,
run with ``--yaw 30 --pitch 0 --size 256``):

- the final images are resized to ``size``² (bilinear), the side render's depth (expected distance
  along the unit ray, at the neural resolution) is upsampled to ``size``² (bilinear,
  align_corners False);
- every side pixel is lifted to 3D along its ray, projected into the frontal camera and written
  ("splatted", no z-buffer: the last write wins) to the frontal pixel it falls in
  (truncated coordinates, clamped to the image);
- error = |splatted − frontal image| in 0..255 over the colour channels of the frontal pixels that
  received a splat, reported as the mean and the median per pair, averaged over pairs and videos.

Official quirk, kept with ``official=True`` (default): side pixels that project outside the frontal
image are clamped onto its border, and the *frontal* pixels at the same row/column as those side
pixels are excluded (the out-of-range mask is applied in the wrong image's coordinates).
``official=False`` drops out-of-range splats instead and excludes nothing else.

Pairs per video (see :mod:`.evaluate` for the render order): (0, 2), (3, 1) (same time),
(0, 1), (3, 2) (other time); the first index is the frontal render, the second the side render.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import MetricError

PAIRS = ((0, 2), (3, 1), (0, 1), (3, 2))


def _rays(c, size: int):
    from ..render.rays import pixel_rays, split_camera

    cw, intr = split_camera(torch.as_tensor(np.asarray(c, np.float32)).reshape(1, 25))
    o, d = pixel_rays(cw, intr, size)
    return o[0].double().numpy(), d[0].double().numpy()


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """uint8/float (H, W, 3) -> float32 (size, size, 3), bilinear (as cv2.resize's default)."""
    x = torch.as_tensor(np.asarray(img, np.float32)).permute(2, 0, 1)[None]
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x[0].permute(1, 2, 0).numpy()


def resize_depth(depth: np.ndarray, size: int) -> np.ndarray:
    x = torch.as_tensor(np.asarray(depth, np.float32))[None, None]
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x[0, 0].numpy()


def warp_side(c_front, c_side, img_front: np.ndarray, img_side: np.ndarray, depth_side: np.ndarray,
              official: bool = True):
    """Splat the side image into the frontal view. Images (S, S, 3) float, depth (S, S).

    Returns (warped (S, S, 3), valid (S, S, 3) bool)."""
    s = img_front.shape[0]
    o, d = _rays(c_side, s)
    pts = o + d * np.asarray(depth_side, np.float64).reshape(-1, 1)
    cw = np.asarray(c_front, np.float64).reshape(-1)[:16].reshape(4, 4)
    k = np.asarray(c_front, np.float64).reshape(-1)[16:].reshape(3, 3)
    w2c = np.linalg.inv(cw)
    p = pts @ w2c[:3, :3].T + w2c[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        gx = (p[:, 0] / p[:, 2] * k[0, 0] + k[0, 2]) * 2 - 1
        gy = (p[:, 1] / p[:, 2] * k[1, 1] + k[1, 2]) * 2 - 1
    outside = ~(np.isfinite(gx) & np.isfinite(gy)) | (np.maximum(np.abs(gx), np.abs(gy)) > 1.0)
    gx, gy = np.nan_to_num(gx, nan=2.0, posinf=2.0, neginf=-2.0), np.nan_to_num(gy, nan=2.0, posinf=2.0, neginf=-2.0)
    px = np.clip(np.trunc((gx + 1) / 2 * s), 0, s - 1).astype(np.int64)
    py = np.clip(np.trunc((gy + 1) / 2 * s), 0, s - 1).astype(np.int64)
    src = np.asarray(img_side).reshape(-1, 3)
    warped = np.array(img_front, dtype=np.float32, copy=True)
    hit = np.zeros((s, s), bool)
    keep = np.ones(len(px), bool) if official else ~outside
    warped[py[keep], px[keep]] = src[keep]
    hit[py[keep], px[keep]] = True
    invalid = ~hit
    if official:
        invalid |= outside.reshape(s, s)
    valid = np.repeat(~invalid[..., None], 3, axis=2)
    warped[~valid] = 0
    return warped, valid


def pair_error(c_front, c_side, img_front, img_side, depth_side, size: int = 256, official: bool = True):
    """(mean, median) absolute error in 0..255 of one frontal/side pair; NaN when nothing was warped."""
    f = resize_image(img_front, size)
    sd = resize_image(img_side, size)
    dep = resize_depth(depth_side, size)
    warped, valid = warp_side(c_front, c_side, f, sd, dep, official)
    err = np.abs(np.clip(warped, 0, 255) - np.clip(f, 0, 255))[valid]
    if err.size == 0:
        return float("nan"), float("nan")
    return float(err.mean()), float(np.median(err))


def video_errors(images, depths, c_front, c_side, size: int = 256, official: bool = True) -> list:
    """Errors of one video's four renders (render order of :mod:`.evaluate`): [(mean, median)] per pair."""
    return [pair_error(c_front, c_side, images[a], images[b], depths[b], size, official) for a, b in PAIRS]


def summarise(per_video: list) -> dict:
    e = np.array(per_video, np.float64).reshape(-1, len(PAIRS), 2) if per_video else np.zeros((0, len(PAIRS), 2))
    ok = ~np.isnan(e[..., 0])
    if not ok.any():
        raise MetricError("warping error: no pair had any warped pixel")
    return {"mean_abs_error": float(e[..., 0][ok].mean()), "median_abs_error": float(e[..., 1][ok].mean()),
            "mean_abs_error_same_time": float(e[:, :2, 0][ok[:, :2]].mean()) if ok[:, :2].any() else None,
            "mean_abs_error_cross_time": float(e[:, 2:, 0][ok[:, 2:]].mean()) if ok[:, 2:].any() else None,
            "pairs_scored": int(ok.sum()), "videos": len(per_video), "pairs": [list(p) for p in PAIRS],
            "units": "0..255 per colour channel"}
