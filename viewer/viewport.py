"""The viewport and the status bar: the frame, mouse orbit and wheel zoom, what is said over the picture
(notices, errors, "preview", dropped frames, the depth legend), and the two-line status bar (which
volume renderer and display path run, UI and render rates, the last message)."""
from __future__ import annotations

import time

from imgui_bundle import imgui
from pv3d_core.render.colormap import TURBO_ANCHORS

from . import state as S
from .widgets.base import remember

LEGEND_W, LEGEND_H = 180, 12


def draw(app) -> None:
    io = imgui.get_io()
    ui = app.ui
    avail = imgui.get_content_region_avail()
    pos = imgui.get_cursor_screen_pos()
    aw, ah = max(1.0, avail.x), max(1.0, avail.y)
    imgui.invisible_button("##viewport", imgui.ImVec2(aw, ah))
    hovered, active = imgui.is_item_hovered(), imgui.is_item_active()
    st = app.st
    if active and (io.mouse_delta.x or io.mouse_delta.y):
        S.apply_drag(st, io.mouse_delta.x, io.mouse_delta.y)
        app.path_editor.previewing = False
        app.last_input = time.perf_counter()
    if hovered and io.mouse_wheel:
        S.apply_wheel(st, io.mouse_wheel)
        app.last_input = time.perf_counter()
    dl = imgui.get_window_draw_list()
    side = min(aw, ah)
    x0, y0 = pos.x + (aw - side) / 2, pos.y + (ah - side) / 2
    app.viewport_rect = (int(x0), int(y0), int(side), int(side))
    ui.rects["viewport"] = list(app.viewport_rect)
    dl.add_rect_filled(imgui.ImVec2(pos.x, pos.y), imgui.ImVec2(pos.x + aw, pos.y + ah),
                       imgui.get_color_u32(imgui.ImVec4(0.12, 0.12, 0.14, 1)))
    if app.display.ready and app.worker.has_model:
        dl.add_image(imgui.ImTextureRef(app.display.texture), imgui.ImVec2(x0, y0),
                     imgui.ImVec2(x0 + side, y0 + side))
    y = pos.y + 8
    for text, colour in ((app.notice, (1.0, 0.85, 0.4, 1)), (app.viewport_error, (1.0, 0.35, 0.35, 1))):
        if text:
            y = _overlay(dl, pos.x + 10, y, aw - 20, text, colour)
    tags = []
    if app.shown_preview and app.worker.has_model:
        tags.append("preview (refining)")
    if app.buffering:
        tags.append("rendering ahead ..." if st.playback_mode == "every frame"
                    else "dropping frames: rendering cannot keep up")
    if app.path_editor.previewing:
        tags.append(f"camera path {app.path_editor.time:.1f} s")
    if tags:
        dl.add_text(imgui.ImVec2(pos.x + 10, pos.y + ah - 24), imgui.get_color_u32(imgui.ImVec4(0.85, 0.85, 0.85, 1)),
                    "  ".join(tags))
    rng = app.depth_range if (app.shown_settings is not None and app.shown_settings.view == "depth") else None
    if rng and app.worker.has_model:
        _depth_legend(app, dl, x0 + side - LEGEND_W - 16, y0 + side - 44, rng)


def _overlay(dl, x, y, width, text, colour) -> float:
    size = imgui.calc_text_size(text, False, width - 16)
    dl.add_rect_filled(imgui.ImVec2(x, y), imgui.ImVec2(x + size.x + 16, y + size.y + 12),
                       imgui.get_color_u32(imgui.ImVec4(0, 0, 0, 0.75)), 4.0)
    dl.add_text(imgui.get_font(), imgui.get_font_size(), imgui.ImVec2(x + 8, y + 6),
                imgui.get_color_u32(imgui.ImVec4(*colour)), text, width - 16)
    return y + size.y + 20


def _turbo(x: float) -> tuple[float, float, float]:
    x = min(1.0, max(0.0, x))
    for (pa, ca), (pb, cb) in zip(TURBO_ANCHORS, TURBO_ANCHORS[1:]):
        if x <= pb:
            w = (x - pa) / (pb - pa)
            return tuple(a + (b - a) * w for a, b in zip(ca, cb))
    return TURBO_ANCHORS[-1][1]


def _depth_legend(app, dl, x, y, rng) -> None:
    """A colour bar: near (red, left) to far (blue, right), with the distances from the camera."""
    near, far = rng
    dl.add_rect_filled(imgui.ImVec2(x - 8, y - 22), imgui.ImVec2(x + LEGEND_W + 8, y + LEGEND_H + 22),
                       imgui.get_color_u32(imgui.ImVec4(0, 0, 0, 0.7)), 4.0)
    n = 36
    for i in range(n):
        r, g, b = _turbo(1.0 - (i + 0.5) / n)
        xa = x + LEGEND_W * i / n
        dl.add_rect_filled(imgui.ImVec2(xa, y), imgui.ImVec2(x + LEGEND_W * (i + 1) / n + 0.5, y + LEGEND_H),
                           imgui.get_color_u32(imgui.ImVec4(r, g, b, 1)))
    white = imgui.get_color_u32(imgui.ImVec4(0.9, 0.9, 0.9, 1))
    dl.add_text(imgui.ImVec2(x, y - 19), white, "depth from the camera")
    dl.add_text(imgui.ImVec2(x, y + LEGEND_H + 2), white, f"{near:.2f} near")
    far_text = f"far {far:.2f}"
    dl.add_text(imgui.ImVec2(x + LEGEND_W - imgui.calc_text_size(far_text).x, y + LEGEND_H + 2), white, far_text)
    app.ui.rects["depth_legend"] = [int(x) + 2, int(y) + 2, LEGEND_W - 4, LEGEND_H - 4]


def status_lines(app) -> tuple[str, str]:
    """(facts, message): which renderer and display run, rates; then the last message."""
    ui_fps = app.ui_fps()
    fm = sorted(app.frame_ms[-60:])
    ui = f"UI {ui_fps:.0f} fps" if app.ui_dt and ui_fps else "UI idle"
    if fm:
        ui += f" ({fm[len(fm) // 2]:.1f} ms/frame)"
    rt = app.render_times
    rfps = (len(rt) - 1) / (rt[-1] - rt[0]) if len(rt) > 2 and rt[-1] > rt[0] and time.perf_counter() - rt[-1] < 2 else 0.0
    ms = app.worker.render_s * 1e3
    render = f"render {rfps:.1f} fps, {ms:.0f} ms/frame" if ms else "render -"
    lp = app.worker.last_path
    kernels = app.worker.kernels
    if lp and lp.get("path") == "pytorch" and "PyTorch" not in kernels:
        kernels += f"; last frame: PyTorch ({lp.get('reason')})"
    facts = "  |  ".join([kernels, ui, render, f"display {app.display.path}",
                          f"cache {len(app.worker.cache)} frames"])
    return facts, app.message or ""


def draw_status(app, height: float) -> None:
    ui = app.ui
    imgui.push_style_var(imgui.StyleVar_.window_padding.value, imgui.ImVec2(8, 2))
    imgui.begin_child("status", imgui.ImVec2(0, height), imgui.ChildFlags_.always_use_window_padding.value,
                      imgui.WindowFlags_.no_scrollbar.value)
    facts, message = status_lines(app)
    wrap = imgui.get_content_region_avail().x - 6
    imgui.push_text_wrap_pos(imgui.get_cursor_pos_x() + wrap)
    imgui.text(facts)
    if message:
        imgui.text_disabled(message)
    imgui.pop_text_wrap_pos()
    ui.status_overflow = imgui.get_scroll_max_y()
    imgui.end_child()
    remember(ui, "status")
    if imgui.is_item_hovered() and (ui.status_overflow > 0):
        imgui.set_tooltip(f"{facts}\n{message}")
    imgui.pop_style_var()
