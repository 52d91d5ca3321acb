"""Identity embedding: dlib's 128-D face descriptor, and the distance between two faces.

dlib calls two faces the same person when the distance is below 0.6.
"""
from __future__ import annotations

import numpy as np

from . import models

SAME_PERSON = 0.6


def descriptor(image: np.ndarray, landmarks: np.ndarray | None = None, jitter: int = 0) -> np.ndarray:
    """128-D descriptor of the (largest) face of a uint8 RGB image; landmarks skip detection."""
    import dlib

    from .detect import find_face

    img = np.ascontiguousarray(image, dtype=np.uint8)
    if landmarks is None:
        landmarks = find_face(img, min_face=20).landmarks
    lm = np.asarray(landmarks)
    x0, y0 = lm.min(0)
    x1, y1 = lm.max(0)
    rect = dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
    shape = dlib.full_object_detection(rect, [dlib.point(int(round(x - 0.5)), int(round(y - 0.5))) for x, y in lm])
    return np.array(models.recognizer().compute_face_descriptor(img, shape, jitter))


def face_distance(a, b) -> float:
    """Euclidean distance of two descriptors, or of the largest faces of two images."""
    a = np.asarray(a)
    b = np.asarray(b)
    da = a if a.shape == (128,) else descriptor(a)
    db = b if b.shape == (128,) else descriptor(b)
    return float(np.linalg.norm(da - db))
