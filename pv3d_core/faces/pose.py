"""Head pose from 68 landmarks: PnP against a mean 3D face, returned as an EG3D camera.

The mean face is written here by hand from average adult facial proportions (millimetres, origin
between the eyes, +x to the image's right, +y up, +z out of the face; symmetric by construction).
:func:`template` places it in the model's world: its frontal projection through the released
camera (radius 2.7 around the pivot (0, 0, 0.2), focal 4.2647) is framed by the alignment rule of
:mod:`.align` exactly as an aligned crop is, i.e. the crop centre lands at the image centre and the
crop side spans the image. So a frontal face in an aligned crop gives the frontal camera.

:func:`solve_camera` fits rotation and translation (Levenberg-Marquardt) so that the template
projects onto the crop's landmarks with the model's intrinsics, and returns the orbit camera with
that viewing direction (radius 2.7, looking at the pivot), the parameterisation the model was
trained with. The jaw contour and inner lips, which slide with pose and expression, count less.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..render import cameras
from .align import crop_frame
from .landmarks import MIRROR

# half of the face (x <= 0: the image-left side, the subject's right) and the midline; mm
_HALF = {
    # jaw contour 0..8 (8 = chin)
    0: (-72, -5, -95), 1: (-71, -22, -92), 2: (-69, -39, -88), 3: (-65, -55, -80), 4: (-59, -70, -68),
    5: (-50, -83, -53), 6: (-38, -94, -38), 7: (-21, -102, -25), 8: (0, -105, -20),
    # brow 17..21 (outer → inner)
    17: (-58, 22, -38), 18: (-47, 30, -26), 19: (-35, 33, -18), 20: (-23, 32, -13), 21: (-11, 28, -11),
    # nose bridge 27..30 (30 = tip), lower nose 31..33
    27: (0, 10, -12), 28: (0, -5, -7), 29: (0, -20, -3), 30: (0, -35, 0),
    31: (-14, -45, -15), 32: (-7, -48, -10), 33: (0, -50, -8),
    # eye 36..41: outer corner, upper outer, upper inner, inner corner, lower inner, lower outer
    36: (-45, 0, -32), 37: (-37, 5, -25), 38: (-26, 5, -23), 39: (-17, 0, -24), 40: (-26, -4, -24),
    41: (-37, -4, -26),
    # outer lips: 48 corner, 49-50 upper, 51 top centre, 57 bottom centre, 58-59 lower
    48: (-25, -72, -22), 49: (-16, -66, -13), 50: (-7, -63, -9), 51: (0, -64, -8),
    57: (0, -84, -11), 58: (-8, -82, -12), 59: (-17, -78, -16),
    # inner lips: 60 corner, 61 upper, 62 upper centre, 66 lower centre, 67 lower
    60: (-20, -72, -19), 61: (-8, -70, -12), 62: (0, -70, -11), 66: (0, -73, -11), 67: (-8, -73, -12),
}

#: per-landmark weight in the fit
WEIGHTS = np.ones(68)
WEIGHTS[0:17] = 0.3
WEIGHTS[60:68] = 0.5
WEIGHTS[48:60] = 0.7


def template_mm() -> np.ndarray:
    """The 68-point mean face in millimetres (symmetric)."""
    out = np.full((68, 3), np.nan)
    for i, p in _HALF.items():
        out[i] = p
        j = MIRROR[i]
        out[j] = (-p[0], p[1], p[2])
    assert not np.isnan(out).any()
    return out


def project(points: np.ndarray, cam2world: np.ndarray, focal: float = cameras.DEFAULT_FOCAL) -> np.ndarray:
    """World points → normalised image coordinates (u, v in [0, 1], v down) of an OpenCV camera."""
    w2c = np.linalg.inv(cam2world)
    p = points @ w2c[:3, :3].T + w2c[:3, 3]
    return p[:, :2] / p[:, 2:3] * focal + 0.5


@lru_cache(maxsize=4)
def _template(focal: float, radius: float, pivot: tuple, nose_z: float) -> np.ndarray:
    mm = template_mm()
    c2w = cameras.orbit_cam2world(0.0, 0.0, radius, pivot)
    s, dy = 0.0023, 0.0
    for _ in range(50):
        world = np.c_[mm[:, 0] * s, mm[:, 1] * s + dy, mm[:, 2] * s + nose_z]
        fr = crop_frame(project(world, c2w, focal))
        half = np.linalg.norm(fr.x_axis)
        # the crop's centre should be the image centre and its half side 0.5
        depth = radius + pivot[2] - nose_z
        dy += (fr.center[1] - 0.5) * depth / focal       # image v grows downwards = world -y
        s *= 0.5 / half
        if abs(half - 0.5) < 1e-10 and abs(fr.center[1] - 0.5) < 1e-10:
            break
    return np.c_[mm[:, 0] * s, mm[:, 1] * s + dy, mm[:, 2] * s + nose_z]


def template(focal: float = cameras.DEFAULT_FOCAL, radius: float = cameras.DEFAULT_RADIUS,
             pivot=cameras.DEFAULT_PIVOT, nose_z: float = 0.3) -> np.ndarray:
    """The mean face in world units, placed to match the crop framing (see the module doc)."""
    return _template(float(focal), float(radius), tuple(float(v) for v in pivot), float(nose_z)).copy()


def _rodrigues(r: np.ndarray) -> np.ndarray:
    th = float(np.linalg.norm(r))
    if th < 1e-12:
        return np.eye(3)
    k = r / th
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(th) * K + (1 - math.cos(th)) * K @ K


def _rvec(R: np.ndarray) -> np.ndarray:
    th = math.acos(float(np.clip((np.trace(R) - 1) / 2, -1, 1)))
    if th < 1e-9:
        return np.zeros(3)
    v = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    return th / (2 * math.sin(th)) * v


def solve_pnp(lm_norm: np.ndarray, points: np.ndarray, focal: float, init_c2w: np.ndarray,
              weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """(cam2world 4x4, weighted rms in normalised units) fitting ``points`` to ``lm_norm``."""
    from scipy.optimize import least_squares

    w = WEIGHTS if weights is None else weights
    w2c0 = np.linalg.inv(init_c2w)
    x0 = np.r_[_rvec(w2c0[:3, :3]), w2c0[:3, 3]]

    def resid(p):
        q = points @ _rodrigues(p[:3]).T + p[3:]
        uv = q[:, :2] / q[:, 2:3] * focal + 0.5
        return ((uv - lm_norm) * w[:, None]).ravel()

    sol = least_squares(resid, x0, method="lm", xtol=1e-12, ftol=1e-12)
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = _rodrigues(sol.x[:3]), sol.x[3:]
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
    X = template(focal, radius, pivot)
    c2w, rms = solve_pnp(lm_norm, X, focal, cameras.orbit_cam2world(0.0, 0.0, radius, pivot))
    forward = c2w[:3, 2] / np.linalg.norm(c2w[:3, 2])
    origin = np.asarray(pivot) - radius * forward
    yaw = math.atan2(origin[0] - pivot[0], origin[2] - pivot[2])
    pitch = -math.asin(float(np.clip((origin[1] - pivot[1]) / radius, -1, 1)))
    pitch = float(np.clip(pitch, -1.4, 1.4))
    orbit = cameras.orbit_cam2world(yaw, pitch, radius, pivot)
    # roll: rotation of the PnP camera's x axis about the viewing direction, relative to the orbit camera's
    roll = math.atan2(float(np.dot(np.cross(orbit[:3, 0], c2w[:3, 0]), forward)), float(np.dot(orbit[:3, 0], c2w[:3, 0])))
    info = {"yaw": float(yaw), "pitch": float(pitch), "roll": float(roll), "rms": rms,
            "pnp_cam2world": c2w.tolist()}
    return cameras.pack(orbit, focal), info


def angle_between(c1, c2) -> float:
    """Degrees between two cameras' viewing directions."""
    f1 = np.asarray(c1, dtype=np.float64)[:16].reshape(4, 4)[:3, 2]
    f2 = np.asarray(c2, dtype=np.float64)[:16].reshape(4, 4)[:3, 2]
    cos = f1 @ f2 / np.linalg.norm(f1) / np.linalg.norm(f2)
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))))
