"""Faces: detection, 68 landmarks, the training crop, camera from landmarks, identity embedding.

All offline: dlib (``dlib-bin``) with the models of ``face-recognition-models``.
"""
from .align import CropFrame, crop_frame, warp
from .detect import Face, FaceError, find_face, load_image
from .embed import SAME_PERSON, descriptor, face_distance
from .pose import angle_between, solve_camera, template
from .aligned import AlignedFace, align_face, align_frames

__all__ = ["CropFrame", "crop_frame", "warp", "Face", "FaceError", "find_face", "load_image",
           "SAME_PERSON", "descriptor", "face_distance", "angle_between", "solve_camera", "template",
           "AlignedFace", "align_face", "align_frames"]
