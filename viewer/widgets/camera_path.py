"""Keyframed camera paths: add the current view as a keyframe, see the smooth curve through them
(implot), preview it in the viewport, save and open it as JSON, export its video."""
from __future__ import annotations

import numpy as np
from imgui_bundle import imgui, implot

from .base import MUTED, action_button, disabled_if, explain, remember


def draw(app, st, actions: list, panel) -> None:
    ui, ed = app.ui, app.path_editor
    path = ed.path
    imgui.separator_text("Keyframes")
    action_button(ui, actions, "Add view (K)", "add_keyframe")
    explain(ui, "Add the current yaw, pitch and zoom as the next keyframe, 'Spacing' seconds after the last.")
    imgui.same_line()
    imgui.push_item_width(90)
    ch, v = imgui.slider_float("Spacing", ed.spacing, 0.2, 5.0, "%.1f s")
    if ch:
        ed.spacing = v
    imgui.pop_item_width()
    imgui.same_line()
    with disabled_if(ui, not path.keyframes, "clear_keyframes"):
        if imgui.button("Clear"):
            actions.append("clear_keyframes")
    flags = imgui.TableFlags_.borders_inner_h.value | imgui.TableFlags_.scroll_y.value | imgui.TableFlags_.row_bg.value
    if imgui.begin_table("keyframes", 6, flags, imgui.ImVec2(0, 118)):
        imgui.table_setup_scroll_freeze(0, 1)
        for h in ("#", "time", "yaw", "pitch", "fov", ""):
            imgui.table_setup_column(h)
        imgui.table_headers_row()
        for i, k in enumerate(path.keyframes):
            imgui.table_next_row()
            for j, text in enumerate((str(i + 1), f"{k.time:.1f} s", f"{k.yaw:.1f}", f"{k.pitch:.1f}", f"{k.fov:.1f}")):
                imgui.table_set_column_index(j)
                imgui.text(text)
            imgui.table_set_column_index(5)
            if imgui.small_button(f"x##kf{i}"):
                actions.append(("remove_keyframe", {"index": i}))
        imgui.end_table()
    remember(ui, "keyframes")
    imgui.separator_text("Curve")
    if path.keyframes:
        _plot(app)
    else:
        imgui.push_style_color(imgui.Col_.text.value, MUTED)
        imgui.text_wrapped("Orbit to a view, press Add view; repeat. The camera follows a smooth curve "
                           "through the keyframes.")
        imgui.pop_style_color()
    imgui.push_item_width(90)
    ch, v = imgui.input_float("fps##path", float(path.fps), 0, 0, "%.0f")
    if ch and 1 <= v <= 120:
        path.fps = v
    imgui.pop_item_width()
    imgui.same_line()
    ch, v = imgui.checkbox("Loop##path", path.loop)
    if ch:
        path.loop = v
        path.duration = None
    imgui.same_line()
    n = path.frame_count() if path.keyframes else 0
    imgui.text_disabled(f"{path.total_duration():.1f} s, {n} frames")
    with disabled_if(ui, not path.keyframes, "preview_path"):
        action_button(ui, actions, "Stop preview" if ed.previewing else "Preview", "preview_path")
        imgui.same_line()
        action_button(ui, actions, "Save path...", "save_path")
        imgui.same_line()
    if imgui.button("Open path..."):
        actions.append(("open_dialog", {"kind": "path"}))
    with disabled_if(ui, not path.keyframes, "export_path"):
        action_button(ui, actions, "Export path video (MP4)", "export_path")
        explain(ui, "Render the path (size and folder: Export tab) at the current moment. "
                    "pv3d generate --camera-path path.json renders the same frames.")


def _plot(app) -> None:
    ed = app.path_editor
    path = ed.path
    ks = path.keyframes
    t0 = ks[0].time
    d = max(path.total_duration(), 1e-3)
    ts = t0 + np.linspace(0.0, d, 200)
    curve = path.sample(ts)
    kt = np.array([k.time for k in ks], dtype=np.float64)
    kv = np.array([[k.yaw, k.pitch, k.fov] for k in ks], dtype=np.float64)
    if implot.begin_plot("##path", imgui.ImVec2(-1, 130)):
        implot.setup_axes("seconds", "degrees")
        implot.setup_legend(implot.Location_.east.value, implot.LegendFlags_.outside.value)
        implot.setup_axes_limits(t0, t0 + d, float(curve.min()) - 5, float(curve.max()) + 5, implot.Cond_.always.value)
        for j, name in enumerate(("yaw", "pitch", "fov")):
            implot.plot_line(name, ts.copy(), np.ascontiguousarray(curve[:, j]))
            spec = implot.Spec()
            spec.marker = implot.Marker_.circle.value
            implot.plot_scatter(f"##{name}k", kt.copy(), np.ascontiguousarray(kv[:, j]), spec)
        if ed.previewing:
            implot.plot_inf_lines("now", np.array([t0 + ed.time]))
        implot.end_plot()
    remember(app.ui, "path_plot")
