"""Writing frames out: mp4 clips (imageio-ffmpeg, h264), PNG frames and folders, atomically.

The clip renderer here is what `pv3d generate` and the viewer's export both call.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from . import files
from .errors import Cancelled, ExportError
from .pipeline import FrameRenderer, RenderSettings
from .render import cameras
from .rules import MAX_FPS, MAX_FRAMES, Choice, Float, Int, check_fields


def check_output(path) -> Path:
    """``path`` once its folder exists and accepts a file, else :class:`ExportError`."""
    return files.check_writable(path, ExportError)


def write_mp4(path, frames: Iterable[np.ndarray], fps: float = 25.0, quality: int = 8,
              cancel: threading.Event | None = None) -> Path:
    """Encode uint8 (H, W, 3) frames as h264 into a temporary file, then rename it into place.

    ffmpeg's result is checked: when it fails (a full disk: "Error writing trailer: No space left on
    device"; a bad frame size...) the temporary file is removed, ``path`` keeps what it held, and
    :class:`ExportError` carries ffmpeg's message."""
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and 0 < fps <= MAX_FPS):
        raise ExportError(f"fps must be a number in (0, {MAX_FPS:g}], got {fps!r}")
    if not 1 <= quality <= 10:
        raise ExportError(f"quality must be within 1..10, got {quality!r}")

    def encode(tmp):
        enc = _FFmpegEncoder(tmp, fps, quality, shown=path)
        try:
            for f in frames:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("export cancelled")
                enc.write(f)
            if enc.frames == 0:
                raise ExportError("no frames to write")
            enc.finish()
        finally:            # stop ffmpeg before its file is renamed or removed
            enc.kill()

    return files.atomic_write(path, encode, ExportError)


class _FFmpegEncoder:
    """ffmpeg (imageio-ffmpeg's binary) reading raw RGB frames on stdin and writing an h264 mp4,
    with its exit status and error output checked (imageio's writer ignores both)."""

    def __init__(self, path: str, fps: float, quality: int, shown=None):
        self.path, self.fps, self.quality = path, fps, quality
        self.shown = shown or path                  # the destination, named in messages
        self.proc = None
        self.size = None
        self.frames = 0
        self.log = None

    def _start(self, w: int, h: int) -> None:
        import subprocess
        import sys
        import tempfile
        from fractions import Fraction

        import imageio_ffmpeg

        if w % 2 or h % 2:
            raise ExportError(f"h264 needs even frame sizes, got {w}x{h}")
        crf = int((1 - self.quality / 10.0) * 51)       # imageio's mapping of quality 1..10
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-nostdin", "-f", "rawvideo", "-vcodec", "rawvideo",
               "-s", f"{w}x{h}", "-pix_fmt", "rgb24", "-r", str(Fraction(self.fps).limit_denominator()),
               "-i", "-", "-an", "-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf),
               "-v", "error", "-f", "mp4", self.path]
        self.log = tempfile.TemporaryFile()
        # its own session: a Ctrl-C or a closed terminal reaches us, and we stop ffmpeg ourselves
        extra = {"start_new_session": True} if sys.platform != "win32" else \
            {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
        try:
            with files.signals_deferred():    # an interrupt inside Popen would leave ffmpeg running, unknown
                self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.log,
                                             **extra)
        except OSError as e:
            raise ExportError(f"cannot run ffmpeg ({cmd[0]}): {e.strerror or e}") from None
        self.size = (h, w)

    def write(self, frame) -> None:
        f = np.ascontiguousarray(frame, dtype=np.uint8)
        if f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(f"frames must be (H, W, 3), got {f.shape}")
        if self.proc is None:
            self._start(f.shape[1], f.shape[0])
        elif f.shape[:2] != self.size:
            raise ValueError(f"frame {self.frames} is {f.shape[1]}x{f.shape[0]}, the first was "
                             f"{self.size[1]}x{self.size[0]}")
        try:
            self.proc.stdin.write(f.tobytes())
        except (BrokenPipeError, OSError):        # ffmpeg stopped: say why
            self.proc.wait()
            raise ExportError(self._failure()) from None
        self.frames += 1

    def finish(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        rc = self.proc.wait()
        if rc != 0 or self._errors():
            raise ExportError(self._failure())

    def kill(self) -> None:
        """Stop ffmpeg now (a no-op once it has exited) and release its log."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None and self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if self.log is not None:
            self.log.close()
            self.log = None

    def _errors(self) -> list[str]:
        if self.log is None:
            return []
        self.log.seek(0)
        text = self.log.read()[-20000:].decode("utf-8", "replace")
        return [ln.strip() for ln in text.splitlines() if ln.strip()]

    def _failure(self) -> str:
        lines = self._errors()
        # ffmpeg's last lines say what went wrong ("Error writing trailer: No space left on device")
        why = next((ln for ln in reversed(lines) if "No space left" in ln or "Disk quota" in ln), None) \
            or (lines[-1] if lines else f"ffmpeg exited with status {self.proc.returncode}")
        why = why.split("] ", 1)[-1] if why.startswith("[") else why
        return f"cannot write {self.shown}: ffmpeg failed: {why}"


def write_atomic(path, write: Callable[[str], None]) -> Path:
    """``write(tmp)`` into a temporary file beside ``path``, renamed into place; OS errors become
    :class:`ExportError` (see :func:`pv3d_core.files.atomic_write`)."""
    return files.atomic_write(path, write, ExportError)


def write_png(path, image: np.ndarray) -> Path:
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    return write_atomic(path, lambda tmp: img.save(tmp, format="PNG"))


def write_png_folder(folder, frames: Iterable[np.ndarray], cancel: threading.Event | None = None) -> Path:
    """frame_00000.png ... written into a temporary sibling folder that is renamed into place (the
    folder is the atomic unit: its frames are written plainly, without a rename each)."""
    from PIL import Image

    def fill(tmp: Path):
        n = 0
        for i, f in enumerate(frames):
            if cancel is not None and cancel.is_set():
                raise Cancelled("export cancelled")
            Image.fromarray(np.ascontiguousarray(f, dtype=np.uint8)).save(tmp / f"frame_{i:05d}.png", format="PNG")
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

    RULES = {"frames": Int(1, MAX_FRAMES), "t0": Float(0, 1), "t1": Float(0, 1), "camera": Choice(cameras.PATHS),
             "yaw_range": Float(0, math.pi), "pitch_range": Float(0, math.radians(89))}

    def validate(self) -> "ClipSpec":
        check_fields(self, self.RULES, "clip ")
        return self

    def timestamps(self) -> np.ndarray:
        self.validate()
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
