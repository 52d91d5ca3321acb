"""Alignment into the training crop: the FFHQ framing rule, which EG3D's and PV3D's crops follow.

The crop square is placed from three points of the 68 landmarks, the two eye centres and the mouth
centre (mean of the mouth corners):

- its horizontal axis runs along (eye-to-eye vector minus the eye-to-mouth vector turned 90°), so
  the eyes come out level and the face upright;
- its half side is max(2.0 x eye distance, 1.8 x eye-to-mouth distance);
- its centre lies 10 % of the eye-to-mouth vector below the midpoint of the eyes.

The camera of an aligned crop is estimated from its landmarks by :mod:`.pose`, whose mean 3D face was
fitted to landmarks in crops made by this rule. The rule is mirror-symmetric: the crop of a flipped
photo is the flipped crop.  Pixels outside the photo are filled by reflection.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .landmarks import eye_mouth

EYE_FACTOR = 2.0
MOUTH_FACTOR = 1.8
CENTER_SHIFT = 0.1


@dataclass(frozen=True)
class CropFrame:
    """A square crop in image pixels: centre and the half-side vectors of its x (right) and y (down) axes."""
    center: np.ndarray
    x_axis: np.ndarray

    @property
    def y_axis(self) -> np.ndarray:
        return np.array([-self.x_axis[1], self.x_axis[0]])

    @property
    def side(self) -> float:
        return float(2 * np.linalg.norm(self.x_axis))

    def crop_to_image(self) -> np.ndarray:
        """3x3 matrix mapping normalised crop coordinates (u, v in [0, 1]) to image pixels."""
        m = np.eye(3)
        m[:2, 0] = 2 * self.x_axis
        m[:2, 1] = 2 * self.y_axis
        m[:2, 2] = self.center - self.x_axis - self.y_axis
        return m

    def image_to_crop(self) -> np.ndarray:
        return np.linalg.inv(self.crop_to_image())

    def to_crop(self, pts) -> np.ndarray:
        """Image pixels → normalised crop coordinates."""
        pts = np.asarray(pts, dtype=np.float64)
        m = self.image_to_crop()
        return pts @ m[:2, :2].T + m[:2, 2]

    def quad(self) -> np.ndarray:
        """Corners (top-left, bottom-left, bottom-right, top-right) in image pixels."""
        c, x, y = self.center, self.x_axis, self.y_axis
        return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])

    def vector(self) -> np.ndarray:
        return np.r_[self.center, self.x_axis]

    @staticmethod
    def from_vector(v) -> "CropFrame":
        v = np.asarray(v, dtype=np.float64)
        return CropFrame(center=v[:2].copy(), x_axis=v[2:4].copy())

    def to_dict(self) -> dict:
        return {"center": [float(v) for v in self.center], "x_axis": [float(v) for v in self.x_axis],
                "crop_to_image": self.crop_to_image().tolist(), "rule": "ffhq"}


def crop_frame(lm: np.ndarray) -> CropFrame:
    """The training crop of a face from its 68 landmarks (image pixels)."""
    el, er, mouth = eye_mouth(lm)
    eye_avg = (el + er) / 2
    e2e = er - el
    e2m = mouth - eye_avg
    x = e2e + np.array([e2m[1], -e2m[0]])
    n = np.linalg.norm(x)
    if n < 1e-9:
        raise ValueError("degenerate landmarks: eyes and mouth coincide")
    x = x / n * max(EYE_FACTOR * np.linalg.norm(e2e), MOUTH_FACTOR * np.linalg.norm(e2m))
    return CropFrame(center=eye_avg + CENTER_SHIFT * e2m, x_axis=x)


def warp(img: np.ndarray, frame: CropFrame, size: int) -> np.ndarray:
    """The crop (size x size uint8 RGB), sampled bilinearly with reflection outside the photo.

    When the crop shrinks the photo by more than 2x, the photo is first box-downscaled by an
    integer factor so that small features do not alias.
    """
    from scipy.ndimage import map_coordinates

    img = np.asarray(img)
    factor = int(np.floor(frame.side / size / 2))
    m = frame.crop_to_image()
    if factor >= 2:
        from PIL import Image

        h, w = img.shape[:2]
        small = np.asarray(Image.fromarray(img).reduce(factor))
        sx, sy = small.shape[1] / w, small.shape[0] / h
        img = small
        m = np.diag([sx, sy, 1.0]) @ m
    u = (np.arange(size) + 0.5) / size
    uu, vv = np.meshgrid(u, u)
    xs = m[0, 0] * uu + m[0, 1] * vv + m[0, 2] - 0.5     # pixel centres at i + 0.5
    ys = m[1, 0] * uu + m[1, 1] * vv + m[1, 2] - 0.5
    out = np.empty((size, size, 3), dtype=np.float32)
    src = img.astype(np.float32)
    for ch in range(3):
        out[..., ch] = map_coordinates(src[..., ch], [ys, xs], order=1, mode="mirror")
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
