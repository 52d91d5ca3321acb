"""The keyframed camera path being edited: add the current view, remove, preview, save and open.

The path itself (spline, JSON) is :class:`pv3d_core.render.camera_path.CameraPath`, the same object
`pv3d generate --camera-path` reads; this class adds what editing needs: the spacing of new keyframes
and the preview's clock, which moves the viewer's camera along the curve in real time.
"""
from __future__ import annotations

from pv3d_core.render.camera_path import CameraPath

from . import state as S


class PathEditor:
    def __init__(self):
        self.path = CameraPath(fps=S.PLAYBACK_FPS)
        self.spacing = 1.0                 # seconds between a new keyframe and the last one
        self.previewing = False
        self.time = 0.0                    # preview position, seconds from the first keyframe
        self.file: str | None = None       # where it was last saved or opened

    @property
    def keyframes(self):
        return self.path.keyframes

    def add_view(self, st: S.ViewerState) -> None:
        self.path.add(st.yaw, st.pitch, st.fov, spacing=self.spacing)

    def remove(self, index: int) -> None:
        if 0 <= index < len(self.path.keyframes):
            self.path.remove(index)
        if not self.path.keyframes:
            self.previewing = False

    def clear(self) -> None:
        self.path.keyframes = []
        self.previewing = False
        self.time = 0.0

    def toggle_preview(self) -> None:
        self.previewing = bool(self.path.keyframes) and not self.previewing
        self.time = 0.0

    def step(self, st: S.ViewerState, dt: float) -> bool:
        """While previewing, move ``st``'s camera ``dt`` seconds along the path (looping); True if it moved."""
        if not self.previewing or not self.path.keyframes:
            return False
        d = self.path.total_duration()
        self.time = (self.time + dt) % d if d > 0 else 0.0
        yaw, pitch, fov = self.path.sample([self.path.keyframes[0].time + self.time])[0]
        st.yaw = S.clamp(float(yaw), -S.YAW_LIMIT, S.YAW_LIMIT)
        st.pitch = S.clamp(float(pitch), -S.PITCH_LIMIT, S.PITCH_LIMIT)
        st.fov = S.clamp(float(fov), *S.FOV_RANGE)
        return True

    def save(self, path) -> str:
        self.file = str(self.path.save(path))
        return self.file

    def load(self, path) -> None:
        self.path = CameraPath.load(path)
        self.file = str(path)
        self.previewing = False
        self.time = 0.0
