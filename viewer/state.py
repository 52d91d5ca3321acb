"""UI state -> render settings: pure functions, no GL, no torch.

The widgets write a :class:`ViewerState`; :func:`render_settings` turns it into the
:class:`pv3d_core.pipeline.RenderSettings` the worker renders. Timeline playback, long-clip chaining,
orbit dragging and zooming are plain arithmetic here so that tests can check them.

Zoom is by field of view, as in EG3D's viewer: the camera stays at the distance the model was trained
at, because the renderer samples each ray over the training depth range (2.25-3.3 for the released
models); moving the camera instead emptied the frame at radius 3.5 and went inside the head at 2.0.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from pv3d_core.pipeline import VIEW_MODES, RenderSettings
from pv3d_core.render import cameras

LOOP_MODES = ("wrap", "ping-pong")
RESOLUTIONS = (64, 128, 256, 512, 1024)
DEFAULT_FOV = float(cameras.focal_to_fov(cameras.DEFAULT_FOCAL))
YAW_LIMIT = 80.0      # degrees
PITCH_LIMIT = 60.0
TRAINED_YAW = 35.0    # the cameras the models were trained with: near-frontal, yaw within ±35°, pitch ±20°
TRAINED_PITCH = 20.0
FOV_RANGE = (6.0, 22.0)   # wider, the far ends of the rays leave the tri-plane box (an edge shows at the top)
PREVIEW_NEURAL_RES = 16   # raw neural render size while the user drags or scrubs
PLAYBACK_FPS = 25.0
PLAYBACK_MODES = ("realtime", "every frame")


@dataclass
class ViewerState:
    seed: int = 0
    motion_seed: int = 0
    t: float = 0.0               # timestamp in [0, 1] (single-clip mode)
    playing: bool = False
    loop: str = "wrap"           # wrap | ping-pong
    speed: float = 1.0           # timeline units are clips; 1.0 = one clip in `clip_seconds`
    clip_seconds: float = 2.0
    frames_per_clip: int = 50    # playback quantises t to this grid so frames can be cached (25 fps)
    playback_mode: str = "realtime"   # realtime: a clock that drops late frames | every frame: waits for each
    direction: int = 1           # ping-pong direction
    long_clip: bool = False      # chain motion seeds motion_seed, motion_seed+1, ... through t = 0
    long_clip_segments: int = 4
    phase: float = 0.0           # position along the long clip, in segments [0, segments)
    psi: float = 0.7
    seed_b: int = 1              # latent blend: the second appearance seed ...
    blend: float = 0.0           # ... and how far towards it (0 = seed)
    motion_seed_b: int = 1
    motion_blend: float = 0.0
    yaw: float = 0.0             # degrees
    pitch: float = 0.0           # degrees
    fov: float = DEFAULT_FOV     # degrees: the zoom
    resolution: int = 128
    view: str = "final"
    use_cache: bool = True

    def copy(self, **kw) -> "ViewerState":
        return replace(self, **kw)


def clamp(x, lo, hi):
    return lo if x < lo else hi if x > hi else x


# ------------------------------------------------------------------------------------------ timeline

def long_clip_position(phase: float, segments: int, base_motion_seed: int) -> tuple[int, float]:
    """(motion seed, t) at ``phase`` along a chain of ``segments`` motion seeds.

    Each segment runs t = 0 -> 1 -> 0 with one motion seed; the next seed starts at t = 0, where
    every motion code gives the same (canonical) frame, so the chain never jumps.
    """
    segments = max(1, int(segments))
    phase = clamp(float(phase), 0.0, float(segments))
    k = min(int(math.floor(phase)), segments - 1)
    local = phase - k
    t = 1.0 - abs(2.0 * local - 1.0)
    return base_motion_seed + k, clamp(t, 0.0, 1.0)


def timeline_length(st: ViewerState) -> float:
    return float(st.long_clip_segments) if st.long_clip else 1.0


def timeline_pos(st: ViewerState) -> float:
    return st.phase if st.long_clip else st.t


def set_timeline_pos(st: ViewerState, pos: float) -> None:
    if st.long_clip:
        st.phase = clamp(pos, 0.0, timeline_length(st))
    else:
        st.t = clamp(pos, 0.0, 1.0)


def quantise(pos: float, length: float, frames_per_clip: int) -> float:
    """Snap a timeline position to the playback frame grid (so that playback frames hit the cache)."""
    n = max(1, int(frames_per_clip))
    return clamp(round(pos * n) / n, 0.0, length)


def playhead(st: ViewerState, pos: float | None = None) -> float:
    """The playback frame shown for a timeline position: snapped to the frame grid; in wrap mode the
    end of the timeline is its start (so that a loop is exactly ``frames_per_clip`` cached frames)."""
    n = max(1, int(st.frames_per_clip))
    total = max(1, int(round(timeline_length(st) * n)))
    idx = int(round((timeline_pos(st) if pos is None else pos) * n))
    idx = idx % total if st.loop == "wrap" else min(max(idx, 0), total)
    return idx / n


def advance(st: ViewerState, dt: float) -> None:
    """Move the playhead by ``dt`` seconds of playback, looping (wrap) or bouncing (ping-pong)."""
    if not st.playing or dt <= 0:
        return
    length = timeline_length(st)
    step = dt * st.speed / max(1e-6, st.clip_seconds)
    if st.loop == "wrap":
        st.direction = 1
        pos = (timeline_pos(st) + step) % length
    else:
        pos = timeline_pos(st) + st.direction * step
        for _ in range(64):
            if pos > length:
                pos, st.direction = 2 * length - pos, -1
            elif pos < 0:
                pos, st.direction = -pos, 1
            else:
                break
    set_timeline_pos(st, pos)


def playback_frames(st: ViewerState, count: int) -> list[float]:
    """The next ``count`` quantised timeline positions the playhead will visit (for render-ahead)."""
    n = max(1, int(st.frames_per_clip))
    total = max(1, int(round(timeline_length(st) * n)))
    idx = int(round(timeline_pos(st) * n))
    direction = 1 if st.loop == "wrap" else (1 if st.direction >= 0 else -1)
    out = []
    for _ in range(count):
        if st.loop == "wrap":
            idx = (idx + 1) % total
        else:
            idx += direction
            if idx > total:
                idx, direction = total - 1, -1
            elif idx < 0:
                idx, direction = 1, 1
        out.append(idx / n)
    return out


# ------------------------------------------------------------------------------------------ camera

def apply_drag(st: ViewerState, dx: float, dy: float, degrees_per_pixel: float = 0.3) -> None:
    """Mouse drag on the viewport orbits: right -> camera swings right (yaw up), down -> pitch up."""
    st.yaw = clamp(st.yaw + dx * degrees_per_pixel, -YAW_LIMIT, YAW_LIMIT)
    st.pitch = clamp(st.pitch + dy * degrees_per_pixel, -PITCH_LIMIT, PITCH_LIMIT)


def apply_wheel(st: ViewerState, wheel: float) -> None:
    """Wheel up zooms in: a narrower field of view (the camera does not move, see the module's notes)."""
    st.fov = clamp(st.fov * (0.9 ** wheel), *FOV_RANGE)


def reset_view(st: ViewerState) -> None:
    st.yaw, st.pitch, st.fov = 0.0, 0.0, DEFAULT_FOV


def out_of_range(st: ViewerState) -> list[str]:
    """The camera angles beyond what the model was trained on (its pictures get unreliable there)."""
    return [name for name, v, lim in (("yaw", st.yaw, TRAINED_YAW), ("pitch", st.pitch, TRAINED_PITCH))
            if abs(v) > lim + 1e-6]


def random_seed(rng: random.Random | None = None) -> int:
    return (rng or random).randrange(0, 100_000)


# ------------------------------------------------------------------------------------------ mapping

def render_settings(st: ViewerState, preview: bool = False, pos: float | None = None) -> RenderSettings:
    """The settings to render for this state (at timeline position ``pos`` if given).

    ``preview`` asks for the cheap progressive-refinement frame: the raw neural render at a small
    neural resolution, upscaled to the output size.
    """
    if st.view not in VIEW_MODES:
        raise ValueError(f"unknown view mode {st.view!r}")
    p = timeline_pos(st) if pos is None else pos
    if st.long_clip:
        motion_seed, t = long_clip_position(p, st.long_clip_segments, st.motion_seed)
    else:
        motion_seed, t = st.motion_seed, clamp(p, 0.0, 1.0)
    view, neural = st.view, None
    if preview:
        view, neural = ("raw" if st.view == "final" else st.view), PREVIEW_NEURAL_RES
    blend, motion_blend = clamp(float(st.blend), 0.0, 1.0), clamp(float(st.motion_blend), 0.0, 1.0)
    return RenderSettings(
        seed=int(st.seed), motion_seed=int(motion_seed), t=round(float(t), 6),
        yaw=math.radians(st.yaw), pitch=math.radians(st.pitch), fov=float(st.fov), psi=float(st.psi),
        resolution=int(st.resolution), view=view, neural_resolution=neural, use_cache=bool(st.use_cache),
        seed_b=int(st.seed_b) if blend > 0 else None, blend=round(blend, 6),
        motion_seed_b=int(st.motion_seed_b) if motion_blend > 0 else None, motion_blend=round(motion_blend, 6))


def playback_settings(st: ViewerState, count: int) -> list[RenderSettings]:
    """Full-quality settings of the next ``count`` playback frames (rendered ahead, cached)."""
    return [render_settings(st, pos=p) for p in playback_frames(st, count)]
