"""The control panel: one module per widget (EG3D's visualizer's rule), grouped in tabs so that every tab
fits a 1280x800 window without scrolling, and the job area always visible under them.

Each widget's ``draw(app, st, actions, panel)`` writes its slice of :class:`viewer.state.ViewerState` (or
the settings) and appends actions (a name, or (name, kwargs)) for :class:`viewer.actions.Actions` to carry
out; nothing here renders or touches the model.
"""
from __future__ import annotations

from imgui_bundle import imgui

from . import blend, camera, camera_path, export, identity, jobs, model, timeline
from .base import TABS, remember

JOBS_HEIGHT = 118


class Panels:
    def __init__(self):
        self.interacting = False     # a camera / timeline widget is being dragged this frame

    def draw(self, st, app, width: float, height: float) -> list:
        ui = app.ui
        actions: list = []
        self.interacting = False
        imgui.begin_child("controls", imgui.ImVec2(width, height))
        if imgui.begin_tab_bar("tabs"):
            for name in TABS:
                flags = imgui.TabItemFlags_.set_selected.value if ui.requested_tab == name else 0
                selected = imgui.begin_tab_item(name, None, flags)[0]
                remember(ui, f"tab_{name}")
                if selected:
                    if ui.tab != name:
                        ui.tab = name
                        app.settings.panel_tab = name
                    imgui.begin_child(f"tab_{name}", imgui.ImVec2(0, -JOBS_HEIGHT - 4))
                    self._tab(name, st, app, actions)
                    ui.panel_overflow = imgui.get_scroll_max_y()
                    imgui.end_child()
                    imgui.end_tab_item()
            if imgui.tab_item_button("Perf (P)", imgui.TabItemFlags_.trailing.value):
                actions.append("toggle_perf")
            remember(ui, "tab_perf")
            imgui.end_tab_bar()
        if ui.requested_tab == ui.tab:
            ui.requested_tab = None
        jobs.draw(app, JOBS_HEIGHT)
        imgui.end_child()
        return actions

    def _tab(self, name, st, app, actions) -> None:
        if name == "Scene":
            model.draw(app, st, actions)
            identity.draw(app, st, actions)
            timeline.draw(app, st, actions, self)
            camera.draw(app, st, actions, self)
        elif name == "Blend":
            blend.draw(app, st, actions, self)
        elif name == "Path":
            camera_path.draw(app, st, actions, self)
        elif name == "Export":
            export.draw(app, st, actions, self)
