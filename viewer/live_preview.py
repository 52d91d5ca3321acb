"""A running portrait fit's live states, rendered on the fit's own thread.

The fit hands out a state between two steps (:mod:`pv3d_core.live`). Rendering it on the render worker
(one thread) while the fit computed on both cores made the two compete: the fit's OpenMP team waits for
whichever of its threads the worker preempts, so each live frame cost the fit several times the frame's
own time (a drop of the astronaut took 148 s with a state every second, 116 s with one every 30 s).
:class:`LivePreview` renders each snapshot with the fit's threads, between its steps, at the view the
viewport wants (:attr:`LivePreview.view`, set by the UI thread), and hands the frame and the renderer
(whose tri-planes are then cached) to the worker, which shows the frame without rendering it and
renders only what the user asks for beyond it (orbiting during the fit).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from pv3d_core.live import FitState, LatestState
from pv3d_core.pipeline import FrameRenderer, RenderSettings

from .worker import fast_renderer, rgba_on_render_stream

log = logging.getLogger(__name__)


@dataclass
class PreparedFrame:
    renderer: FrameRenderer          # the snapshot's renderer, appearance set, its tri-planes cached
    settings: RenderSettings         # the view it rendered
    frame: tuple                     # (RGBA image, ready event), as the worker's cache holds frames


class LivePreview(LatestState):
    """:class:`~pv3d_core.live.LatestState` whose snapshots come with a frame at :attr:`view` (None: no
    frame), rendered on the fit's thread; snapshots and frames take at most ``max_share`` of the fit's
    time (the interval grows at high resolutions). A frame that fails to render is logged and left out:
    the fit goes on."""

    def __init__(self, min_interval_s: float = 1.0, max_share: float = 0.1):
        super().__init__(min_interval_s, prepare=self._render, max_share=max_share)
        self.view: RenderSettings | None = None

    def _render(self, snap: FitState) -> PreparedFrame | None:
        view = self.view
        if view is None:
            return None
        try:
            r = fast_renderer(snap.generator)
            r.set_appearance(snap.ws)
            with torch.no_grad():
                frame = r.render(view)
            return PreparedFrame(r, view, rgba_on_render_stream(frame.image))
        except Exception:  # noqa: BLE001 - a preview must never stop the fit; the worker renders instead
            log.exception("live preview: rendering the fit's state failed")
            return None
