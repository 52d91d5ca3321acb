"""The camera: yaw and pitch with the training range marked on the sliders, zoom (field of view), reset;
and the output: resolution, view, tri-plane cache."""
from __future__ import annotations

from imgui_bundle import imgui
from pv3d_core.pipeline import VIEW_MODES

from .. import state as S
from .base import WARN, combo, explain, live_slider, remember


def _range_slider(app, panel, name: str, value: float, limit: float, trained: float) -> float:
    """A degrees slider over ±limit with the trained ±trained band drawn in it; orange text outside it."""
    ui = app.ui
    outside = abs(value) > trained + 1e-6
    if outside:
        imgui.push_style_color(imgui.Col_.text.value, WARN)
        imgui.push_style_color(imgui.Col_.slider_grab.value, WARN)
    ch, v = imgui.slider_float(name.capitalize(), value, -limit, limit, "%.1f deg")
    if outside:
        imgui.pop_style_color(2)
        ui.out_of_range.append(name)
    if imgui.is_item_active():
        panel.interacting = True
    remember(ui, name)
    mn, mx = imgui.get_item_rect_min(), imgui.get_item_rect_max()
    # the slider's frame is the item minus its label; the grab travels over the frame minus the grab width
    frame_w = imgui.calc_item_width()
    grab = imgui.get_style().grab_min_size
    x0 = mn.x + grab / 2
    w = frame_w - grab
    xa = x0 + w * (-trained + limit) / (2 * limit)
    xb = x0 + w * (trained + limit) / (2 * limit)
    dl = imgui.get_window_draw_list()
    colour = imgui.get_color_u32(imgui.ImVec4(0.35, 0.85, 0.45, 0.9))
    dl.add_rect_filled(imgui.ImVec2(xa, mx.y - 3), imgui.ImVec2(xb, mx.y - 1), colour)
    explain(ui, f"The model was trained on views within ±{trained:.0f}° (the green band); beyond it the "
                f"pictures are extrapolations and get unreliable.")
    return v if ch else value


def draw(app, st, actions: list, panel) -> None:
    ui = app.ui
    imgui.separator_text("Camera")
    st.yaw = _range_slider(app, panel, "yaw", st.yaw, S.YAW_LIMIT, S.TRAINED_YAW)
    st.pitch = _range_slider(app, panel, "pitch", st.pitch, S.PITCH_LIMIT, S.TRAINED_PITCH)
    if ui.out_of_range:
        imgui.push_style_color(imgui.Col_.text.value, WARN)
        imgui.text_wrapped(f"{' and '.join(ui.out_of_range)} outside the training range "
                           f"(±{S.TRAINED_YAW:.0f}° yaw, ±{S.TRAINED_PITCH:.0f}° pitch)")
        imgui.pop_style_color()
        remember(ui, "range_warning")
    st.fov = live_slider(ui, panel, "Zoom (fov)", st.fov, S.FOV_RANGE[0], S.FOV_RANGE[1], "%.1f deg", "fov")
    explain(ui, "Field of view: the wheel over the picture zooms too. The camera stays at the distance the "
                "model was trained at, so the head never leaves the rendered depth range.")
    if imgui.button("Reset view (R)"):
        actions.append("reset_view")
    imgui.separator_text("Output")
    imgui.push_item_width(70)
    ch, v = combo("Size", st.resolution, S.RESOLUTIONS, 128)
    if ch:
        st.resolution = v
    imgui.same_line()
    imgui.push_item_width(85)
    ch, v = combo("View", st.view, VIEW_MODES)
    if ch:
        st.view = v
    remember(ui, "view")
    imgui.pop_item_width()
    imgui.pop_item_width()
    imgui.same_line()
    ch, v = imgui.checkbox("Cache", st.use_cache)
    if ch:
        st.use_cache = v
    explain(ui, "Keep the tri-planes of recent moments: orbiting then costs only the render.")
