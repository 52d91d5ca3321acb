"""The 68-point (iBUG 300-W / dlib) landmark scheme: groups, mirror order, temporal smoothing."""
from __future__ import annotations

import numpy as np

JAW = slice(0, 17)
BROWS = slice(17, 27)
NOSE = slice(27, 36)
EYE_IMAGE_LEFT = slice(36, 42)    # the subject's right eye, on the image's left
EYE_IMAGE_RIGHT = slice(42, 48)
MOUTH = slice(48, 68)
MOUTH_CORNERS = (48, 54)


def _mirror_order() -> np.ndarray:
    m = np.arange(68)
    pairs = [(i, 16 - i) for i in range(8)]
    pairs += [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22)]
    pairs += [(31, 35), (32, 34)]
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]
    pairs += [(60, 64), (61, 63), (65, 67)]
    for a, b in pairs:
        m[a], m[b] = b, a
    return m


#: index of each landmark's mirror partner (a point on the symmetry line is its own partner)
MIRROR = _mirror_order()


def mirror_landmarks(lm: np.ndarray, width: float) -> np.ndarray:
    """Landmarks (..., 68, 2) of the horizontally flipped image (pixel-centre convention: x -> width - x;
    in crop coordinates, width 1)."""
    lm = np.asarray(lm, dtype=np.float64)
    out = lm[..., MIRROR, :].copy()
    out[..., 0] = width - out[..., 0]
    return out


def eye_mouth(lm: np.ndarray):
    """(image-left eye centre, image-right eye centre, mouth centre) of 68 landmarks."""
    lm = np.asarray(lm, dtype=np.float64)
    return (lm[EYE_IMAGE_LEFT].mean(0), lm[EYE_IMAGE_RIGHT].mean(0),
            (lm[MOUTH_CORNERS[0]] + lm[MOUTH_CORNERS[1]]) / 2)


def smooth_sequence(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 (time), renormalised at the ends; sigma in frames (0 = none)."""
    values = np.asarray(values, dtype=np.float64)
    if sigma <= 0 or len(values) < 2:
        return values.copy()
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    flat = values.reshape(len(values), -1)
    out = np.empty_like(flat)
    n = len(values)
    for i in range(n):
        lo, hi = max(0, i - r), min(n, i + r + 1)
        w = k[lo - i + r:hi - i + r]
        out[i] = (w[:, None] * flat[lo:hi]).sum(0) / w.sum()
    return out.reshape(values.shape)
