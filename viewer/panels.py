"""The control panel widgets. Each section writes its slice of :class:`ViewerState` and returns
actions (strings) for the app to carry out; nothing here renders or touches the model."""
from __future__ import annotations

from imgui_bundle import imgui

from pv3d_core.pipeline import VIEW_MODES

from . import state as S

CAMERA_PATHS = ("fixed", "orbit", "yaw")


class Panels:
    def __init__(self):
        self.interacting = False     # a camera / timeline widget is being dragged this frame

    def draw(self, st: S.ViewerState, app) -> list[str]:
        actions: list[str] = []
        self.interacting = False
        self._model(st, app, actions)
        self._identity(st, actions)
        self._timeline(st, actions)
        self._camera(st, actions)
        self._output(st, actions)
        self._export(app, actions)
        return actions

    # ------------------------------------------------------------------ sections
    def _model(self, st, app, actions):
        if imgui.collapsing_header("Model", imgui.TreeNodeFlags_.default_open.value):
            imgui.text_wrapped(f"{app.worker.model_name}  on {app.worker.device}")
            if imgui.button("Load default model"):
                actions.append("load_default")
            if app.portrait_active:
                imgui.same_line()
                if imgui.button("Back to seeds"):
                    actions.append("clear_portrait")
            imgui.text_disabled("Drop a checkpoint or a portrait on the window")

    def _identity(self, st, actions):
        if imgui.collapsing_header("Identity and motion", imgui.TreeNodeFlags_.default_open.value):
            imgui.push_item_width(150)
            ch, v = imgui.input_int("Appearance seed", st.seed)
            if ch:
                st.seed = max(0, v)
            imgui.same_line()
            if imgui.button("Random##seed"):
                st.seed = S.random_seed()
            ch, v = imgui.input_int("Motion seed", st.motion_seed)
            if ch:
                st.motion_seed = max(0, v)
            imgui.same_line()
            if imgui.button("Random##motion"):
                st.motion_seed = S.random_seed()
            imgui.pop_item_width()
            ch, v = imgui.slider_float("psi", st.psi, 0.0, 1.0, "%.2f")
            if ch:
                st.psi = v

    def _timeline(self, st, actions):
        if imgui.collapsing_header("Timeline", imgui.TreeNodeFlags_.default_open.value):
            if imgui.button("Pause (space)" if st.playing else "Play (space)"):
                actions.append("toggle_play")
            imgui.same_line()
            imgui.push_item_width(110)
            ch, i = imgui.combo("Loop", S.LOOP_MODES.index(st.loop), list(S.LOOP_MODES))
            if ch:
                st.loop = S.LOOP_MODES[i]
            imgui.pop_item_width()
            length = S.timeline_length(st)
            label = "Position" if st.long_clip else "Time t"
            ch, v = imgui.slider_float(label, S.timeline_pos(st), 0.0, length, "%.3f")
            if ch:
                S.set_timeline_pos(st, v)
            if imgui.is_item_active():
                self.interacting = True
            ch, v = imgui.slider_float("Speed", st.speed, 0.1, 4.0, "%.2fx")
            if ch:
                st.speed = v
            ch, v = imgui.checkbox("Long clip (chain motion seeds)", st.long_clip)
            if ch:
                st.long_clip = v
                st.phase = 0.0 if v else st.phase
                st.t = 0.0 if not v else st.t
            if st.long_clip:
                ch, v = imgui.slider_int("Segments", st.long_clip_segments, 2, 16)
                if ch:
                    st.long_clip_segments = v
                    st.phase = min(st.phase, float(v))
                ms, t = S.long_clip_position(st.phase, st.long_clip_segments, st.motion_seed)
                imgui.text_disabled(f"motion seed {ms}, t = {t:.3f}")

    def _camera(self, st, actions):
        if imgui.collapsing_header("Camera", imgui.TreeNodeFlags_.default_open.value):
            for name, lo, hi, fmt in (("yaw", -S.YAW_LIMIT, S.YAW_LIMIT, "%.1f deg"),
                                      ("pitch", -S.PITCH_LIMIT, S.PITCH_LIMIT, "%.1f deg"),
                                      ("radius", S.RADIUS_RANGE[0], S.RADIUS_RANGE[1], "%.2f"),
                                      ("fov", S.FOV_RANGE[0], S.FOV_RANGE[1], "%.1f deg")):
                ch, v = imgui.slider_float(name.capitalize(), getattr(st, name), lo, hi, fmt)
                if ch:
                    setattr(st, name, v)
                if imgui.is_item_active():
                    self.interacting = True
            ch, i = imgui.combo("Wheel zooms", ("radius", "fov").index(st.zoom_mode), ["radius", "fov"])
            if ch:
                st.zoom_mode = ("radius", "fov")[i]
            if imgui.button("Reset view (R)"):
                actions.append("reset_view")

    def _output(self, st, actions):
        if imgui.collapsing_header("Output", imgui.TreeNodeFlags_.default_open.value):
            res = [str(r) for r in S.RESOLUTIONS]
            idx = S.RESOLUTIONS.index(st.resolution) if st.resolution in S.RESOLUTIONS else 1
            ch, i = imgui.combo("Resolution", idx, res)
            if ch:
                st.resolution = S.RESOLUTIONS[i]
            ch, i = imgui.combo("View", VIEW_MODES.index(st.view), list(VIEW_MODES))
            if ch:
                st.view = VIEW_MODES[i]
            ch, v = imgui.checkbox("Tri-plane cache", st.use_cache)
            if ch:
                st.use_cache = v

    def _export(self, app, actions):
        cfg = app.settings
        if imgui.collapsing_header("Export", imgui.TreeNodeFlags_.default_open.value):
            imgui.push_item_width(180)
            ch, v = imgui.input_text("Folder", cfg.export_folder)
            if ch:
                cfg.export_folder = v
            ch, v = imgui.slider_int("Frames", cfg.export_frames, 2, 600)
            if ch:
                cfg.export_frames = v
            ch, v = imgui.slider_float("FPS", cfg.export_fps, 1.0, 60.0, "%.0f")
            if ch:
                cfg.export_fps = v
            res = [str(r) for r in S.RESOLUTIONS]
            idx = S.RESOLUTIONS.index(cfg.export_resolution) if cfg.export_resolution in S.RESOLUTIONS else 2
            ch, i = imgui.combo("Size", idx, res)
            if ch:
                cfg.export_resolution = S.RESOLUTIONS[i]
            cidx = CAMERA_PATHS.index(cfg.export_camera) if cfg.export_camera in CAMERA_PATHS else 0
            ch, i = imgui.combo("Camera", cidx, list(CAMERA_PATHS))
            if ch:
                cfg.export_camera = CAMERA_PATHS[i]
            imgui.pop_item_width()
            if imgui.button("MP4 (E)"):
                actions.append("export_mp4")
            imgui.same_line()
            if imgui.button("PNG"):
                actions.append("export_png")
            imgui.same_line()
            if imgui.button("PLY mesh"):
                actions.append("export_ply")
            for job in app.jobs.recent():
                imgui.push_id(str(id(job)))
                if job.done:
                    if job.error:
                        imgui.text_colored(imgui.ImVec4(1, 0.4, 0.4, 1), f"{job.name} failed: {job.error}")
                    elif job.cancelled:
                        imgui.text_disabled(f"{job.name} cancelled")
                    else:
                        imgui.text_wrapped(f"{job.name} saved: {job.result}")
                else:
                    label = f"{job.name}: {job.status}" if job.name == "portrait" else f"{job.name} {int(job.progress * 100)}%"
                    imgui.progress_bar(job.progress, imgui.ImVec2(-60, 0), label)   # portrait: stage, time left
                    imgui.same_line()
                    if imgui.button("Cancel"):
                        job.cancel()
                imgui.pop_id()
