"""Cameras in the EG3D convention.

A camera is a 25-vector: the 4x4 cam2world matrix (row-major, OpenCV camera axes: x right,
y down, z forward; world y up) followed by the 3x3 intrinsics normalised by the image size
(focal 4.2647 and principal point 0.5 for the released models).

The orbit camera sits on a sphere of ``radius`` around ``pivot`` and looks at it: ``yaw`` and
``pitch`` are angles in radians from the frontal view (yaw 0, pitch 0 looks down -z at the face).
Positive yaw moves the camera towards +x, positive pitch moves it down (looking up at the face), as
the sign convention of EG3D's samplers has it.  The parity fixture's cameras are built this way.

EG3D's own ``LookAtPoseSampler`` (a sphere around the world origin, with an arccos mapping of the
vertical angle) is :func:`lookat_sampler`; the official evaluation scripts use it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

#: The released models' camera: focal length in units of the image size and the orbit.
DEFAULT_FOCAL = 4.2647
DEFAULT_RADIUS = 2.7
DEFAULT_PIVOT = (0.0, 0.0, 0.2)


def fov_to_focal(fov_degrees: float) -> float:
    """Normalised focal length of a field of view, as EG3D's ``FOV_to_intrinsics`` defines it.

    EG3D measures the field of view with a factor sqrt(2) (1.414), so 18.837 degrees gives the
    released focal 4.2647.
    """
    if not 0.0 < fov_degrees < 180.0:
        raise ValueError(f"field of view must be in (0, 180) degrees, got {fov_degrees}")
    return 1.0 / (math.tan(math.radians(fov_degrees) / 2.0) * 1.414)


def focal_to_fov(focal: float) -> float:
    """Inverse of :func:`fov_to_focal`, in degrees."""
    if focal <= 0:
        raise ValueError(f"focal length must be positive, got {focal}")
    return math.degrees(2.0 * math.atan(1.0 / (focal * 1.414)))


def intrinsics_matrix(focal: float = DEFAULT_FOCAL, center: float = 0.5) -> np.ndarray:
    return np.array([[focal, 0.0, center], [0.0, focal, center], [0.0, 0.0, 1.0]], dtype=np.float64)


def look_at(origin, target, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """cam2world (4x4) of a camera at ``origin`` looking at ``target`` (OpenCV axes, y down)."""
    origin = np.asarray(origin, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - origin
    norm = np.linalg.norm(forward)
    if norm == 0:
        raise ValueError("camera origin and target coincide")
    forward = forward / norm
    up = np.asarray(up, dtype=np.float64)
    right = -np.cross(up, forward)
    rn = np.linalg.norm(right)
    if rn < 1e-12:
        raise ValueError("camera looks straight along the up axis")
    right = right / rn
    down = np.cross(forward, right)
    down = down / np.linalg.norm(down)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, down, forward, origin
    return m


def orbit_origin(yaw: float, pitch: float, radius: float = DEFAULT_RADIUS,
                 pivot=DEFAULT_PIVOT) -> np.ndarray:
    """Camera position on the orbit sphere around ``pivot``."""
    if not -math.pi / 2 < pitch < math.pi / 2:
        raise ValueError(f"pitch must be within (-pi/2, pi/2), got {pitch}")
    if radius <= 0:
        raise ValueError(f"camera radius must be positive, got {radius}")
    d = np.array([math.cos(pitch) * math.sin(yaw), -math.sin(pitch), math.cos(pitch) * math.cos(yaw)])
    return np.asarray(pivot, dtype=np.float64) + radius * d


def orbit_cam2world(yaw: float, pitch: float, radius: float = DEFAULT_RADIUS,
                    pivot=DEFAULT_PIVOT) -> np.ndarray:
    return look_at(orbit_origin(yaw, pitch, radius, pivot), pivot)


def lookat_sampler(horizontal: float, vertical: float, lookat=DEFAULT_PIVOT,
                   radius: float = DEFAULT_RADIUS) -> np.ndarray:
    """cam2world of EG3D's ``LookAtPoseSampler.sample(horizontal, vertical, lookat, radius)``.

    The camera sits on a sphere around the world origin (not around ``lookat``); ``vertical`` is
    mapped through arccos(1 - 2 v / pi).  Frontal is (pi/2, pi/2).
    """
    v = min(max(vertical, 1e-5), math.pi - 1e-5) / math.pi
    phi = math.acos(1 - 2 * v)
    origin = np.array([
        radius * math.sin(phi) * math.cos(math.pi - horizontal),
        radius * math.cos(phi),
        radius * math.sin(phi) * math.sin(math.pi - horizontal),
    ])
    return look_at(origin, lookat)


def pack(cam2world: np.ndarray, focal: float = DEFAULT_FOCAL) -> np.ndarray:
    """The EG3D 25-vector of a cam2world matrix and focal length."""
    return np.concatenate([np.asarray(cam2world, dtype=np.float64).reshape(16),
                           intrinsics_matrix(focal).reshape(9)]).astype(np.float32)


def unpack(c) -> tuple[np.ndarray, np.ndarray]:
    """(cam2world 4x4, intrinsics 3x3) of a 25-vector."""
    c = np.asarray(c, dtype=np.float64).reshape(-1)
    if c.shape[0] != 25:
        raise ValueError(f"a camera is a 25-vector, got {c.shape[0]} values")
    return c[:16].reshape(4, 4), c[16:].reshape(3, 3)


def mirror(c) -> np.ndarray:
    """The camera of a horizontally flipped image (x -> -x in world and image).

    Used by flip augmentation: if an image was taken by camera ``c``, its mirror image is what
    the camera reflected through the world's x = 0 plane sees.
    """
    c = np.asarray(c, dtype=np.float64)
    m = c[..., :16].reshape(*c.shape[:-1], 4, 4).copy()
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    m = flip @ m @ flip
    out = np.concatenate([m.reshape(*c.shape[:-1], 16), c[..., 16:]], axis=-1)
    return out.astype(np.float32)


def yaw_pitch_of(c, pivot=DEFAULT_PIVOT) -> tuple[float, float, float]:
    """(yaw, pitch, radius) of a camera's position about ``pivot``: the inverse of :func:`orbit_origin`."""
    m, _ = unpack(c)
    o = m[:3, 3] - np.asarray(pivot, dtype=np.float64)
    r = float(np.linalg.norm(o))
    if r == 0:
        raise ValueError("camera sits on the pivot")
    pitch = -math.asin(max(-1.0, min(1.0, o[1] / r)))
    yaw = math.atan2(o[0], o[2])
    return yaw, pitch, r


@dataclass
class OrbitCamera:
    """A user-facing orbit camera: angles in radians, fov in degrees (EG3D's convention)."""
    yaw: float = 0.0
    pitch: float = 0.0
    radius: float = DEFAULT_RADIUS
    pivot: tuple = field(default_factory=lambda: DEFAULT_PIVOT)
    fov: float = field(default_factory=lambda: focal_to_fov(DEFAULT_FOCAL))

    @property
    def focal(self) -> float:
        return fov_to_focal(self.fov)

    def cam2world(self) -> np.ndarray:
        return orbit_cam2world(self.yaw, self.pitch, self.radius, self.pivot)

    def c(self) -> np.ndarray:
        """The 25-vector."""
        return pack(self.cam2world(), self.focal)

    def tensor(self, device="cpu") -> torch.Tensor:
        return torch.from_numpy(self.c()).to(device).unsqueeze(0)


def frontal(radius: float = DEFAULT_RADIUS, pivot=DEFAULT_PIVOT, focal: float = DEFAULT_FOCAL) -> np.ndarray:
    """The 25-vector of the frontal orbit camera (yaw 0, pitch 0: at ``radius`` from the pivot).

    A render camera; the mapping network is conditioned on :func:`conditioning_camera` instead."""
    return pack(orbit_cam2world(0.0, 0.0, radius, pivot), focal)


def conditioning_camera(rendering_kwargs: dict | None = None) -> np.ndarray:
    """The 25-vector the mapping network is conditioned on when a face is generated from a seed.

    EG3D's and PV3D's tools use ``LookAtPoseSampler.sample(pi/2, pi/2, pivot, radius)`` with the
    model's ``avg_camera_pivot`` and ``avg_camera_radius``: a camera on the sphere of that radius
    about the world origin (not about the pivot), looking at the pivot. For the released models it
    sits at (0, 0, 2.7) and looks down -z (:data:`CONDITIONING_CAMERA`). The viewer, the CLI,
    inversion, training's warm start and evaluation all use this one camera, so a seed gives the
    same face everywhere."""
    rk = rendering_kwargs or {}
    pivot = tuple(rk.get("avg_camera_pivot", DEFAULT_PIVOT))
    radius = float(rk.get("avg_camera_radius", DEFAULT_RADIUS))
    return pack(lookat_sampler(math.pi / 2, math.pi / 2, pivot, radius), DEFAULT_FOCAL)


#: :func:`conditioning_camera` of the released models (avg_camera_pivot (0, 0, 0.2), radius 2.7)
CONDITIONING_CAMERA = conditioning_camera()


PATHS = ("fixed", "orbit", "yaw")


def path_angles(kind: str, n: int, *, yaw_range: float = 0.35, pitch_range: float = 0.15, yaw: float = 0.0,
                pitch: float = 0.0) -> np.ndarray:
    """(n, 2) (yaw, pitch) in radians of frame i = 0 .. n-1 along a named camera path, s = i / n:

    - ``fixed``: every frame at (yaw, pitch);
    - ``orbit``: one loop of an ellipse of half-axes (yaw_range, pitch_range) that starts and ends at
      (yaw, pitch): yaw + yaw_range sin 2πs, pitch + pitch_range (cos 2πs - 1), so the first frame is
      the chosen view (a photo's, for portraits) and the camera rises up to 2 pitch_range above it;
    - ``yaw``: a sweep yaw + yaw_range sin 2πs at fixed pitch.

    The one definition behind :func:`camera_path`, the clip exporter (`pv3d generate`, the viewer) and
    the portrait animations.
    """
    if n < 1:
        raise ValueError("a camera path needs at least one frame")
    if kind not in PATHS:
        raise ValueError(f"unknown camera path {kind!r}: choose fixed, orbit or yaw")
    s = np.arange(n) / n
    yaws = np.full(n, float(yaw))
    pitches = np.full(n, float(pitch))
    if kind in ("orbit", "yaw"):
        yaws = yaws + yaw_range * np.sin(2 * np.pi * s)
    if kind == "orbit":
        pitches = pitches + (pitch_range * np.cos(2 * np.pi * s) - pitch_range)
    return np.stack([yaws, pitches], 1)


def camera_path(kind: str, n: int, *, yaw_range: float = 0.35, pitch_range: float = 0.15,
                yaw: float = 0.0, pitch: float = 0.0, radius: float = DEFAULT_RADIUS,
                pivot=DEFAULT_PIVOT, focal: float = DEFAULT_FOCAL) -> np.ndarray:
    """n cameras (n x 25) along a named path (see :func:`path_angles`)."""
    angles = path_angles(kind, n, yaw_range=yaw_range, pitch_range=pitch_range, yaw=yaw, pitch=pitch)
    return np.stack([pack(orbit_cam2world(float(a), float(b), radius, pivot), focal) for a, b in angles])
