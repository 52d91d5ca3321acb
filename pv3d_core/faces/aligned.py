"""One call from a photo (or video frames) to aligned crops with cameras: what inversion and
data preparation both use, so their framing is the same."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import UsageError
from ..render import cameras
from .align import CropFrame, crop_frame, warp
from .detect import Face, FaceError, find_face, load_image, symmetric_landmarks
from .landmarks import smooth_sequence
from .pose import solve_camera


@dataclass
class AlignedFace:
    crop: np.ndarray                # (size, size, 3) uint8, the training framing
    camera: np.ndarray              # (25,) EG3D camera of the crop
    frame: CropFrame                # the crop in working-image pixels
    landmarks: np.ndarray           # (68, 2) in working-image pixels
    pose: dict                      # yaw, pitch, roll (radians), rms
    face: Face
    image_scale: float = 1.0        # working image size / original photo size
    image_size: tuple = (0, 0)      # working image (width, height)
    notes: list = field(default_factory=list)

    @property
    def landmarks_crop(self) -> np.ndarray:
        """Landmarks in normalised crop coordinates."""
        return self.frame.to_crop(self.landmarks)

    def transform(self) -> dict:
        """The crop transform, in the original photo's pixels (saved with a portrait)."""
        m = np.diag([1 / self.image_scale, 1 / self.image_scale, 1.0]) @ self.frame.crop_to_image()
        return {"crop_to_photo": m.tolist(), "crop_size": int(self.crop.shape[0]),
                "photo_scale_used": float(self.image_scale), "rule": "ffhq",
                "yaw_deg": float(np.degrees(self.pose["yaw"])), "pitch_deg": float(np.degrees(self.pose["pitch"])),
                "roll_deg": float(np.degrees(self.pose["roll"])), "faces_found": int(self.face.n_faces)}


def align_face(image, size: int = 512, focal: float = cameras.DEFAULT_FOCAL, min_face: int = 40) -> AlignedFace:
    """Detect the largest face of a photo (path or uint8 array), crop it in the training framing
    and estimate its camera. :class:`FaceError` with a clear message when that cannot be done."""
    if not 16 <= int(size) <= 4096:
        raise UsageError(f"crop size must be between 16 and 4096, got {size}")
    img, scale = load_image(image)
    face = find_face(img, min_face=min_face)
    frame = crop_frame(face.landmarks)
    cam, pose = solve_camera(frame.to_crop(symmetric_landmarks(img, face.box, face.landmarks)), focal)
    notes = [face.note] if face.note else []
    if abs(pose["yaw"]) > np.radians(50):
        notes.append(f"the face is turned far ({np.degrees(pose['yaw']):.0f}° yaw); expect a weaker result")
    return AlignedFace(crop=warp(img, frame, int(size)), camera=cam, frame=frame, landmarks=face.landmarks,
                       pose=pose, face=face, image_scale=scale, image_size=(img.shape[1], img.shape[0]), notes=notes)


def align_frames(frames, size: int = 256, sigma: float = 1.5, focal: float = cameras.DEFAULT_FOCAL,
                 min_face: int = 40, progress: Callable[[int, int], None] | None = None,
                 cancel=None) -> dict:
    """Aligned crops and cameras of video frames, with landmarks (hence crops) and camera angles
    smoothed over time; frames without a usable face are dropped.

    Returns dict(crops (N, size, size, 3) uint8, cameras (N, 25), kept (frame indices), dropped
    {index: reason}, poses [(yaw, pitch)] radians).
    """
    lms, pose_lms, kept, dropped = [], [], [], {}
    n = len(frames)
    for i, f in enumerate(frames):
        if cancel is not None and cancel.is_set():
            from ..errors import Cancelled

            raise Cancelled("face tracking cancelled")
        try:
            img = np.ascontiguousarray(f)
            face = find_face(img, min_face=min_face)
            lms.append(face.landmarks)
            pose_lms.append(symmetric_landmarks(img, face.box, face.landmarks))
            kept.append(i)
        except FaceError as e:
            dropped[i] = str(e).split(" (")[0]
        if progress:
            progress(i + 1, n)
    if not kept:
        return {"crops": np.zeros((0, size, size, 3), np.uint8), "cameras": np.zeros((0, 25), np.float32),
                "kept": [], "dropped": dropped, "poses": []}
    # smooth within runs of consecutive kept frames (a gap restarts the filter)
    lms, pose_lms = np.stack(lms), np.stack(pose_lms)
    runs, start = [], 0
    for j in range(1, len(kept) + 1):
        if j == len(kept) or kept[j] != kept[j - 1] + 1:
            runs.append((start, j))
            start = j
    smoothed, pose_smoothed = np.empty_like(lms), np.empty_like(pose_lms)
    for a, b in runs:
        smoothed[a:b] = smooth_sequence(lms[a:b], sigma)
        pose_smoothed[a:b] = smooth_sequence(pose_lms[a:b], sigma)
    crop_frames = [crop_frame(lm) for lm in smoothed]
    raw_angles = []
    for fr, lm in zip(crop_frames, pose_smoothed):
        _, pose = solve_camera(fr.to_crop(lm), focal)
        raw_angles.append((pose["yaw"], pose["pitch"]))
    raw_angles = np.array(raw_angles)
    angles = np.empty_like(raw_angles)
    for a, b in runs:
        angles[a:b] = smooth_sequence(raw_angles[a:b], sigma)
    cams = np.stack([cameras.pack(cameras.orbit_cam2world(y, p), focal) for y, p in angles])
    crops = np.stack([warp(np.asarray(frames[k]), fr, size) for k, fr in zip(kept, crop_frames)])
    return {"crops": crops, "cameras": cams.astype(np.float32), "kept": kept, "dropped": dropped,
            "poses": [tuple(map(float, a)) for a in angles]}
