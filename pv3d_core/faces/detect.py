"""Face detection (dlib's HOG detector, then its CNN detector when HOG finds nothing) and 68
landmarks, with clear errors for bad inputs.

The HOG detector is fast but wants a sharp, roughly frontal face; the CNN (MMOD) detector also
finds faces turned by 30-40° and soft ones (the renders of a small model), at a few seconds per
image on a CPU, so it only runs on a copy of at most :data:`CNN_SIDE` pixels when HOG found none.

Huge photos are never decoded at full size when avoidable: JPEGs are decoded at a reduced scale
(libjpeg's DCT scaling through PIL's ``draft``, up to 8x per side), other formats are downscaled right
after decoding, so the working image is at most :data:`MAX_WORKING_SIDE` pixels on its longer side.
Memory bound: nothing with more than :data:`MAX_PIXELS` pixels (Pillow's own decompression-bomb limit,
about 89 megapixels) is ever decoded: such a file is refused from its header, before decoding (a
389 KB PNG can claim 20000x20000 pixels), unless it is a JPEG that decodes under the limit at a reduced
scale. Decoding and converting an image at the limit peaks at about 1 GB; Pillow's limit itself stays
in force (it refuses files above twice it at open).

16-bit (and 32-bit integer or float) grayscale photos are scaled to 8 bits, not clipped to white.
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
#: never decode more pixels than this (Pillow's default MAX_IMAGE_PIXELS; 268 MB as RGB)
MAX_PIXELS = 89_478_485
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
        if img.shape[0] * img.shape[1] > MAX_PIXELS:
            raise FaceError(f"the image is {img.shape[1]}x{img.shape[0]} pixels, more than "
                            f"{MAX_PIXELS / 1e6:.0f} megapixels; downscale it first")
        if img.dtype != np.uint8:
            img = _to_uint8(img)
        img = np.ascontiguousarray(img[..., :3])
        scale = 1.0
        if max(img.shape[:2]) > max_side:
            from PIL import Image

            scale = max_side / max(img.shape[:2])
            size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
            img = np.asarray(Image.fromarray(img).resize(size, Image.LANCZOS))
            scale = img.shape[1] / source.shape[1]
        return img, scale
    import warnings

    from PIL import Image, UnidentifiedImageError

    path = Path(source)
    if not path.exists():
        raise FaceError(f"image not found: {path}")
    if not path.is_file():              # a folder, a FIFO (reading it would block), a device...
        raise FaceError(f"{path} is not a regular file, so not an image")
    if os.path.getsize(path) == 0:
        raise FaceError(f"{path} is empty, not an image")
    try:
        with warnings.catch_warnings():
            # Pillow warns above its limit and refuses above twice it; we refuse above it ourselves
            # (below), except for JPEGs that decode under it at a reduced scale
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size
            if w < 1 or h < 1:
                raise FaceError(f"{path} has no pixels")
            if max(w, h) > max_side and im.format == "JPEG":
                im.draft("RGB", (max(1, w * max_side // max(w, h)), max(1, h * max_side // max(w, h))))
            if im.size[0] * im.size[1] > MAX_PIXELS:
                raise FaceError(f"{path} is {w}x{h} pixels, too large to read (more than "
                                f"{MAX_PIXELS / 1e6:.0f} megapixels); downscale it first")
            im = _to_rgb(im)
            if max(im.size) > max_side:
                s = max_side / max(im.size)
                im = im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.LANCZOS)
            img = np.asarray(im)
    except FaceError:
        raise
    except Image.DecompressionBombError:
        raise FaceError(f"{path} claims more than {2 * MAX_PIXELS / 1e6:.0f} megapixels, too large to read "
                        "(a decompression bomb?); downscale it first") from None
    except UnidentifiedImageError:
        raise FaceError(f"{path} is not an image (or not a format Pillow reads)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise FaceError(f"{path} is corrupt or truncated: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    except MemoryError:
        raise FaceError(f"{path} is too large to read in memory; downscale it first") from None
    return np.ascontiguousarray(img), img.shape[1] / w


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """8-bit values of an image array of another type: 16-bit (and larger) integers scaled by 1/257
    (65535 -> 255) when they exceed 255, floats in [0, 1] by 255; never clipped to white."""
    a = np.asarray(a)
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(a.max()) if a.size else 0.0
        a = a * 255.0 if top <= 1.0 else (a / 257.0 if top > 255 else a)
    elif a.dtype == np.uint16 or (np.issubdtype(a.dtype, np.integer) and a.size and int(a.max()) > 255):
        a = a.astype(np.float32) / 257.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _to_rgb(im):
    """An RGB PIL image of any mode; 16-bit and 32-bit grayscale ("I;16", "I", "F") are scaled to 8
    bits first (Pillow's own conversion clips them, so a 16-bit photo turns white)."""
    from PIL import Image

    if im.mode.startswith("I") or im.mode == "F":
        g = _to_uint8(np.asarray(im))
        return Image.fromarray(g, "L").convert("RGB")
    return im.convert("RGB")


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


def symmetric_landmarks(img: np.ndarray, box, landmarks: np.ndarray | None = None) -> np.ndarray:
    """68 landmarks averaged with those of the mirrored image (found in the mirrored box and mirrored
    back). dlib's predictor is not mirror-symmetric: its reading of the mirrored face, mirrored back,
    differs from its reading of the face; the mean of the two cancels that part of its error (on heads
    with known cameras the pose's median error fell from 3.1° to 2.7°, see :mod:`.pose`). For the head
    pose; the crop keeps the predictor's own reading. ``landmarks``: the unmirrored reading when known."""
    from .landmarks import mirror_landmarks

    w = img.shape[1]
    own = landmarks_in_box(img, box) if landmarks is None else np.asarray(landmarks, dtype=np.float64)
    flipped = np.ascontiguousarray(img[:, ::-1])
    mbox = (w - box[2], box[1], w - box[0], box[3])
    return (own + mirror_landmarks(landmarks_in_box(flipped, mbox), w)) / 2


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
