"""Writing frames out: mp4 clips (imageio-ffmpeg, h264), PNG frames and folders, atomically.

The clip renderer here is what `pv3d generate` and the viewer's export both call.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from . import files
from .errors import Cancelled, ExportError
from .pipeline import FrameRenderer, RenderSettings
from .render import cameras


def check_output(path) -> Path:
    """``path`` once its folder exists and accepts a file, else :class:`ExportError`."""
    return files.check_writable(path, ExportError)


def write_mp4(path, frames: Iterable[np.ndarray], fps: float = 25.0, quality: int = 8,
              cancel: threading.Event | None = None) -> Path:
    """Encode uint8 (H, W, 3) frames as h264 into a temporary file, then rename it into place."""
    import imageio.v2 as imageio

    def encode(tmp):
        n = 0
        w = imageio.get_writer(tmp, fps=fps, codec="libx264", quality=quality, macro_block_size=1,
                               ffmpeg_log_level="error", output_params=["-pix_fmt", "yuv420p"])
        try:
            for f in frames:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("export cancelled")
                w.append_data(np.ascontiguousarray(f, dtype=np.uint8))
                n += 1
        finally:            # stop ffmpeg before its file is renamed or removed
            w.close()
        if n == 0:
            raise ExportError("no frames to write")

    return files.atomic_write(path, encode, ExportError)


def write_atomic(path, write: Callable[[str], None]) -> Path:
    """``write(tmp)`` into a temporary file beside ``path``, renamed into place; OS errors become
    :class:`ExportError` (see :func:`pv3d_core.files.atomic_write`)."""
    return files.atomic_write(path, write, ExportError)


def write_png(path, image: np.ndarray) -> Path:
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    return write_atomic(path, lambda tmp: img.save(tmp, format="PNG"))


def write_png_folder(folder, frames: Iterable[np.ndarray], cancel: threading.Event | None = None) -> Path:
    """frame_00000.png ... written into a temporary sibling folder that is renamed into place."""
    def fill(tmp: Path):
        n = 0
        for i, f in enumerate(frames):
            if cancel is not None and cancel.is_set():
                raise Cancelled("export cancelled")
            write_png(tmp / f"frame_{i:05d}.png", f)
            n += 1
        if n == 0:
            raise ExportError("no frames to write")

    return files.atomic_folder(folder, fill, ExportError)


@dataclass
class ClipSpec:
    """A timeline clip: frames at timestamps t0..t1, along a camera path."""
    frames: int = 64
    t0: float = 0.0
    t1: float = 1.0
    camera: str = "fixed"          # fixed | orbit | yaw
    yaw_range: float = 0.35
    pitch_range: float = 0.15

    def timestamps(self) -> np.ndarray:
        if self.frames < 1:
            raise ValueError("a clip needs at least one frame")
        if not (0 <= self.t0 <= 1 and 0 <= self.t1 <= 1):
            raise ValueError(f"timestamps must lie in [0, 1], got {self.t0}..{self.t1}")
        return np.linspace(self.t0, self.t1, self.frames) if self.frames > 1 else np.array([self.t0])


def clip_settings(base: RenderSettings, spec: ClipSpec) -> list[RenderSettings]:
    """Per-frame settings of a clip: timestamps t0..t1, the camera along ``spec.camera``'s path
    (:func:`pv3d_core.render.cameras.path_angles`) from the base camera."""
    ts = spec.timestamps()
    angles = cameras.path_angles(spec.camera, len(ts), yaw_range=spec.yaw_range, pitch_range=spec.pitch_range,
                                 yaw=base.yaw, pitch=base.pitch)
    return [base.with_(t=float(t), yaw=float(a[0]), pitch=float(a[1])) for t, a in zip(ts, angles)]


def walk_settings(base: RenderSettings, frames: int) -> list[RenderSettings]:
    """A latent walk: ``frames`` settings from ``base``'s seeds (blend 0) to its second seeds (blend 1),
    for the appearance when ``base.seed_b`` is set and for the motion when ``base.motion_seed_b`` is;
    the moment and the camera stay those of ``base``."""
    if frames < 2:
        raise ExportError("a walk needs at least 2 frames")
    if base.seed_b is None and base.motion_seed_b is None:
        raise ExportError("nothing to walk between: choose a second appearance or motion seed")
    out = []
    for i in range(frames):
        a = i / (frames - 1)
        out.append(base.with_(blend=a if base.seed_b is not None else 0.0,
                              motion_blend=a if base.motion_seed_b is not None else 0.0))
    return out


def path_settings(base: RenderSettings, path, t0: float | None = None, t1: float | None = None,
                  frames: int | None = None) -> list[RenderSettings]:
    """One setting per frame of a keyframed camera path (:class:`pv3d_core.render.camera_path.CameraPath`):
    its yaw, pitch and field of view; the timestamp runs from ``t0`` to ``t1`` (default: ``base.t``
    throughout). ``frames``: resample the path to that many frames (default: its own, one per 1/fps s).
    What the viewer's path export and `pv3d generate --camera-path` render."""
    angles = path.angles(frames)
    n = len(angles)
    t0 = base.t if t0 is None else t0
    t1 = t0 if t1 is None else t1
    if not (0 <= t0 <= 1 and 0 <= t1 <= 1):
        raise ExportError(f"timestamps must lie in [0, 1], got {t0}..{t1}")
    ts = np.linspace(t0, t1, n) if n > 1 else np.array([t0])
    return [base.with_(t=round(float(t), 6), yaw=float(np.radians(a[0])), pitch=float(np.radians(a[1])),
                       fov=float(a[2])) for t, a in zip(ts, angles)]


def render_clip(renderer: FrameRenderer, settings: list[RenderSettings],
                progress: Callable[[int, int], None] | None = None,
                cancel: threading.Event | None = None) -> Iterator[np.ndarray]:
    """Frames (uint8 numpy) of a list of settings, reporting progress and honouring cancel."""
    for i, s in enumerate(settings):
        if cancel is not None and cancel.is_set():
            raise Cancelled("render cancelled")
        yield renderer.render(s).numpy()
        if progress is not None:
            progress(i + 1, len(settings))


__all__ = ["ExportError", "Cancelled", "write_atomic", "write_mp4", "write_png", "write_png_folder", "ClipSpec",
           "clip_settings", "walk_settings", "path_settings", "render_clip", "check_output"]
