"""What every widget shares: the UI's own state (the open tab, where things were drawn, the tooltip shown),
and small helpers to record an item's place, explain it on hover, or grey it out with a reason."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from imgui_bundle import imgui

TABS = ("Scene", "Blend", "Path", "Export")
WARN = imgui.ImVec4(1.0, 0.62, 0.15, 1.0)        # out of range, cautions
ERROR = imgui.ImVec4(1.0, 0.36, 0.36, 1.0)
MUTED = imgui.ImVec4(0.62, 0.62, 0.66, 1.0)


@dataclass
class UIState:
    """The UI's own state (not render settings). ``rects``: screen rectangles of named items this frame, for
    the tests' xdotool and for overlays; ``disabled``: controls greyed out now, with why."""
    tab: str = TABS[0]
    requested_tab: str | None = None        # set by the control socket or a shortcut; applied next frame
    perf_open: bool = False
    rects: dict = field(default_factory=dict)
    tooltip: str | None = None
    disabled: list = field(default_factory=list)
    out_of_range: list = field(default_factory=list)
    panel_overflow: float = 0.0             # px of the open tab below the fold (0: it fits)
    status_overflow: float = 0.0

    def new_frame(self) -> None:
        self.rects = {}
        self.tooltip = None
        self.disabled = []
        self.out_of_range = []


def remember(ui: UIState, name: str) -> None:
    """Record the last item's screen rectangle (x, y, w, h) as ``name``."""
    mn, mx = imgui.get_item_rect_min(), imgui.get_item_rect_max()
    ui.rects[name] = [int(mn.x), int(mn.y), int(mx.x - mn.x), int(mx.y - mn.y)]


def action_button(ui: UIState, actions: list, label: str, action, name: str | None = None) -> None:
    """A button that queues ``action`` for the app when clicked; remembered as ``name`` (default: the
    action's name) for the tests."""
    if imgui.button(label):
        actions.append(action)
    remember(ui, name or (action if isinstance(action, str) else action[0]))


def live_slider(ui: UIState, panel, label: str, value: float, lo: float, hi: float, fmt: str, name: str) -> float:
    """A float slider whose drag counts as interaction (the viewer shows quick previews meanwhile);
    remembered as ``name``. Returns the (possibly new) value."""
    changed, v = imgui.slider_float(label, value, lo, hi, fmt)
    if imgui.is_item_active():
        panel.interacting = True
    remember(ui, name)
    return v if changed else value


def explain(ui: UIState, text: str) -> None:
    """A tooltip for the last item (shown also when it is disabled)."""
    if imgui.is_item_hovered(imgui.HoveredFlags_.allow_when_disabled.value):
        imgui.begin_tooltip()
        imgui.push_text_wrap_pos(imgui.get_font_size() * 26)
        imgui.text_unformatted(text)
        imgui.pop_text_wrap_pos()
        imgui.end_tooltip()
        ui.tooltip = text


@contextlib.contextmanager
def disabled_if(ui: UIState, cond: bool, name: str):
    """Grey out what is drawn inside when ``cond`` (recorded under ``name`` in ``ui.disabled``)."""
    if cond:
        ui.disabled.append(name)
        imgui.begin_disabled(True)
    try:
        yield
    finally:
        if cond:
            imgui.end_disabled()


def choice(value, options, default):
    """``value`` if it is one of ``options`` (a settings file may hold anything), else ``default``."""
    return value if value in options else default


def combo(label: str, value, options, default=None):
    """(changed, new value) of a combo over ``options`` (strings or numbers)."""
    opts = list(options)
    cur = opts.index(choice(value, opts, default if default is not None else opts[0]))
    ch, i = imgui.combo(label, cur, [str(o) for o in opts])
    return ch, opts[i]
