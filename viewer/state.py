"""The viewer's UI state and what it asks the renderer for. Pure Python: no GL, no torch, testable."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from pv3d_core.pipeline import RenderSettings
from pv3d_core.render import cameras

DEFAULT_FOV = cameras.focal_to_fov(cameras.DEFAULT_FOCAL)
YAW_LIMIT = math.radians(90)
PITCH_LIMIT = math.radians(60)
LOOP_MODES = ("wrap", "ping-pong")


@dataclass
class ViewerState:
    seed: int = 0
    motion_seed: int = 0
    t: float = 0.0
    psi: float = 0.7
    yaw: float = 0.0
    pitch: float = 0.0
    radius: float = cameras.DEFAULT_RADIUS
    fov: float = DEFAULT_FOV
    resolution: int = 0                 # 0: the model's own
    view: str = "final"
    use_cache: bool = True
    # timeline
    playing: bool = False
    loop_mode: str = "wrap"
    speed: float = 0.5                  # timeline units (t) per second
    direction: float = 1.0
    long_clip: bool = False             # chain motion seeds through the canonical frame t = 0
    long_clip_seeds: int = 4
    long_clip_phase: float = 0.0        # in [0, long_clip_seeds): segment index + position
    # interaction
    interacting: bool = False           # dragging / scrubbing: render the cheap raw view
    extra: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ rendering
    def motion_seed_now(self) -> int:
        if self.long_clip:
            return self.motion_seed + int(self.long_clip_phase) % max(1, self.long_clip_seeds)
        return self.motion_seed

    def settings(self, preview: bool | None = None) -> RenderSettings:
        """What to render now; ``preview`` (default: while interacting) asks for the raw neural image."""
        preview = self.interacting if preview is None else preview
        view = "raw" if preview and self.view == "final" else self.view
        return RenderSettings(seed=int(self.seed), motion_seed=self.motion_seed_now(), t=float(self.t),
                              yaw=float(self.yaw), pitch=float(self.pitch), radius=float(self.radius),
                              fov=float(self.fov), psi=float(self.psi), resolution=self.resolution or None,
                              view=view, use_cache=bool(self.use_cache))

    # ------------------------------------------------------------------ camera
    def reset_view(self) -> None:
        self.yaw, self.pitch, self.radius, self.fov = 0.0, 0.0, cameras.DEFAULT_RADIUS, DEFAULT_FOV

    def orbit(self, dx_pixels: float, dy_pixels: float, viewport: float) -> None:
        """Mouse drag: a drag across the viewport turns the camera by about 180 degrees."""
        k = math.pi / max(viewport, 1.0)
        self.yaw = max(-YAW_LIMIT, min(YAW_LIMIT, self.yaw - dx_pixels * k))
        self.pitch = max(-PITCH_LIMIT, min(PITCH_LIMIT, self.pitch - dy_pixels * k))

    def zoom(self, wheel: float) -> None:
        self.radius = max(1.5, min(5.0, self.radius * (0.93 ** wheel)))

    # ------------------------------------------------------------------ timeline
    def advance(self, dt: float) -> None:
        """Move the playhead by ``dt`` seconds of playback."""
        if not self.playing or dt <= 0:
            return
        step = self.speed * dt
        if self.long_clip:
            # each segment plays one motion seed 0 -> 1 -> 0; segments meet at t = 0, so no jump
            n = max(1, self.long_clip_seeds)
            self.long_clip_phase = (self.long_clip_phase + step / 2) % n
            s = self.long_clip_phase % 1.0
            self.t = 1.0 - abs(2.0 * s - 1.0)
            return
        t = self.t + step * self.direction
        if self.loop_mode == "ping-pong":
            while t > 1 or t < 0:
                if t > 1:
                    t, self.direction = 2 - t, -1.0
                else:
                    t, self.direction = -t, 1.0
        else:
            t = t % 1.0 if t > 1 or t < 0 else t
        self.t = min(1.0, max(0.0, t))

    def upcoming(self, n: int, dt: float) -> list[RenderSettings]:
        """Settings of the next ``n`` frames of playback at ``dt`` seconds per frame (for prefetching)."""
        probe = ViewerState(**{k: v for k, v in asdict(self).items()})
        out = []
        for _ in range(n):
            probe.advance(dt)
            out.append(probe.settings(preview=False))
        return out

    def to_dict(self) -> dict:
        return asdict(self)
