"""Head pose from 68 landmarks: PnP against a mean 3D face with a few shape modes, returned as an EG3D camera.

The face model (:data:`MODEL`, read from ``pnp_face.npz`` beside this file: plain arrays, no pickles)
is a symmetric mean face (:func:`template`: 68 points in the model's world units, +x to the image's
right, +y up, +z out of the face), K = 12 shape modes (each one standard deviation of the training
heads), a weight per landmark and the prior's strength. ``benchmarks/fit_pnp_template.py`` learnt it
from 80 procedural heads (`pv3d data synth`) rendered from 5 known cameras each, every render also
mirrored (the renderer's key light is on the head's left and dlib's landmarks lean with the light; with
the mirrors the data are symmetric): each head's own 68-point face from its views, their mean, and
the principal modes of their differences. The jaw contour, which slides with pose, weighs less.

:func:`solve_camera` fits rotation, translation and the K mode coefficients together
(Levenberg-Marquardt, rotations as scipy :class:`~scipy.spatial.transform.Rotation` vectors), the
coefficients held by a Gaussian prior, so that the face projects onto the crop's landmarks with the
model's intrinsics, and returns the orbit camera with that viewing direction (radius 2.7, looking at
the pivot), the parameterisation the model was trained with. From one view, a head's proportions
(nose and jaw length above all) and its pitch move the landmarks alike; the modes let a head's shape
explain part of what one rigid face could only read as pitch, and the prior (chosen on validation
heads) decides how much.

Measured (`benchmarks/bench_portrait.py pnp --heads 40 --seed S`, heads the fit never saw; camera-
direction error, median / max): seed 7 2.67° / 6.90° with the landmarks averaged with the mirrored
image's (:func:`~pv3d_core.faces.detect.symmetric_landmarks`, what :func:`~pv3d_core.faces.align_face`
passes), 3.08° / 7.61° with dlib's reading alone, 3.75° / 8.15° with one rigid mean face; seed 11
2.40° / 7.91°, 2.69° / 9.43°, 3.06° / 11.26°. The lighting's yaw bias went from -2.0° / -1.2° to
-1.2° / -0.6°, the pitch error's spread from 3.6° / 3.4° to 3.2° / 3.0°: from one view much of a
head's shape still reads as pitch. Solved with each head's own face instead (``--oracle-views 6``: fitted
to 6 other views with the true cameras), the same landmarks give 2.17° / 5.44° and 1.83° / 4.29°: that is
the floor of the landmarks themselves, and the gap above it is the shape one view cannot tell. Tried and
not kept: landmarks averaged over jittered face boxes (3-18 readings, seed 7: medians 2.67-3.65°, max
6.39-8.76°, none better on both) and other K (0, 4, 8) or prior strengths (x0.5, x2): none brought both
seeds' max under 6°. Nor did one face shared by a clip's frames (the K coefficients fitted jointly with
a pose per frame): it helps where the views differ widely (10 heads x 6 random views: 3.74° / 8.48° ->
2.74° / 7.39°), but on talking-head clips (synth.camera_track and expression_track, 6 clips x 25
frames) it went 2.94° / 8.82° -> 3.25° / 9.02°: a clip's small head motion does not tell its shape, so
:func:`~pv3d_core.faces.align_frames` keeps a solve per frame. A solve takes about 14 ms (9 ms rigid) on one
core. A hand-made face from average adult proportions, used before both, erred by 10.8° (median) on these heads.
"""
from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from ..render import cameras

_MODEL_FILE = Path(__file__).with_name("pnp_face.npz")
_MAX_MODES = 32
_MAX_BYTES = 1 << 20          # the shipped file is a few tens of kB


@dataclass(frozen=True)
class FaceModel:
    """A mean face and its shape modes (+x to the image's right, +y up, +z out of the face, world units).

    mean (68, 3), symmetric; modes (K, 68, 3), each one standard deviation of the training heads;
    weights (68,), each landmark's weight in the fit; prior: how much a coefficient of one standard
    deviation costs, in the units of a weighted landmark residual (fraction of the crop side).
    """
    mean: np.ndarray
    modes: np.ndarray
    weights: np.ndarray
    prior: float


def load_model(path=_MODEL_FILE) -> FaceModel:
    """Read a :class:`FaceModel` .npz (plain arrays only, no pickles; sizes checked before reading)."""
    path = Path(path)
    if path.stat().st_size > _MAX_BYTES:
        raise ValueError(f"{path}: larger than a face model can be")
    with zipfile.ZipFile(path) as zf:
        if sum(i.file_size for i in zf.infolist()) > _MAX_BYTES:
            raise ValueError(f"{path}: larger than a face model can be")
    with np.load(path, allow_pickle=False) as z:
        if set(z.files) != {"mean", "modes", "weights", "prior"}:
            raise ValueError(f"{path}: unexpected arrays {z.files}")
        mean, modes = z["mean"].astype(np.float64), z["modes"].astype(np.float64)
        weights, prior = z["weights"].astype(np.float64), z["prior"].astype(np.float64)
    if mean.shape != (68, 3) or weights.shape != (68,) or prior.shape != () or modes.ndim != 3 \
            or modes.shape[1:] != (68, 3) or len(modes) > _MAX_MODES:
        raise ValueError(f"{path}: wrong shapes {mean.shape} {modes.shape} {weights.shape} {prior.shape}")
    if not all(np.isfinite(a).all() for a in (mean, modes, weights, prior)) or (weights <= 0).any() or prior <= 0:
        raise ValueError(f"{path}: non-finite or non-positive values")
    for a in (mean, modes, weights):
        a.setflags(write=False)
    return FaceModel(mean, modes, weights, float(prior))


def save_model(path, model: FaceModel) -> None:
    """Write a :class:`FaceModel` .npz atomically (a temporary file renamed into place)."""
    from ..files import atomic_write

    def write(tmp):
        with open(tmp, "wb") as f:      # a file object: np.savez appends no second suffix
            np.savez(f, mean=np.asarray(model.mean, np.float64), modes=np.asarray(model.modes, np.float64),
                     weights=np.asarray(model.weights, np.float64), prior=np.float64(model.prior))

    atomic_write(path, write)


MODEL = load_model()
WEIGHTS = MODEL.weights


def template() -> np.ndarray:
    """The 68-point mean face (68, 3) in world units (a fresh copy)."""
    return MODEL.mean.copy()


def project(points: np.ndarray, cam2world: np.ndarray, focal: float = cameras.DEFAULT_FOCAL) -> np.ndarray:
    """World points → normalised image coordinates (u, v in [0, 1], v down) of an OpenCV camera."""
    w2c = np.linalg.inv(cam2world)
    p = points @ w2c[:3, :3].T + w2c[:3, 3]
    return p[:, :2] / p[:, 2:3] * focal + 0.5


def solve_pnp(lm_norm: np.ndarray, points: np.ndarray, focal: float, init_c2w: np.ndarray,
              weights: np.ndarray | None = None, modes: np.ndarray | None = None,
              sigma: np.ndarray | None = None, coef_out: list | None = None) -> tuple[np.ndarray, float]:
    """(cam2world 4x4, weighted rms in normalised units) fitting ``points`` to ``lm_norm``.

    With ``modes`` (K, 68, 3) the face is ``points + sum_k c_k modes[k]`` and the K coefficients are
    fitted with the pose, each held by a Gaussian prior of standard deviation ``sigma[k]`` (in the
    landmark residual's units); ``coef_out``, when given, receives them.
    """
    from scipy.optimize import least_squares

    w = WEIGHTS if weights is None else weights
    k = 0 if modes is None else len(modes)
    flat = None if modes is None else np.asarray(modes, dtype=np.float64).reshape(k, -1)
    inv_sigma = None if modes is None else 1.0 / np.asarray(sigma, dtype=np.float64)
    w2c0 = np.linalg.inv(init_c2w)
    x0 = np.r_[Rotation.from_matrix(w2c0[:3, :3]).as_rotvec(), w2c0[:3, 3], np.zeros(k)]

    def face(p):
        return points if k == 0 else points + (p[6:] @ flat).reshape(-1, 3)

    def seen(p):
        R = Rotation.from_rotvec(p[:3]).as_matrix()
        return face(p) @ R.T + p[3:6], R

    def fit_resid(p):
        q, _ = seen(p)
        return ((q[:, :2] / q[:, 2:3] * focal + 0.5 - lm_norm) * w[:, None]).ravel()

    def resid(p):
        return fit_resid(p) if k == 0 else np.r_[fit_resid(p), p[6:] * inv_sigma]

    def jac(p):
        # translation and shape columns in closed form (the projection's derivative), rotation by
        # forward differences of the rotation vector
        q, R = seen(p)
        iz = 1.0 / q[:, 2]
        d = np.zeros((len(q), 2, 3))                            # d(uv)/dq per point, weighted
        d[:, 0, 0] = d[:, 1, 1] = focal * iz
        d[:, :, 2] = -focal * q[:, :2] * (iz ** 2)[:, None]
        d *= w[:, None, None]
        J = np.zeros((2 * len(q) + k, 6 + k))
        J[:2 * len(q), 3:6] = d.reshape(-1, 3)
        if k:
            rm = np.asarray(modes, dtype=np.float64) @ R.T      # (K, 68, 3): each mode as the camera sees it
            J[:2 * len(q), 6:] = np.einsum("mij,kmj->mik", d, rm).reshape(-1, k)
            J[2 * len(q):, 6:] = np.diag(inv_sigma)
        r0 = fit_resid(p)
        for i in range(3):
            dp = p.copy()
            dp[i] += 1e-7
            J[:2 * len(q), i] = (fit_resid(dp) - r0) / 1e-7
        return J

    sol = least_squares(resid, x0, jac=jac, method="lm", xtol=1e-10, ftol=1e-10)
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = Rotation.from_rotvec(sol.x[:3]).as_matrix(), sol.x[3:6]
    rms = float(np.sqrt(np.mean(fit_resid(sol.x) ** 2) / np.mean(w ** 2)))
    if coef_out is not None:
        coef_out.extend(sol.x[6:].tolist())
    return np.linalg.inv(w2c), rms


def solve_camera(lm_norm: np.ndarray, focal: float = cameras.DEFAULT_FOCAL, radius: float = cameras.DEFAULT_RADIUS,
                 pivot=cameras.DEFAULT_PIVOT, model: FaceModel | None = None) -> tuple[np.ndarray, dict]:
    """(EG3D 25-vector, info) from 68 landmarks in normalised crop coordinates (u, v in [0, 1]).

    info: yaw, pitch, roll (radians), rms (reprojection error, fraction of the crop side) and the
    full PnP cam2world before it is put on the orbit.
    """
    lm_norm = np.asarray(lm_norm, dtype=np.float64)
    if lm_norm.shape != (68, 2) or not np.isfinite(lm_norm).all():
        raise ValueError(f"need 68 finite landmarks, got an array of shape {lm_norm.shape}")
    m = MODEL if model is None else model
    coef: list = []
    c2w, rms = solve_pnp(lm_norm, m.mean, focal, cameras.orbit_cam2world(0.0, 0.0, radius, pivot), m.weights,
                         m.modes if len(m.modes) else None, np.full(len(m.modes), 1.0 / m.prior), coef)
    forward = c2w[:3, 2] / np.linalg.norm(c2w[:3, 2])
    origin = np.asarray(pivot) - radius * forward
    yaw = math.atan2(origin[0] - pivot[0], origin[2] - pivot[2])
    pitch = -math.asin(float(np.clip((origin[1] - pivot[1]) / radius, -1, 1)))
    pitch = float(np.clip(pitch, -1.4, 1.4))
    orbit = cameras.orbit_cam2world(yaw, pitch, radius, pivot)
    # roll: the PnP camera's turn about the viewing direction (which it shares with the orbit camera)
    roll = float(Rotation.from_matrix(orbit[:3, :3].T @ c2w[:3, :3]).as_rotvec()[2])
    info = {"yaw": float(yaw), "pitch": float(pitch), "roll": float(roll), "rms": rms, "shape": coef,
            "pnp_cam2world": c2w.tolist()}
    return cameras.pack(orbit, focal), info


def angle_between(c1, c2) -> float:
    """Degrees between two cameras' viewing directions."""
    f1 = np.asarray(c1, dtype=np.float64)[:16].reshape(4, 4)[:3, 2]
    f2 = np.asarray(c2, dtype=np.float64)[:16].reshape(4, 4)[:3, 2]
    cos = f1 @ f2 / np.linalg.norm(f1) / np.linalg.norm(f2)
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))))
