"""Face detection (dlib's HOG detector, then its CNN detector when HOG finds nothing) and 68
landmarks, with clear errors for bad inputs.

The HOG detector is fast but wants a sharp, roughly frontal face; the CNN (MMOD) detector also
finds faces turned by 30-40° and soft ones (the renders of a small model), at a few seconds per
image on a CPU, so it only runs on a copy of at most :data:`CNN_SIDE` pixels when HOG found none.

Huge photos are never decoded at full size when avoidable: JPEGs are decoded at a reduced scale
(libjpeg's DCT scaling through PIL's ``draft``), other formats are downscaled right after decoding,
so the working image is at most :data:`MAX_WORKING_SIDE` pixels on its longer side. Files with more
than :data:`MAX_PIXELS` pixels that cannot be decoded at a reduced scale are refused.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FaceError
from . import models

#: the longer side of the image the pipeline works on (the crop is taken from it)
MAX_WORKING_SIDE = 4096
#: the longer side detection runs on (landmarks are then found on the working image)
DETECT_SIDE = 1024
#: refuse to decode non-JPEG files with more pixels than this (about 1.2 GB as RGB)
MAX_PIXELS = 400_000_000
#: smallest face (detector box side, in working-image pixels) accepted
MIN_FACE = 40
#: the longer side the CNN detector runs on (smaller images are upsampled once)
CNN_SIDE = 512


@dataclass
class Face:
    box: tuple                      # (left, top, right, bottom) in image pixels
    score: float                    # detector confidence
    landmarks: np.ndarray           # (68, 2) x, y in image pixels (pixel centres at i + 0.5)
    n_faces: int = 1                # faces found in the image
    note: str = ""                  # e.g. "3 faces found; the largest was used"
    extra: dict = field(default_factory=dict)

    @property
    def size(self) -> float:
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))


def load_image(source, max_side: int = MAX_WORKING_SIDE) -> tuple[np.ndarray, float]:
    """(uint8 RGB (H, W, 3), scale) of a path or an array; ``scale`` = working size / original size.

    Raises :class:`FaceError` for missing files, non-images, corrupt files and absurd sizes.
    """
    if isinstance(source, np.ndarray):
        img = source
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        if img.ndim != 3 or img.shape[2] not in (3, 4) or min(img.shape[:2]) < 1:
            raise FaceError(f"an image must be (H, W, 3), got an array of shape {img.shape}")
        if img.dtype != np.uint8:
            if np.issubdtype(img.dtype, np.floating) and img.max() <= 1.0:
                img = img * 255.0
            img = np.clip(img, 0, 255).astype(np.uint8)
        img = np.ascontiguousarray(img[..., :3])
        scale = 1.0
        if max(img.shape[:2]) > max_side:
            from PIL import Image

            scale = max_side / max(img.shape[:2])
            size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
            img = np.asarray(Image.fromarray(img).resize(size, Image.LANCZOS))
            scale = img.shape[1] / source.shape[1]
        return img, scale
    from PIL import Image, UnidentifiedImageError

    path = Path(source)
    if not path.is_file():
        raise FaceError(f"image not found: {path}")
    if os.path.getsize(path) == 0:
        raise FaceError(f"{path} is empty, not an image")
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None          # we check the size ourselves, before decoding
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w < 1 or h < 1:
                raise FaceError(f"{path} has no pixels")
            if max(w, h) > max_side and im.format == "JPEG":
                im.draft("RGB", (max(1, w * max_side // max(w, h)), max(1, h * max_side // max(w, h))))
            elif w * h > MAX_PIXELS:
                raise FaceError(f"{path} is {w}x{h} pixels, too large to read (more than "
                                f"{MAX_PIXELS // 1_000_000} megapixels); downscale it first")
            im = im.convert("RGB")
            if max(im.size) > max_side:
                s = max_side / max(im.size)
                im = im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.LANCZOS)
            img = np.asarray(im)
    except FaceError:
        raise
    except UnidentifiedImageError:
        raise FaceError(f"{path} is not an image (or not a format Pillow reads)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise FaceError(f"{path} is corrupt or truncated: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    except MemoryError:
        raise FaceError(f"{path} is too large to read in memory; downscale it first") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    return np.ascontiguousarray(img), img.shape[1] / w


def _rect_to_box(r, s):
    return (r.left() / s, r.top() / s, (r.right() + 1) / s, (r.bottom() + 1) / s)


def _downscaled(img: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    s = min(1.0, side / max(img.shape[:2]))
    if s >= 1.0:
        return img, 1.0
    from PIL import Image

    small = np.asarray(Image.fromarray(img).resize((max(1, round(img.shape[1] * s)),
                                                     max(1, round(img.shape[0] * s))), Image.BILINEAR))
    return small, small.shape[1] / img.shape[1]


def detect_boxes(img: np.ndarray, detect_side: int = DETECT_SIDE, cnn: bool = True):
    """[(box, score, detector)] of every face, boxes in ``img`` pixels, detector "hog" or "cnn".

    HOG runs on a copy downscaled to ``detect_side`` (small images are upsampled once when nothing
    is found at their size); when it finds nothing and ``cnn`` is on, the CNN detector runs on a
    copy of at most :data:`CNN_SIDE` pixels."""
    det = models.detector()
    small, s = _downscaled(img, detect_side)
    for upsample in (0, 1):
        if upsample and max(small.shape[:2]) > 1200:
            break
        rects, scores, _ = det.run(small, upsample, 0.0)
        if len(rects):
            return [(_rect_to_box(r, s), float(sc), "hog") for r, sc in zip(rects, scores)]
    if not cnn:
        return []
    small, s = _downscaled(img, CNN_SIDE)
    upsample = 1 if max(small.shape[:2]) <= CNN_SIDE // 2 else 0
    found = models.cnn_detector()(small, upsample)
    return [(_rect_to_box(d.rect, s), float(d.confidence), "cnn") for d in found]


def box_to_rect(box):
    """A (left, top, right, bottom) box in pixels as dlib's inclusive rectangle."""
    import dlib

    return dlib.rectangle(int(round(box[0])), int(round(box[1])), int(round(box[2])) - 1, int(round(box[3])) - 1)


def landmarks_in_box(img: np.ndarray, box) -> np.ndarray:
    """68 landmarks (x, y, pixel centres at i + 0.5) inside a face box."""
    shape = models.shape_predictor()(img, box_to_rect(box))
    return np.array([[p.x + 0.5, p.y + 0.5] for p in shape.parts()], dtype=np.float64)


def find_face(image, min_face: int = MIN_FACE, detect_side: int = DETECT_SIDE) -> Face:
    """The largest face of an image (uint8 array; see :func:`load_image` for paths).

    Several faces → the largest box (the more confident one when two are within 10 % in area);
    ``Face.note`` says so. No face, or a face smaller than ``min_face`` pixels → :class:`FaceError`.
    """
    img, _ = load_image(image) if not isinstance(image, np.ndarray) else (image, 1.0)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        img, _ = load_image(img)
    if min(img.shape[:2]) < 16:
        raise FaceError(f"the image is only {img.shape[1]}x{img.shape[0]} pixels; no face can be found in it")
    found = detect_boxes(img, detect_side)
    if not found:
        raise FaceError("no face found in the image (dlib's detector needs a roughly frontal face, "
                        f"at least about {min_face} pixels wide)")
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])
    biggest = max(area(b) for b, _, _ in found)
    box, score, which = max(((b, sc, d) for b, sc, d in found if area(b) >= 0.9 * biggest), key=lambda x: x[1])
    size = min(box[2] - box[0], box[3] - box[1])
    if size < min_face:
        raise FaceError(f"the face is too small ({size:.0f} pixels wide; at least {min_face} needed): "
                        "use a larger or closer photo")
    lm = landmarks_in_box(img, box)
    note = "" if len(found) == 1 else f"{len(found)} faces found; the largest was used"
    return Face(box=tuple(float(v) for v in box), score=score, landmarks=lm, n_faces=len(found), note=note,
                extra={"detector": which})
