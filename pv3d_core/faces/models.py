"""dlib's model files, shipped by the ``face-recognition-models`` package (nothing downloads).

The package's own ``__init__`` imports ``pkg_resources``; we only need the folder, so it is found
through importlib without importing the package.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from ..errors import MissingDependency

FILES = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
    "cnn_detector": "mmod_human_face_detector.dat",
}


def model_path(key: str) -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("the face models are not installed: pip install face-recognition-models")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "models" / FILES[key]
        if p.is_file():
            return p
    raise MissingDependency(f"dlib model {FILES[key]} is missing from face-recognition-models")


def _dlib():
    try:
        import dlib
    except ImportError:
        raise MissingDependency("dlib is not installed: pip install dlib-bin") from None
    return dlib


@lru_cache(maxsize=None)
def detector():
    return _dlib().get_frontal_face_detector()


@lru_cache(maxsize=None)
def cnn_detector():
    """dlib's CNN (MMOD) face detector: slower than the HOG one, but finds turned and soft faces."""
    return _dlib().cnn_face_detection_model_v1(str(model_path("cnn_detector")))


@lru_cache(maxsize=None)
def shape_predictor():
    return _dlib().shape_predictor(str(model_path("landmarks68")))


@lru_cache(maxsize=None)
def shape_predictor5():
    """The 5-point predictor (eye corners, nose), enough to align dlib's descriptor chip."""
    return _dlib().shape_predictor(str(model_path("landmarks5")))


@lru_cache(maxsize=None)
def recognizer():
    return _dlib().face_recognition_model_v1(str(model_path("recognition")))
