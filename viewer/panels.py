"""The control panel: each section writes its slice of the viewer state (EG3D-visualizer style)."""
from __future__ import annotations

import math
import random

from pv3d_core.pipeline import VIEW_MODES

from .state import LOOP_MODES

CAMERAS = ("fixed", "orbit", "yaw")
RESOLUTIONS = (0, 64, 128, 256, 512)


def draw_controls(app) -> None:
    from imgui_bundle import imgui

    st = app.state
    changed_any = False

    def mark(changed):
        nonlocal changed_any
        changed_any |= bool(changed)

    imgui.text("PV3D Studio")
    imgui.text_disabled(app.worker.model_name or "no model")
    imgui.separator()
    # ---------------------------------------------------------------- latent codes
    if imgui.collapsing_header("Identity and motion", imgui.TreeNodeFlags_.default_open):
        imgui.push_item_width(150)
        ch, v = imgui.input_int("appearance seed", st.seed)
        if ch:
            st.seed = max(0, v)
        imgui.same_line()
        if imgui.button("random##app"):
            st.seed = random.randrange(100000)
        ch, v = imgui.input_int("motion seed", st.motion_seed)
        if ch:
            st.motion_seed = max(0, v)
        imgui.same_line()
        if imgui.button("random##mot"):
            st.motion_seed = random.randrange(100000)
        ch, st.psi = imgui.slider_float("truncation psi", st.psi, 0.0, 1.0, "%.2f")
        imgui.pop_item_width()
        r = app.worker.renderer
        if r is not None and r.appearance_ws is not None:
            imgui.text_colored(imgui.ImVec4(0.5, 0.9, 0.6, 1), "showing a dropped portrait")
            if imgui.button("back to seeds"):
                app.generation += 1
                app.worker.run_task(app.generation, lambda rr: (rr.set_appearance(None), "appearance from seeds")[1])
                app.requested = None
    # ---------------------------------------------------------------- timeline
    if imgui.collapsing_header("Timeline", imgui.TreeNodeFlags_.default_open):
        imgui.push_item_width(250)
        ch, t = imgui.slider_float("t", st.t, 0.0, 1.0, "%.3f")
        if ch:
            st.t = t
            app.last_input = __import__("time").perf_counter()
        imgui.pop_item_width()
        if imgui.button("Pause (space)" if st.playing else "Play (space)"):
            st.playing = not st.playing
        imgui.same_line()
        if imgui.button("|<"):
            st.t, st.long_clip_phase = 0.0, 0.0
        imgui.push_item_width(120)
        ch, idx = imgui.combo("loop", LOOP_MODES.index(st.loop_mode), list(LOOP_MODES))
        if ch:
            st.loop_mode = LOOP_MODES[idx]
        ch, st.speed = imgui.slider_float("speed (t/s)", st.speed, 0.05, 2.0, "%.2f")
        ch, st.long_clip = imgui.checkbox("long clip", st.long_clip)
        if st.long_clip:
            imgui.same_line()
            ch, v = imgui.input_int("seeds", st.long_clip_seeds)
            if ch:
                st.long_clip_seeds = max(1, min(64, v))
            imgui.text_disabled(f"segment {int(st.long_clip_phase) + 1}/{st.long_clip_seeds}: "
                                f"motion seed {st.motion_seed_now()} (joins at t = 0)")
        imgui.pop_item_width()
    # ---------------------------------------------------------------- camera
    if imgui.collapsing_header("Camera", imgui.TreeNodeFlags_.default_open):
        imgui.push_item_width(200)
        ch, v = imgui.slider_float("yaw (deg)", math.degrees(st.yaw), -90, 90, "%.1f")
        if ch:
            st.yaw = math.radians(v)
            app.last_input = __import__("time").perf_counter()
        ch, v = imgui.slider_float("pitch (deg)", math.degrees(st.pitch), -60, 60, "%.1f")
        if ch:
            st.pitch = math.radians(v)
            app.last_input = __import__("time").perf_counter()
        ch, st.radius = imgui.slider_float("radius", st.radius, 1.5, 5.0, "%.2f")
        ch, st.fov = imgui.slider_float("fov (deg)", st.fov, 5.0, 40.0, "%.1f")
        imgui.pop_item_width()
        if imgui.button("Reset view (R)"):
            st.reset_view()
        imgui.text_disabled("drag the image to orbit, wheel to zoom")
    # ---------------------------------------------------------------- output
    if imgui.collapsing_header("View", imgui.TreeNodeFlags_.default_open):
        imgui.push_item_width(150)
        ch, idx = imgui.combo("view", VIEW_MODES.index(st.view), list(VIEW_MODES))
        if ch:
            st.view = VIEW_MODES[idx]
        labels = ["model"] + [str(r) for r in RESOLUTIONS[1:]]
        ch, idx = imgui.combo("resolution", RESOLUTIONS.index(st.resolution) if st.resolution in RESOLUTIONS else 0,
                              labels)
        if ch:
            st.resolution = RESOLUTIONS[idx]
        ch, st.use_cache = imgui.checkbox("tri-plane cache", st.use_cache)
        imgui.pop_item_width()
    # ---------------------------------------------------------------- export
    if imgui.collapsing_header("Export", imgui.TreeNodeFlags_.default_open):
        ex = app.export
        imgui.push_item_width(150)
        ch, v = imgui.input_int("frames", ex["frames"])
        if ch:
            ex["frames"] = max(1, min(2000, v))
        ch, v = imgui.input_int("fps", ex["fps"])
        if ch:
            ex["fps"] = max(1, min(120, v))
        ch, ex["camera"] = imgui.combo("camera path", ex["camera"], list(CAMERAS))
        labels = ["model"] + [str(r) for r in RESOLUTIONS[1:]]
        ch, idx = imgui.combo("size", RESOLUTIONS.index(ex["resolution"]) if ex["resolution"] in RESOLUTIONS else 0,
                              labels)
        if ch:
            ex["resolution"] = RESOLUTIONS[idx]
        imgui.pop_item_width()
        imgui.push_item_width(300)
        ch, ex["folder"] = imgui.input_text("##folder", ex["folder"])
        imgui.pop_item_width()
        if imgui.button("MP4 (E)"):
            app.export_mp4()
        imgui.same_line()
        if imgui.button("PNG"):
            app.export_png()
        imgui.same_line()
        if imgui.button("PLY mesh"):
            app.export_ply()
    # ---------------------------------------------------------------- jobs
    for j in list(app.jobs):
        imgui.text(f"{j.name}")
        imgui.same_line()
        imgui.progress_bar(j.progress, imgui.ImVec2(160, 0))
        imgui.same_line()
        if imgui.button(f"cancel##{id(j)}"):
            j.cancel.set()
    if changed_any:
        pass
