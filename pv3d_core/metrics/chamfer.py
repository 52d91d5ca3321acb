"""Chamfer distance between the depth point clouds of two renders, as the official script computes it.

Official protocol (``chamfer_distance/script.py``): the four renders of each video (see
:mod:`.evaluate`) give per-pixel 3D points at the neural rendering resolution (64² for the released
models): the compositing-weighted mean of the ray's sample points, with the ray's left-over weight
(1 − accumulated opacity) put on its last sample. Pairs (0, 2), (3, 1) (same time, frontal vs side)
and (0, 1), (3, 2) (other time). For a pair (x, y):

    d = median over x's points with opacity > 0.5 of min over ALL of y's points |x − y|²
      + median over y's points with opacity > 0.5 of min over ALL of x's points |y − x|²

i.e. squared Euclidean distances (PyTorch3D's ``knn_points``), the opacity mask selecting the query
points only, not the candidates (a quirk of the official code kept here; ``search_masked=True``
restricts the candidates too). Pairs with an empty mask (NaN) are skipped, as the official script
does. The script prints the SUM over all scored pairs of all videos; the report gives that sum and
the mean per pair, and says which is which.
"""
from __future__ import annotations

import numpy as np

from . import MetricError

PAIRS = ((0, 2), (3, 1), (0, 1), (3, 2))


def nearest_sq(query: np.ndarray, cands: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Squared distance from each query point (N, 3) to its nearest candidate (M, 3)."""
    q = np.asarray(query, np.float64)
    c = np.asarray(cands, np.float64)
    if len(c) == 0:
        return np.full(len(q), np.nan)
    try:
        from scipy.spatial import cKDTree

        d, _ = cKDTree(c).query(q, k=1)
        return d * d
    except ImportError:   # pragma: no cover - scipy is a dependency; brute force as a fallback
        out = np.empty(len(q))
        cc = (c * c).sum(1)
        for s in range(0, len(q), chunk):
            b = q[s:s + chunk]
            out[s:s + chunk] = np.maximum((b * b).sum(1)[:, None] - 2 * b @ c.T + cc[None], 0).min(1)
        return out


def chamfer_distance(x, y, x_mask=None, y_mask=None, reduction: str = "median", search_masked: bool = False) -> float:
    """Chamfer distance between point sets x (N, 3) and y (M, 3) (see the module doc).

    ``x_mask``/``y_mask`` select the query points of each direction; ``reduction`` is "median"
    (official) or "mean". Returns NaN when a mask selects nothing (the official script skips those).
    """
    x = np.asarray(x, np.float64).reshape(-1, 3)
    y = np.asarray(y, np.float64).reshape(-1, 3)
    xm = np.ones(len(x), bool) if x_mask is None else np.asarray(x_mask, bool).reshape(-1)
    ym = np.ones(len(y), bool) if y_mask is None else np.asarray(y_mask, bool).reshape(-1)
    if xm.shape[0] != len(x) or ym.shape[0] != len(y):
        raise ValueError("masks must have one entry per point")
    if reduction not in ("median", "mean"):
        raise ValueError("reduction must be 'median' or 'mean'")
    if not xm.any() or not ym.any():
        return float("nan")
    red = np.median if reduction == "median" else np.mean
    cy = y[ym] if search_masked else y
    cx = x[xm] if search_masked else x
    return float(red(nearest_sq(x[xm], cy)) + red(nearest_sq(y[ym], cx)))


def depth_points(origins, dirs, depth, alpha, ray_end: float) -> np.ndarray:
    """Per-pixel points as the official renderer returns them: o + d · (W·depth + (1 − W)·ray_end).

    ``depth`` is the opacity-normalised expected distance (our renderer's ``image_depth``), W the
    accumulated opacity; the left-over weight sits on the last sample (at ``ray_end`` up to half a
    sample spacing).
    """
    w = np.asarray(alpha, np.float64).reshape(-1, 1)
    t = w * np.asarray(depth, np.float64).reshape(-1, 1) + (1 - w) * ray_end
    return np.asarray(origins, np.float64).reshape(-1, 3) + np.asarray(dirs, np.float64).reshape(-1, 3) * t


def video_chamfer(points, alphas, threshold: float = 0.5) -> list[float]:
    """Chamfer distances of one video's four renders: points (4, H*W, 3), alphas (4, H*W), per pair."""
    return [chamfer_distance(points[a], points[b], np.asarray(alphas[a]) > threshold,
                             np.asarray(alphas[b]) > threshold) for a, b in PAIRS]


def summarise(per_video: list[list[float]]) -> dict:
    d = np.array(per_video, np.float64).reshape(-1, len(PAIRS)) if per_video else np.zeros((0, len(PAIRS)))
    ok = ~np.isnan(d)
    if not ok.any():
        raise MetricError("Chamfer distance: no pair had points with opacity > 0.5 (the renders are empty)")
    single, cross = d[:, :2][ok[:, :2]], d[:, 2:][ok[:, 2:]]
    return {"sum": float(d[ok].sum()), "mean_per_pair": float(d[ok].mean()),
            "mean_same_time": float(single.mean()) if single.size else None,
            "mean_cross_time": float(cross.mean()) if cross.size else None,
            "pairs_scored": int(ok.sum()), "pairs_skipped_empty": int((~ok).sum()),
            "videos": len(per_video), "pairs": [list(p) for p in PAIRS],
            "note": "official script prints 'sum' (over all scored pairs of all videos); squared distances, "
                    "median over points"}
