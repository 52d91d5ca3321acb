"""Head pose from 68 landmarks: PnP against a mean 3D face with shape modes, returned as an EG3D camera.

The face model (:data:`MODEL`, read from ``pnp_face.npz`` beside this file: plain arrays, no pickles)
is a symmetric mean face (:func:`template`: 68 points in the model's world units, +x to the image's
right, +y up, +z out of the face), K shape modes (each one standard deviation of the training heads),
the covariance of a landmark reading and the prior's strength. ``benchmarks/fit_pnp_template.py``
learnt it from procedural heads (`pv3d data synth`), each rendered from 5 known cameras, with the
landmarks :func:`~pv3d_core.faces.align_face` reads (averaged with the mirrored image's), every
reading also mirrored (the renderer's key light is on the head's left; with the mirrors the data are
symmetric): each head's own 68-point face from its views, their mean, the principal modes of their
differences, and how the readings scatter around their own heads' faces.

That scatter is far from independent per landmark: the jaw contour slides along the face's outline as
a whole, the eyebrows and the lips move together. :func:`solve_camera` weighs the residuals by the
inverse square root of the full covariance, so a fit does not read a common slide as a turn of the
head: it fits rotation, translation and the K mode coefficients together (Levenberg-Marquardt,
rotations as scipy :class:`~scipy.spatial.transform.Rotation` vectors, the coefficients held by a
Gaussian prior), the most likely pose under that noise, and returns the orbit camera with that
viewing direction (radius 2.7, looking at the pivot), the parameterisation the model was trained with.

Measured (`benchmarks/bench_portrait.py pnp --heads 40 --seed S`, heads the fit never saw; camera-
direction error, median / max): seed 7 1.92° / 5.74°, seed 11 2.32° / 5.98°; mean yaw error -0.13° /
+0.16°, mean pitch error -0.06° / +0.17°. With landmarks weighed one by one (12 modes, the model before)
they were 2.67° / 6.90° and 2.40° / 7.91°, with a yaw bias of -1.2° / -0.6° from the renderer's light.
Solved with each head's own face (``--oracle-views 6``: fitted to 6 other views with the true cameras),
seed 7 gives 1.34° / 3.43°: the gap to that is the head's shape, which one view's landmarks do not
carry. On 160 validation heads (another draw of the same kind) the new model gives 2.20° / 6.60°, so the
6° is not a bound; on talking-head frames (mouth, smile, blinks and brows moving, yaw up to ±35°, pitch
±20°: 12 clips x 25 frames, solved one by one) 2.06° / 8.44° against 3.62° / 11.00° before. A solve
takes about 5 ms on one core (2.7 ms before, measured side by side).
Real photos have no ground truth here. The pitch of two frontal studio portraits (scikit-image's
astronaut, matplotlib's Grace Hopper) moved from 14.8° / 10.4° (the camera below the face) to -0.7° /
-4.8°, imgui-bundle's tennis photo from 0.0° to -5.7°; yaw moved by 3° or less. Real faces lie outside
what the procedural heads taught the model: the whitened residual per coordinate is about 2 for the two
portraits and 10 for the tennis photo, against 0.71 (median) and 1.57 (max) on validation heads, and
their shape coefficients about 1.3 standard deviations against at most 1.0; so on real photos neither
model's pitch can be trusted to 10°, and a face model learnt from real faces would be the next step.
"""
from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from ..render import cameras

_MODEL_FILE = Path(__file__).with_name("pnp_face.npz")
_MAX_MODES = 32
_MAX_BYTES = 1 << 20          # the shipped file is about 190 kB


@dataclass(frozen=True)
class FaceModel:
    """A mean face and its shape modes (+x to the image's right, +y up, +z out of the face, world units),
    and how a landmark reading errs.

    mean (68, 3), symmetric; modes (K, 68, 3), each one standard deviation of the training heads;
    noise (136, 136): the covariance of a reading of the 68 landmarks (u0, v0, u1, v1, ... in fractions
    of the crop side) around its head's own face seen by the true camera; prior: how much a coefficient
    of one standard deviation costs, in units of a whitened landmark residual (1 would be exact if
    ``noise`` were the whole of a reading's error).
    """
    mean: np.ndarray
    modes: np.ndarray
    noise: np.ndarray
    prior: float

    @cached_property
    def whiten(self) -> np.ndarray:
        """noise^(-1/2) (136, 136), symmetric: a residual times it has unit covariance."""
        val, vec = np.linalg.eigh(self.noise)
        return (vec / np.sqrt(val)) @ vec.T

    @cached_property
    def landmark_weights(self) -> np.ndarray:
        """(68,) each landmark's weight when landmarks are weighted one by one: the inverse of its
        spread (u and v together), 1 for the steadiest."""
        spread = np.sqrt(np.diag(self.noise).reshape(68, 2).sum(1))
        return spread.min() / spread


def load_model(path=_MODEL_FILE) -> FaceModel:
    """Read a :class:`FaceModel` .npz (plain arrays only, no pickles; sizes checked before reading)."""
    path = Path(path)
    if path.stat().st_size > _MAX_BYTES:
        raise ValueError(f"{path}: larger than a face model can be")
    with zipfile.ZipFile(path) as zf:
        if sum(i.file_size for i in zf.infolist()) > _MAX_BYTES:
            raise ValueError(f"{path}: larger than a face model can be")
    with np.load(path, allow_pickle=False) as z:
        if set(z.files) != {"mean", "modes", "noise", "prior"}:
            raise ValueError(f"{path}: unexpected arrays {z.files}")
        mean, modes = z["mean"].astype(np.float64), z["modes"].astype(np.float64)
        noise, prior = z["noise"].astype(np.float64), z["prior"].astype(np.float64)
    if mean.shape != (68, 3) or noise.shape != (136, 136) or prior.shape != () or modes.ndim != 3 \
            or modes.shape[1:] != (68, 3) or len(modes) > _MAX_MODES:
        raise ValueError(f"{path}: wrong shapes {mean.shape} {modes.shape} {noise.shape} {prior.shape}")
    if not all(np.isfinite(a).all() for a in (mean, modes, noise, prior)) or prior <= 0:
        raise ValueError(f"{path}: non-finite values or a non-positive prior")
    if not np.allclose(noise, noise.T, rtol=0, atol=1e-12 * np.abs(noise).max()) \
            or np.linalg.eigvalsh(noise).min() <= 0:
        raise ValueError(f"{path}: the landmark noise is not a covariance (symmetric, positive definite)")
    for a in (mean, modes, noise):
        a.setflags(write=False)
    return FaceModel(mean, modes, noise, float(prior))


def save_model(path, model: FaceModel) -> None:
    """Write a :class:`FaceModel` .npz atomically (a temporary file renamed into place)."""
    from ..files import atomic_write

    def write(tmp):
        with open(tmp, "wb") as f:      # a file object: np.savez appends no second suffix
            np.savez(f, mean=np.asarray(model.mean, np.float64), modes=np.asarray(model.modes, np.float64),
                     noise=np.asarray(model.noise, np.float64), prior=np.float64(model.prior))

    atomic_write(path, write)


MODEL = load_model()


def template() -> np.ndarray:
    """The 68-point mean face (68, 3) in world units (a fresh copy)."""
    return MODEL.mean.copy()


def project(points: np.ndarray, cam2world: np.ndarray, focal: float = cameras.DEFAULT_FOCAL) -> np.ndarray:
    """World points → normalised image coordinates (u, v in [0, 1], v down) of an OpenCV camera."""
    w2c = np.linalg.inv(cam2world)
    p = points @ w2c[:3, :3].T + w2c[:3, 3]
    return p[:, :2] / p[:, 2:3] * focal + 0.5


def solve_pnp(lm_norm: np.ndarray, points: np.ndarray, focal: float, init_c2w: np.ndarray,
              whiten: np.ndarray | None = None, modes: np.ndarray | None = None,
              sigma: np.ndarray | None = None, coef_out: list | None = None) -> tuple[np.ndarray, float]:
    """(cam2world 4x4, rms of the landmark residuals in normalised units) fitting ``points`` to ``lm_norm``.

    The residuals (u0, v0, u1, v1, ...) are multiplied by ``whiten`` (136, 136; default the shipped
    model's :attr:`FaceModel.whiten`), so the fit is the most likely pose under that landmark noise.
    With ``modes`` (K, 68, 3) the face is ``points + sum_k c_k modes[k]`` and the K coefficients are
    fitted with the pose, each held by a Gaussian prior of standard deviation ``sigma[k]`` (in the
    whitened residual's units); ``coef_out``, when given, receives them.
    """
    from scipy.optimize import least_squares

    W = MODEL.whiten if whiten is None else np.asarray(whiten, dtype=np.float64)
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

    def landmark_resid(p):
        q, _ = seen(p)
        return (q[:, :2] / q[:, 2:3] * focal + 0.5 - lm_norm).ravel()

    def resid(p):
        r = W @ landmark_resid(p)
        return r if k == 0 else np.r_[r, p[6:] * inv_sigma]

    def jac(p):
        # translation and shape columns in closed form (the projection's derivative), rotation by
        # forward differences of the rotation vector; then whitened like the residuals
        q, R = seen(p)
        iz = 1.0 / q[:, 2]
        d = np.zeros((len(q), 2, 3))                            # d(uv)/dq per point
        d[:, 0, 0] = d[:, 1, 1] = focal * iz
        d[:, :, 2] = -focal * q[:, :2] * (iz ** 2)[:, None]
        J = np.zeros((2 * len(q), 6 + k))
        J[:, 3:6] = d.reshape(-1, 3)
        if k:
            rm = np.asarray(modes, dtype=np.float64) @ R.T      # (K, 68, 3): each mode as the camera sees it
            J[:, 6:] = np.einsum("mij,kmj->mik", d, rm).reshape(-1, k)
        r0 = landmark_resid(p)
        for i in range(3):
            dp = p.copy()
            dp[i] += 1e-7
            J[:, i] = (landmark_resid(dp) - r0) / 1e-7
        J = W @ J
        return J if k == 0 else np.r_[J, np.c_[np.zeros((k, 6)), np.diag(inv_sigma)]]

    sol = least_squares(resid, x0, jac=jac, method="lm", xtol=1e-10, ftol=1e-10)
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = Rotation.from_rotvec(sol.x[:3]).as_matrix(), sol.x[3:6]
    rms = float(np.sqrt(np.mean(landmark_resid(sol.x) ** 2)))
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
    c2w, rms = solve_pnp(lm_norm, m.mean, focal, cameras.orbit_cam2world(0.0, 0.0, radius, pivot), m.whiten,
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
