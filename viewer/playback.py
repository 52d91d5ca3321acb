"""The timeline's clock: what to show at each UI frame while the timeline plays.

Two modes (``ViewerState.playback_mode``):

* ``realtime`` (default): the playhead moves with the wall clock at the chosen speed. The frame at the
  playhead is shown when it is ready; when it is not, it is dropped and the last one stays up. The
  render worker is asked, through its render-ahead list, for the frames the playhead will reach once
  they can be rendered (``lead`` frames ahead, from the measured render time), so that late frames are
  not rendered at all; each loop fills more of the frame cache, until the clip plays from it at the
  full rate. When nothing at all has been shown for a while (the camera moves, so nothing rendered
  ahead is ever at the playhead), the frame at the playhead is asked for directly and shown late.
* ``every frame``: the playhead waits for each frame (nothing is dropped; it plays slowly when
  rendering cannot keep up), as the viewer always did.

Pure logic over :mod:`viewer.state` and two callables, so that tests can run it without a window.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import state as S

RENDER_AHEAD = 12     # frames asked for ahead of the playhead (after the lead)
STARVED_S = 0.1       # realtime: nothing shown for this long beyond one render -> ask for the playhead's frame


@dataclass
class Step:
    show: tuple | None = None          # (frame, settings) to show now
    request: object = None             # settings to render now (latest wins)
    prefetch: list = field(default_factory=list)
    late: bool = False                 # the frame at the playhead is not ready (dropped or waited for)


class Playback:
    def __init__(self):
        self.distance = 0.0            # timeline length played, in clips (never wraps): rates come from it
        self.shown = 0
        self.dropped = 0
        self._index: int | None = None
        self._since_shown = 0.0

    def stats(self) -> dict:
        return {"distance": self.distance, "shown": self.shown, "dropped": self.dropped}

    def stop(self) -> None:
        self._index = None
        self._since_shown = 0.0

    def note_shown(self) -> None:
        """A frame asked for directly (when starved) was shown late: count it, and wait a render before
        asking again, so that rendering ahead gets the worker in between."""
        self.shown += 1
        self._since_shown = 0.0

    def step(self, st: S.ViewerState, dt: float, cached, render_s: float, shown_settings=None) -> Step:
        """Advance ``st`` by ``dt`` seconds. ``cached(settings)`` gives a rendered frame or None;
        ``render_s``: the worker's recent seconds per frame; ``shown_settings``: those of the frame on
        screen."""
        if st.playback_mode == "every frame":
            return self._every_frame(st, dt, cached, shown_settings)
        return self._realtime(st, dt, cached, render_s, shown_settings)

    # ------------------------------------------------------------------ modes
    def _realtime(self, st, dt, cached, render_s, shown_settings) -> Step:
        S.advance(st, dt)
        self.distance += _moved(st, dt)
        n = max(1, int(st.frames_per_clip))
        q = S.playhead(st)
        index = int(round(q * n))
        want = S.render_settings(st, pos=q)
        frame = cached(want)
        out = Step()
        self._since_shown += dt
        if frame is not None:
            if shown_settings != want:
                out.show = (frame, want)
                self.shown += 1
                self._since_shown = 0.0
        else:
            out.late = True
            if index != self._index:
                self.dropped += 1
            if self._since_shown > render_s + STARVED_S:
                out.request = want
        self._index = index
        # the frames the playhead reaches after one render from now, and the next ones
        rate = n * st.speed / max(1e-6, st.clip_seconds)           # grid frames per second
        lead = max(1, math.ceil(render_s * rate) + 1)
        out.prefetch = [S.render_settings(st, pos=p) for p in S.playback_frames(st, lead + RENDER_AHEAD)[lead - 1:]]
        return out

    def _every_frame(self, st, dt, cached, shown_settings) -> Step:
        trial = st.copy()
        S.advance(trial, dt)
        q = S.playhead(trial)
        want = S.render_settings(trial, pos=q)
        frame = cached(want)
        out = Step(prefetch=S.playback_settings(st, RENDER_AHEAD))
        if frame is not None:
            st.t, st.phase, st.direction = trial.t, trial.phase, trial.direction
            self.distance += _moved(st, dt)
            if shown_settings != want:
                out.show = (frame, want)
                self.shown += 1
        else:
            out.late = True
            out.request = want
        return out


def _moved(st: S.ViewerState, dt: float) -> float:
    """How far the playhead moved in clips (through wraps and bounces: speed x time)."""
    return dt * st.speed / max(1e-6, st.clip_seconds) if st.playing and dt > 0 else 0.0
