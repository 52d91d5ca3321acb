"""The performance panel: UI frame, render and per-stage times over the last seconds (implot), and which
paths run: the volume renderer (CUDA kernels, CPU kernels or PyTorch, and why) and the display (host
copy or CUDA-GL interop)."""
from __future__ import annotations

from imgui_bundle import imgui, implot

from ..perf import LABELS, SERIES
from .base import remember

WINDOW_S = 10.0


def draw(app) -> None:
    ui = app.ui
    if not ui.perf_open:
        return
    x, y, w, h = app.viewport_rect
    imgui.set_next_window_pos(imgui.ImVec2(x + w - 470, y + 8), imgui.Cond_.first_use_ever.value)
    imgui.set_next_window_size(imgui.ImVec2(460, 340), imgui.Cond_.first_use_ever.value)
    imgui.set_next_window_bg_alpha(0.92)
    opened, keep = imgui.begin("Performance (P)", True, imgui.WindowFlags_.no_collapse.value)
    if opened:
        hist = app.perf
        now = hist.clock() - hist.t0
        wk = app.worker
        imgui.text_wrapped(f"Volume renderer: {wk.kernels}")
        lp = wk.last_path
        if lp:
            imgui.text_wrapped(f"Last frame ran: {lp.get('path')} ({lp.get('reason')})")
        imgui.text_wrapped(f"Display: {app.display.path}" + (f" ({app.display.reason})" if app.display.reason else ""))
        parts = []
        for k in SERIES:
            m = hist.median(k)
            if m is not None:
                parts.append(f"{LABELS[k]} {m:.1f}")
        imgui.text_wrapped("medians (ms): " + ", ".join(parts))
        if implot.begin_plot("##times", imgui.ImVec2(-1, -1)):
            implot.setup_axes("seconds", "ms")
            implot.setup_legend(implot.Location_.north.value,
                                implot.LegendFlags_.horizontal.value | implot.LegendFlags_.outside.value)
            right = max(now, WINDOW_S)
            implot.setup_axis_limits(implot.ImAxis_.x1.value, right - WINDOW_S, right, implot.Cond_.always.value)
            implot.setup_axis_limits(implot.ImAxis_.y1.value, 0, 150, implot.Cond_.once.value)
            for k in SERIES:
                ts, vs = hist.series(k)
                if len(ts):
                    implot.plot_line(LABELS[k], ts, vs)
            implot.end_plot()
        remember(ui, "perf")
    imgui.end()
    if keep is False:
        ui.perf_open = False
        app.settings.show_performance = False
