"""Head pose from 68 landmarks: PnP against a mean 3D face, returned as an EG3D camera.

The mean face (:func:`template`: 68 points in the model's world units, +x to the image's right, +y up,
+z out of the face; symmetric by construction) was fitted by ``benchmarks/fit_pnp_template.py``:
procedural heads (`pv3d data synth`) rendered from 144 known cameras, their dlib landmarks in the
aligned crop, and one symmetric face that, seen by each render's true camera rotation, projects onto
them best. Each landmark's weight is the inverse of how far its detections stray from that rigid mean
face (the jaw contour slides with pose, so it counts less). A hand-made face from average adult
proportions, used before, put the camera of those heads about 10° too high (median error 10.8° vs
3.8° now, `benchmarks/bench_portrait.py pnp --heads 40`).

:func:`solve_camera` fits rotation and translation (Levenberg-Marquardt, rotations as scipy
:class:`~scipy.spatial.transform.Rotation` vectors) so that the template projects onto the crop's
landmarks with the model's intrinsics, and returns the orbit camera with that viewing direction
(radius 2.7, looking at the pivot), the parameterisation the model was trained with.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from ..render import cameras
from .landmarks import MIRROR

_POINTS = {  # landmark: ((x, y, z) in world units, weight); the image-left half and the midline
    0: ((-0.1904, 0.0398, 0.1151), 0.31),
    1: ((-0.1875, -0.0086, 0.1214), 0.34),
    2: ((-0.1809, -0.0586, 0.1248), 0.34),
    3: ((-0.1687, -0.1072, 0.1270), 0.34),
    4: ((-0.1470, -0.1508, 0.1380), 0.36),
    5: ((-0.1169, -0.1894, 0.1576), 0.41),
    6: ((-0.0807, -0.2214, 0.1821), 0.53),
    7: ((-0.0438, -0.2471, 0.2060), 0.63),
    8: ((0.0000, -0.2554, 0.2160), 0.63),
    17: ((-0.1413, 0.0590, 0.2079), 0.59),
    18: ((-0.1198, 0.0746, 0.2288), 0.70),
    19: ((-0.0913, 0.0785, 0.2453), 0.75),
    20: ((-0.0634, 0.0725, 0.2598), 0.64),
    21: ((-0.0365, 0.0607, 0.2698), 0.56),
    27: ((0.0000, 0.0209, 0.2749), 0.87),
    28: ((0.0000, -0.0128, 0.2847), 0.77),
    29: ((0.0000, -0.0459, 0.2965), 0.60),
    30: ((0.0000, -0.0790, 0.3090), 0.47),
    31: ((-0.0301, -0.0929, 0.2766), 0.84),
    32: ((-0.0161, -0.1003, 0.2823), 0.75),
    33: ((0.0000, -0.1061, 0.2848), 0.69),
    36: ((-0.1055, 0.0229, 0.2253), 0.82),
    37: ((-0.0876, 0.0348, 0.2379), 0.84),
    38: ((-0.0632, 0.0340, 0.2422), 0.89),
    39: ((-0.0458, 0.0163, 0.2412), 1.00),
    40: ((-0.0656, 0.0075, 0.2406), 0.92),
    41: ((-0.0900, 0.0085, 0.2363), 0.88),
    48: ((-0.0509, -0.1433, 0.2426), 0.77),
    49: ((-0.0335, -0.1340, 0.2652), 0.84),
    50: ((-0.0146, -0.1301, 0.2780), 0.86),
    51: ((0.0000, -0.1340, 0.2784), 0.91),
    55: ((0.0341, -0.1653, 0.2566), 0.82),
    56: ((0.0162, -0.1753, 0.2674), 0.75),
    57: ((0.0000, -0.1772, 0.2690), 0.74),
    60: ((-0.0418, -0.1444, 0.2467), 0.80),
    61: ((-0.0147, -0.1420, 0.2750), 0.96),
    62: ((0.0000, -0.1434, 0.2765), 1.00),
    65: ((0.0151, -0.1540, 0.2703), 0.82),
    66: ((0.0000, -0.1566, 0.2705), 0.84),
}


def _table() -> tuple[np.ndarray, np.ndarray]:
    points, weights = np.full((68, 3), np.nan), np.full(68, np.nan)
    for i, (p, w) in _POINTS.items():
        j = MIRROR[i]
        points[i], points[j] = p, (-p[0], p[1], p[2])
        weights[i] = weights[j] = w
    assert not np.isnan(points).any() and not np.isnan(weights).any()
    return points, weights


_TEMPLATE, WEIGHTS = _table()
WEIGHTS.setflags(write=False)


def template() -> np.ndarray:
    """The 68-point mean face (68, 3) in world units (a fresh copy)."""
    return _TEMPLATE.copy()


def project(points: np.ndarray, cam2world: np.ndarray, focal: float = cameras.DEFAULT_FOCAL) -> np.ndarray:
    """World points → normalised image coordinates (u, v in [0, 1], v down) of an OpenCV camera."""
    w2c = np.linalg.inv(cam2world)
    p = points @ w2c[:3, :3].T + w2c[:3, 3]
    return p[:, :2] / p[:, 2:3] * focal + 0.5


def solve_pnp(lm_norm: np.ndarray, points: np.ndarray, focal: float, init_c2w: np.ndarray,
              weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """(cam2world 4x4, weighted rms in normalised units) fitting ``points`` to ``lm_norm``."""
    from scipy.optimize import least_squares

    w = WEIGHTS if weights is None else weights
    w2c0 = np.linalg.inv(init_c2w)
    x0 = np.r_[Rotation.from_matrix(w2c0[:3, :3]).as_rotvec(), w2c0[:3, 3]]

    def resid(p):
        q = points @ Rotation.from_rotvec(p[:3]).as_matrix().T + p[3:]
        uv = q[:, :2] / q[:, 2:3] * focal + 0.5
        return ((uv - lm_norm) * w[:, None]).ravel()

    sol = least_squares(resid, x0, method="lm", xtol=1e-12, ftol=1e-12)
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = Rotation.from_rotvec(sol.x[:3]).as_matrix(), sol.x[3:]
    rms = float(np.sqrt(np.mean(resid(sol.x) ** 2) / np.mean(w ** 2)))
    return np.linalg.inv(w2c), rms


def solve_camera(lm_norm: np.ndarray, focal: float = cameras.DEFAULT_FOCAL, radius: float = cameras.DEFAULT_RADIUS,
                 pivot=cameras.DEFAULT_PIVOT) -> tuple[np.ndarray, dict]:
    """(EG3D 25-vector, info) from 68 landmarks in normalised crop coordinates (u, v in [0, 1]).

    info: yaw, pitch, roll (radians), rms (reprojection error, fraction of the crop side) and the
    full PnP cam2world before it is put on the orbit.
    """
    lm_norm = np.asarray(lm_norm, dtype=np.float64)
    if lm_norm.shape != (68, 2) or not np.isfinite(lm_norm).all():
        raise ValueError(f"need 68 finite landmarks, got an array of shape {lm_norm.shape}")
    X = template()
    c2w, rms = solve_pnp(lm_norm, X, focal, cameras.orbit_cam2world(0.0, 0.0, radius, pivot))
    forward = c2w[:3, 2] / np.linalg.norm(c2w[:3, 2])
    origin = np.asarray(pivot) - radius * forward
    yaw = math.atan2(origin[0] - pivot[0], origin[2] - pivot[2])
    pitch = -math.asin(float(np.clip((origin[1] - pivot[1]) / radius, -1, 1)))
    pitch = float(np.clip(pitch, -1.4, 1.4))
    orbit = cameras.orbit_cam2world(yaw, pitch, radius, pivot)
    # roll: the PnP camera's turn about the viewing direction (which it shares with the orbit camera)
    roll = float(Rotation.from_matrix(orbit[:3, :3].T @ c2w[:3, :3]).as_rotvec()[2])
    info = {"yaw": float(yaw), "pitch": float(pitch), "roll": float(roll), "rms": rms,
            "pnp_cam2world": c2w.tolist()}
    return cameras.pack(orbit, focal), info


def angle_between(c1, c2) -> float:
    """Degrees between two cameras' viewing directions."""
    f1 = np.asarray(c1, dtype=np.float64)[:16].reshape(4, 4)[:3, 2]
    f2 = np.asarray(c2, dtype=np.float64)[:16].reshape(4, 4)[:3, 2]
    cos = f1 @ f2 / np.linalg.norm(f1) / np.linalg.norm(f2)
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))))
