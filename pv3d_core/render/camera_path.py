"""Keyframed camera paths: keyframes (time, yaw, pitch, field of view) -> a smooth curve -> one camera
per video frame; saved as JSON. The viewer makes them and previews them; ``pv3d generate --camera-path
path.json`` renders the same frames.

The file (angles in degrees, times in seconds)::

    {"format": "pv3d-camera-path", "version": 1, "fps": 25.0, "loop": false, "duration": 4.0,
     "keyframes": [{"time": 0.0, "yaw": -20.0, "pitch": 0.0, "fov": 18.837}, ...]}

The curve is a cubic Hermite spline through every keyframe with Catmull-Rom tangents (the slope
between the two neighbours, for keyframes at any times); the first and last keyframes of an open path
take the slope of their one segment, a looped path wraps around to its first keyframe. One keyframe is
a still camera; two give a straight move. The video starts at the first keyframe's time and ends at
``duration`` (a time on the same clock): by default the last keyframe's time for an open path, one
mean keyframe spacing later for a looped one (its way back to the start).

The camera orbits the model's pivot at the training distance: zooming is by field of view, as in the
viewer (the depths sampled along each ray are those of training, so the camera never moves closer).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UsageError

FORMAT = "pv3d-camera-path"
VERSION = 1
FOV_LIMITS = (1.0, 120.0)          # degrees: what a file may ask for (the viewer's slider is narrower)
PITCH_LIMIT = 89.0                 # the orbit camera cannot look straight down the up axis
MAX_KEYFRAMES = 10_000
MAX_FRAMES = 100_000


class CameraPathError(UsageError):
    """A camera path file or keyframe list that cannot be used (the message says why)."""


@dataclass(frozen=True)
class Keyframe:
    time: float           # seconds from the start of the path
    yaw: float            # degrees
    pitch: float          # degrees
    fov: float            # degrees (EG3D's convention, see cameras.fov_to_focal)


@dataclass
class CameraPath:
    keyframes: list[Keyframe] = field(default_factory=list)
    fps: float = 25.0
    loop: bool = False
    duration: float | None = None   # seconds; None: the last keyframe's time (open) or one more spacing (loop)

    # -------------------------------------------------------------------------------- editing
    def add(self, yaw: float, pitch: float, fov: float, time: float | None = None, spacing: float = 1.0) -> Keyframe:
        """Append a keyframe ``spacing`` seconds after the last one (or at ``time``); keeps them sorted."""
        if time is None:
            time = self.keyframes[-1].time + spacing if self.keyframes else 0.0
        k = Keyframe(float(time), float(yaw), float(pitch), float(fov))
        self.keyframes = sorted([*self.keyframes, k], key=lambda x: x.time)
        self.validate()
        return k

    def remove(self, index: int) -> None:
        del self.keyframes[index]

    # -------------------------------------------------------------------------------- sampling
    def total_duration(self) -> float:
        """Seconds from the first keyframe to the end: the last keyframe for an open path; for a looped
        one ``duration`` (an end time, like the keyframes'), else one mean keyframe spacing more."""
        ks = self.keyframes
        if not ks:
            return 0.0
        if self.duration is not None:
            return float(self.duration) - ks[0].time
        span = ks[-1].time - ks[0].time
        if not self.loop:
            return span
        return span + (span / (len(ks) - 1) if len(ks) > 1 else 1.0)

    def frame_count(self) -> int:
        """Frames of the video: one every 1/fps seconds; an open path includes its last keyframe, a looped
        one stops one frame before it comes back to its start."""
        n = int(round(self.total_duration() * self.fps))
        return max(1, n if self.loop else n + 1)

    def frame_times(self) -> np.ndarray:
        """Times (seconds, on the keyframes' clock) of the video frames."""
        start = self.keyframes[0].time if self.keyframes else 0.0
        return start + np.arange(self.frame_count()) / float(self.fps)

    def sample(self, times) -> np.ndarray:
        """(len(times), 3) yaw, pitch, fov in degrees at ``times`` (seconds)."""
        self.validate()
        ks = self.keyframes
        times = np.atleast_1d(np.asarray(times, dtype=np.float64))
        values = np.array([[k.yaw, k.pitch, k.fov] for k in ks], dtype=np.float64)
        knots = np.array([k.time for k in ks], dtype=np.float64)
        if len(ks) == 1:
            return np.repeat(values, len(times), 0)
        if self.loop:
            period = self.total_duration()
            # one more keyframe: the first, a period later; tangents wrap around
            knots = np.r_[knots, knots[0] + period]
            values = np.r_[values, values[:1]]
            times = knots[0] + np.mod(times - knots[0], period)
        return hermite(knots, values, times, periodic=self.loop)

    def angles(self, frames: int | None = None) -> np.ndarray:
        """(frames, 3) yaw, pitch, fov in degrees, one row per video frame: :meth:`frame_count` frames
        1/fps apart, or ``frames`` spread evenly over the path (its end included unless it loops)."""
        if frames is None:
            return self.sample(self.frame_times())
        if frames < 1:
            raise CameraPathError("a camera path needs at least one frame")
        d = self.total_duration()
        times = d * np.arange(frames) / (frames if self.loop else max(1, frames - 1))
        return self.sample((self.keyframes[0].time if self.keyframes else 0.0) + times)

    # -------------------------------------------------------------------------------- files
    def validate(self) -> "CameraPath":
        ks = self.keyframes
        if not ks:
            raise CameraPathError("the camera path has no keyframes (add the current view as one)")
        if len(ks) > MAX_KEYFRAMES:
            raise CameraPathError(f"too many keyframes ({len(ks)} > {MAX_KEYFRAMES})")
        if not (isinstance(self.fps, (int, float)) and 0.1 <= self.fps <= 240):
            raise CameraPathError(f"fps must be within 0.1..240, got {self.fps!r}")
        for i, k in enumerate(ks):
            for name in ("time", "yaw", "pitch", "fov"):
                v = getattr(k, name)
                if not (isinstance(v, (int, float)) and math.isfinite(v)):
                    raise CameraPathError(f"keyframe {i}: {name} must be a finite number, got {v!r}")
            if k.time < 0:
                raise CameraPathError(f"keyframe {i}: time must be >= 0, got {k.time}")
            if abs(k.pitch) > PITCH_LIMIT:
                raise CameraPathError(f"keyframe {i}: pitch must be within ±{PITCH_LIMIT:g}°, got {k.pitch}")
            if not FOV_LIMITS[0] <= k.fov <= FOV_LIMITS[1]:
                raise CameraPathError(f"keyframe {i}: fov must be within {FOV_LIMITS[0]:g}..{FOV_LIMITS[1]:g}°, "
                                      f"got {k.fov}")
        times = [k.time for k in ks]
        if any(b <= a for a, b in zip(times, times[1:])):
            raise CameraPathError("keyframe times must increase (two keyframes share a time)")
        if self.duration is not None:
            d = self.duration
            if not (isinstance(d, (int, float)) and math.isfinite(d)):
                raise CameraPathError(f"duration must be a number of seconds, got {d!r}")
            if d < times[-1] or (self.loop and d <= times[-1]):
                raise CameraPathError(f"duration {d} s ends before the last keyframe ({times[-1]} s)"
                                      + (" and its way back to the first" if self.loop else ""))
        if self.total_duration() * self.fps > MAX_FRAMES:
            raise CameraPathError(f"the path would have more than {MAX_FRAMES} frames")
        return self

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "fps": float(self.fps), "loop": bool(self.loop),
                "duration": float(self.total_duration() + (self.keyframes[0].time if self.keyframes else 0.0)),
                "keyframes": [asdict(k) for k in self.keyframes]}

    def save(self, path) -> Path:
        from ..files import atomic_write_text

        self.validate()
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n", CameraPathError)

    @classmethod
    def from_dict(cls, d) -> "CameraPath":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise CameraPathError(f"not a camera path (a JSON object with \"format\": \"{FORMAT}\")")
        if d.get("version") != VERSION:
            raise CameraPathError(f"camera path version {d.get('version')!r} is not supported (this is {VERSION})")
        raw = d.get("keyframes")
        if not isinstance(raw, list):
            raise CameraPathError("\"keyframes\" must be a list")
        ks = []
        for i, k in enumerate(raw[:MAX_KEYFRAMES + 1]):
            if not isinstance(k, dict) or set(k) - {"time", "yaw", "pitch", "fov"} or \
                    not {"time", "yaw", "pitch", "fov"} <= set(k):
                raise CameraPathError(f"keyframe {i} must have exactly time, yaw, pitch and fov")
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in k.values()):
                raise CameraPathError(f"keyframe {i}: every value must be a number")
            ks.append(Keyframe(float(k["time"]), float(k["yaw"]), float(k["pitch"]), float(k["fov"])))
        fps, loop, duration = d.get("fps", 25.0), d.get("loop", False), d.get("duration")
        if isinstance(fps, bool) or not isinstance(fps, (int, float)):
            raise CameraPathError(f"fps must be a number, got {fps!r}")
        if not isinstance(loop, bool):
            raise CameraPathError(f"loop must be true or false, got {loop!r}")
        if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))):
            raise CameraPathError(f"duration must be a number of seconds, got {duration!r}")
        return cls(ks, float(fps), loop, None if duration is None else float(duration)).validate()

    @classmethod
    def load(cls, path) -> "CameraPath":
        p = Path(path)
        try:
            if p.stat().st_size > 16 << 20:
                raise CameraPathError(f"{p} is too large for a camera path")
            data = json.loads(p.read_text(encoding="utf-8-sig"))
        except OSError as e:
            raise CameraPathError(f"cannot read the camera path {p}: {e.strerror or e}") from None
        except (ValueError, RecursionError) as e:
            raise CameraPathError(f"{p} is not valid JSON: {str(e)[:200]}") from None
        try:
            return cls.from_dict(data)
        except CameraPathError as e:
            raise CameraPathError(f"{p.name}: {e}") from None


def hermite(knots: np.ndarray, values: np.ndarray, times: np.ndarray, periodic: bool = False) -> np.ndarray:
    """Cubic Hermite interpolation through (knots[i], values[i]) with Catmull-Rom tangents.

    ``knots`` (K,) increasing, ``values`` (K, D). Inner tangents are the slope between the two
    neighbours; end tangents the slope of the end segment, or, with ``periodic`` (values[-1] ==
    values[0], one period apart), the slope across the wrap. Times outside the knots are clamped."""
    k = len(knots)
    slopes = np.diff(values, axis=0) / np.diff(knots)[:, None]        # (K-1, D)
    tangents = np.empty_like(values)
    if k == 2:
        tangents[:] = slopes[0]
    else:
        tangents[1:-1] = (values[2:] - values[:-2]) / (knots[2:] - knots[:-2])[:, None]
        if periodic:
            span = (knots[1] - knots[0]) + (knots[-1] - knots[-2])
            tangents[0] = tangents[-1] = (values[1] - values[-2]) / span
        else:
            tangents[0], tangents[-1] = slopes[0], slopes[-1]
    t = np.clip(times, knots[0], knots[-1])
    i = np.clip(np.searchsorted(knots, t, side="right") - 1, 0, k - 2)
    h = (knots[i + 1] - knots[i])[:, None]
    s = ((t - knots[i]) / (knots[i + 1] - knots[i]))[:, None]
    s2, s3 = s * s, s * s * s
    return ((2 * s3 - 3 * s2 + 1) * values[i] + (s3 - 2 * s2 + s) * h * tangents[i]
            + (-2 * s3 + 3 * s2) * values[i + 1] + (s3 - s2) * h * tangents[i + 1])
