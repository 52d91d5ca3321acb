"""The window, the frame loop and the glue between widgets, worker, display and jobs."""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from . import drop as D
from . import settings_store
from . import state as S
from .app import EXIT_USAGE, JOB_REDRAW_S, NO_DISPLAY, PREVIEW_HOLD_S, RENDER_AHEAD
from .jobs import JobManager, mp4_job, output_name, ply_job, png_job, portrait_job

PANEL_WIDTH = 380
STATUS_HEIGHT = 26


def font_path() -> Path | None:
    """Roboto, shipped inside imgui-bundle (nothing is fetched at run time)."""
    import imgui_bundle

    p = Path(imgui_bundle.__file__).parent / "assets" / "fonts" / "Roboto" / "Roboto-Regular.ttf"
    return p if p.exists() else None


def pick_device(name: str):
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is available")
    return dev


class ViewerApp:
    def __init__(self, args):
        self.args = args
        self.settings, warn = settings_store.load()
        self.message = warn or ""
        self.st = S.ViewerState(seed=max(0, args.seed))
        if args.resolution:
            self.st.resolution = args.resolution
        self.jobs = JobManager()
        self.portrait_active = False
        self._portrait_view = None              # (yaw, pitch) radians of a fitted photo, applied on the UI thread
        self.viewport_error: str | None = None   # last render / load error, shown in the viewport
        self.notice: str | None = None           # e.g. "no model loaded: ..."
        self.shown_settings = None
        self.shown_preview = False
        self.last_result_settings = None
        self.last_requested = None
        self.last_input = 0.0
        self.ui_dt = []
        self.frame_ms = []
        self.frame_parts: dict = {}       # EMA of the UI frame's parts, ms
        self._prefetching = False
        self.render_times = []
        self.frames_shown = 0
        self.timings: dict = {}
        self.buffering = False
        self.viewport_rect = (0, 0, 0, 0)
        self._screenshots: list = []
        self._drops: list = []
        self._quit = False
        self.control = None

    # ------------------------------------------------------------------ startup
    def initial_checkpoint(self) -> tuple[Path | None, str | None]:
        from pv3d_core.paths import default_checkpoint

        if self.args.ckpt:
            return Path(self.args.ckpt), None
        if os.environ.get("PV3D_DEFAULT_CKPT"):
            p = default_checkpoint()
        elif self.settings.last_checkpoint and Path(self.settings.last_checkpoint).is_file():
            p = Path(self.settings.last_checkpoint)
        else:
            p = default_checkpoint()
        if not p.exists():
            return None, missing_model_notice(p)
        return p, None

    def run(self) -> int:
        import glfw
        import OpenGL.GL as gl
        import torch
        from imgui_bundle import imgui
        from imgui_bundle.python_backends.glfw_backend import GlfwRenderer

        from .display import Display
        from .worker import RenderWorker, ResultGate

        try:
            device = pick_device(self.args.device)
        except ValueError as e:
            print(f"pv3d-viewer: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        if not glfw.init():
            print(NO_DISPLAY.format(why="glfw could not initialise"), file=sys.stderr)
            return EXIT_USAGE
        glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
        glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
        glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
        glfw.window_hint(glfw.OPENGL_FORWARD_COMPAT, gl.GL_TRUE)
        self.window = glfw.create_window(self.settings.window_width, self.settings.window_height,
                                         "PV3D Studio", None, None)
        if not self.window:
            glfw.terminate()
            print(NO_DISPLAY.format(why="no OpenGL 3.3 window could be created"), file=sys.stderr)
            return EXIT_USAGE
        glfw.make_context_current(self.window)
        glfw.swap_interval(0)   # the loop caps itself at 60 fps; vsync under Xvfb/llvmpipe only adds latency

        # the render thread and the UI share the CPU cores
        cores = os.cpu_count() or 2
        if device.type == "cpu":
            torch.set_num_threads(max(1, cores - 1))

        imgui.create_context()
        imgui.get_io().config_flags &= ~imgui.ConfigFlags_.nav_enable_keyboard.value
        imgui.get_io().set_ini_filename("")
        fp = font_path()
        if fp is not None:
            imgui.get_io().fonts.add_font_from_file_ttf(str(fp), 16.0)
        imgui.style_colors_dark()
        self.impl = GlfwRenderer(self.window)   # inputs (and the fallback renderer)
        # Draw with imgui's C++ OpenGL3 renderer: one call per frame instead of hundreds of PyOpenGL
        # calls, each of which gives the GIL away to the render thread and waits to get it back.
        self.cpp_renderer = False
        if os.environ.get("PV3D_VIEWER_PY_RENDERER") != "1":
            try:
                imgui.backends.opengl3_init("#version 330 core")
                self.cpp_renderer = True
            except Exception as e:  # noqa: BLE001
                self.message = f"C++ GL renderer unavailable ({e}); using the Python one"
        # hand the GIL back and forth quickly between the UI and the render thread (default 5 ms)
        sys.setswitchinterval(0.001)
        glfw.set_drop_callback(self.window, self.on_drop)
        self.imgui = imgui
        self.glfw = glfw
        self.gl = gl

        self.display = Display()
        self.gate = ResultGate()
        self.worker = RenderWorker(device).start()
        ckpt, notice = self.initial_checkpoint()
        if ckpt is not None:
            self.notice = f"loading {ckpt.name} ..."
            self.worker.load(ckpt)
            self._loading = str(ckpt)
        else:
            self.notice = notice
            self._loading = None
        if self.args.control_socket:
            from .control import ControlServer
            self.control = ControlServer(self.args.control_socket)

        from .panels import Panels
        self.panels = Panels()
        last = time.perf_counter()
        try:
            while not glfw.window_should_close(self.window) and not self._quit:
                animating = bool(self.st.playing or self._screenshots
                                 or time.perf_counter() - self.last_input < PREVIEW_HOLD_S + 0.1)
                if animating:
                    glfw.poll_events()
                elif not self.worker.idle():
                    # a render is under way: wake for input at once, else look for its result every
                    # 20 ms, leaving the CPU to the render thread in between
                    glfw.wait_events_timeout(0.02)
                elif self.jobs.active():
                    # a portrait fit or an export runs on the CPU the UI would take: its progress bar
                    # needs ~10 redraws a second, not 60 (input still wakes the loop at once)
                    glfw.wait_events_timeout(JOB_REDRAW_S)
                else:
                    glfw.wait_events_timeout(0.05)
                now = time.perf_counter()
                dt, last = now - last, now
                if animating:   # idle frames wait for events: their spacing is not a frame rate
                    self.ui_dt = (self.ui_dt + [dt])[-120:]
                self.frame(dt)
                self.frame_ms = (self.frame_ms + [(time.perf_counter() - now) * 1e3])[-120:]
                if animating:  # cap the UI at ~60 fps so that the render thread keeps its core
                    spare = 1 / 60 - (time.perf_counter() - now)
                    if spare > 0:
                        time.sleep(spare)
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        glfw = self.glfw
        try:
            w, h = glfw.get_window_size(self.window)
            if w > 0 and h > 0:
                self.settings.window_width, self.settings.window_height = int(w), int(h)
            settings_store.save(self.settings)
        except Exception as e:  # noqa: BLE001
            print(f"pv3d-viewer: warning: could not save settings: {e}", file=sys.stderr)
        self.jobs.cancel_all()
        self.worker.stop()
        self.jobs.join_all(30)
        if self.control is not None:
            self.control.close()
        self.display.close()
        if self.cpp_renderer:
            self.imgui.backends.opengl3_shutdown()
        self.impl.shutdown()
        glfw.terminate()

    # ------------------------------------------------------------------ per frame
    def frame(self, dt: float) -> None:
        imgui, gl, glfw = self.imgui, self.gl, self.glfw
        t0 = time.perf_counter()
        self.impl.process_inputs()
        self.handle_control()
        self.handle_drops()
        self.collect_results()             # includes the texture upload of a new frame
        self.apply_portrait_view()
        t1 = time.perf_counter()
        if self.cpp_renderer:
            imgui.backends.opengl3_new_frame()
        imgui.new_frame()
        self.draw_ui()
        try:
            self.shortcuts()
            self.schedule(dt)
        except Exception as e:  # noqa: BLE001 - e.g. settings the renderer refuses
            self.viewport_error = f"{type(e).__name__}: {e}"
            self.st.playing = False
        imgui.render()
        t2 = time.perf_counter()
        fbw, fbh = glfw.get_framebuffer_size(self.window)
        gl.glViewport(0, 0, fbw, fbh)
        gl.glClearColor(0.08, 0.08, 0.09, 1.0)
        gl.glClear(gl.GL_COLOR_BUFFER_BIT)
        if self.cpp_renderer:
            imgui.backends.opengl3_render_draw_data(imgui.get_draw_data())
        else:
            self.impl.render(imgui.get_draw_data())
        if self._screenshots:
            from .display import read_framebuffer
            img = read_framebuffer(fbw, fbh)
            for path, pending in self._screenshots:
                self._finish_screenshot(img, path, pending)
            self._screenshots = []
        t3 = time.perf_counter()
        glfw.swap_buffers(self.window)
        t4 = time.perf_counter()
        for k, v in (("inputs+results", t1 - t0), ("ui", t2 - t1), ("gl", t3 - t2), ("swap", t4 - t3)):
            self.frame_parts[k] = 0.9 * self.frame_parts.get(k, v * 1e3) + 0.1 * v * 1e3

    def collect_results(self) -> None:
        for r in self.worker.poll():
            if r.kind == "model":
                if r.error:
                    self.viewport_error = f"could not load the model: {r.error}"
                    if not self.worker.has_model:
                        self.notice = missing_model_notice(None)
                else:
                    self.notice = None
                    self.viewport_error = None
                    self.message = r.message or ""
                    self.portrait_active = False
                    if self.worker.model_path:
                        self.settings.last_checkpoint = str(Path(self.worker.model_path).resolve())
                        try:
                            settings_store.save(self.settings)
                        except OSError:
                            pass
                    self.last_requested = None
                continue
            if r.kind == "command":
                if r.error:
                    self.viewport_error = r.error
                elif r.message:
                    self.message = r.message
                self.last_requested = None
                continue
            if not self.gate.accept(r, self.worker.epoch):
                continue
            self.last_result_settings = r.settings
            if r.error:
                self.viewport_error = f"render failed: {r.error}"
                continue
            self.viewport_error = None
            self.show(r.image, r.settings, r.timings)
            self.render_times = (self.render_times + [time.perf_counter()])[-30:]

    def show(self, image, settings, timings=None) -> None:
        self.display.upload(image)
        self.shown_settings = settings
        self.shown_preview = settings.neural_resolution is not None
        if timings:
            self.timings = dict(timings)
        self.frames_shown += 1

    def schedule(self, dt: float) -> None:
        """Decide what to show next; ask the worker only when the wanted settings change."""
        w = self.worker
        if not w.has_model:
            return
        st = self.st
        interacting = self.panels.interacting or (time.perf_counter() - self.last_input) < PREVIEW_HOLD_S
        if self.panels.interacting:
            self.last_input = time.perf_counter()
        if st.playing:
            trial = st.copy()
            S.advance(trial, dt)
            q = S.playhead(trial)
            want = S.render_settings(trial, pos=q)
            img = w.cached(want)
            if img is not None:
                st.t, st.phase, st.direction = trial.t, trial.phase, trial.direction
                self.buffering = False
                if self.shown_settings != want:
                    self.gate.shown_gen = w._gen
                    self.last_result_settings = want
                    self.show(img, want)
                    self.render_times = (self.render_times + [time.perf_counter()])[-30:]
            else:
                self.buffering = True
                if self.last_requested != want:
                    w.request(want)
                    self.last_requested = want
            w.prefetch(S.playback_settings(st, RENDER_AHEAD))
            self._prefetching = True
            return
        self.buffering = False
        if self._prefetching:
            w.prefetch([])
            self._prefetching = False
        full = S.render_settings(st)
        want = S.render_settings(st, preview=True) if interacting else full
        if want == self.last_requested:
            return
        img = w.cached(full)
        if img is not None:           # the full frame is already there: show it, drop older results
            self.gate.shown_gen = w._gen
            self.last_result_settings = full
            self.last_requested = want
            if self.shown_settings != full:
                self.show(img, full)
            return
        if interacting:
            img = w.cached(want)
            if img is not None:
                self.gate.shown_gen = w._gen
                self.last_requested = want
                self.show(img, want)
                return
        w.request(want)
        self.last_requested = want

    def settled(self) -> bool:
        """Nothing left to do: the shown frame (or error) is for the wanted full settings."""
        if not self.worker.has_model:
            return self.worker.idle()
        full = S.render_settings(self.st)
        return (not self.st.playing and self.worker.idle() and self.last_result_settings == full
                and time.perf_counter() - self.last_input >= PREVIEW_HOLD_S and not self.worker._results)

    # ------------------------------------------------------------------ UI
    def draw_ui(self) -> None:
        imgui = self.imgui
        io = imgui.get_io()
        W, H = io.display_size.x, io.display_size.y
        imgui.set_next_window_pos(imgui.ImVec2(0, 0))
        imgui.set_next_window_size(imgui.ImVec2(W, H))
        flags = (imgui.WindowFlags_.no_title_bar | imgui.WindowFlags_.no_resize | imgui.WindowFlags_.no_move
                 | imgui.WindowFlags_.no_collapse | imgui.WindowFlags_.no_bring_to_front_on_focus
                 | imgui.WindowFlags_.no_scrollbar)
        imgui.push_style_var(imgui.StyleVar_.window_padding, imgui.ImVec2(6, 6))
        imgui.begin("PV3D Studio##main", None, flags)
        imgui.begin_child("controls", imgui.ImVec2(PANEL_WIDTH, -STATUS_HEIGHT))
        actions = self.panels.draw(self.st, self)
        imgui.end_child()
        imgui.same_line()
        imgui.begin_child("viewport", imgui.ImVec2(0, -STATUS_HEIGHT), 0,
                          imgui.WindowFlags_.no_scrollbar | imgui.WindowFlags_.no_scroll_with_mouse)
        self.draw_viewport()
        imgui.end_child()
        imgui.separator()
        imgui.text(self.status_line())
        imgui.end()
        imgui.pop_style_var()
        for a in actions:
            try:
                self.do(a)
            except Exception as e:  # noqa: BLE001 - a failed action is reported, never fatal
                self.viewport_error = f"{a} failed: {type(e).__name__}: {e}"

    def draw_viewport(self) -> None:
        imgui = self.imgui
        io = imgui.get_io()
        avail = imgui.get_content_region_avail()
        pos = imgui.get_cursor_screen_pos()
        aw, ah = max(1.0, avail.x), max(1.0, avail.y)
        imgui.invisible_button("##viewport", imgui.ImVec2(aw, ah))
        hovered, active = imgui.is_item_hovered(), imgui.is_item_active()
        if active and (io.mouse_delta.x or io.mouse_delta.y):
            S.apply_drag(self.st, io.mouse_delta.x, io.mouse_delta.y)
            self.last_input = time.perf_counter()
        if hovered and io.mouse_wheel:
            S.apply_wheel(self.st, io.mouse_wheel)
            self.last_input = time.perf_counter()
        dl = imgui.get_window_draw_list()
        side = min(aw, ah)
        x0, y0 = pos.x + (aw - side) / 2, pos.y + (ah - side) / 2
        self.viewport_rect = (int(x0), int(y0), int(side), int(side))
        dl.add_rect_filled(imgui.ImVec2(pos.x, pos.y), imgui.ImVec2(pos.x + aw, pos.y + ah),
                           imgui.get_color_u32(imgui.ImVec4(0.12, 0.12, 0.14, 1)))
        if self.display.ready and self.worker.has_model:
            dl.add_image(imgui.ImTextureRef(self.display.texture), imgui.ImVec2(x0, y0),
                         imgui.ImVec2(x0 + side, y0 + side))
        y = pos.y + 8
        for text, colour in ((self.notice, (1.0, 0.85, 0.4, 1)), (self.viewport_error, (1.0, 0.35, 0.35, 1))):
            if text:
                y = self._overlay(dl, pos.x + 10, y, aw - 20, text, colour)
        tags = []
        if self.shown_preview and self.worker.has_model:
            tags.append("preview (refining)")
        if self.buffering:
            tags.append("rendering ahead ...")
        if tags:
            dl.add_text(imgui.ImVec2(pos.x + 10, pos.y + ah - 24), imgui.get_color_u32(imgui.ImVec4(0.8, 0.8, 0.8, 1)),
                        "  ".join(tags))

    def _overlay(self, dl, x, y, width, text, colour) -> float:
        imgui = self.imgui
        size = imgui.calc_text_size(text, False, width - 16)
        dl.add_rect_filled(imgui.ImVec2(x, y), imgui.ImVec2(x + size.x + 16, y + size.y + 12),
                           imgui.get_color_u32(imgui.ImVec4(0, 0, 0, 0.75)), 4.0)
        dl.add_text(imgui.get_font(), imgui.get_font_size(), imgui.ImVec2(x + 8, y + 6),
                    imgui.get_color_u32(imgui.ImVec4(*colour)), text, width - 16)
        return y + size.y + 20

    def status_line(self) -> str:
        dts = sorted(self.ui_dt[-60:])
        ui_fps = 1.0 / dts[len(dts) // 2] if dts and dts[len(dts) // 2] > 0 else 0.0
        rt = self.render_times
        rfps = (len(rt) - 1) / (rt[-1] - rt[0]) if len(rt) > 2 and rt[-1] > rt[0] and time.perf_counter() - rt[-1] < 2 else 0.0
        stages = "  ".join(f"{k} {v:.0f}ms" for k, v in self.timings.items())
        fm = sorted(self.frame_ms[-60:])
        ui = f"UI {ui_fps:.0f} fps" if self.ui_dt else "UI idle"
        if fm:
            ui += f" ({fm[len(fm) // 2]:.1f} ms/frame)"
        parts = [ui, f"render {rfps:.1f} fps", stages or "-", f"device {self.worker.device}",
                 f"display {self.display.path}", f"cache {len(self.worker.cache)} frames"]
        if self.message:
            parts.append(self.message)
        return "  |  ".join(parts)

    def ui_fps(self) -> float:
        dts = sorted(self.ui_dt[-60:])
        return 1.0 / dts[len(dts) // 2] if dts and dts[len(dts) // 2] > 0 else 0.0

    def shortcuts(self) -> None:
        imgui = self.imgui
        io = imgui.get_io()
        if io.want_text_input:
            return
        if imgui.is_key_pressed(imgui.Key.space, False):
            self.do("toggle_play")
        if imgui.is_key_pressed(imgui.Key.r, False):
            self.do("reset_view")
        if imgui.is_key_pressed(imgui.Key.e, False):
            self.do("export_mp4")

    # ------------------------------------------------------------------ actions
    def do(self, action: str):
        st = self.st
        if action == "toggle_play":
            st.playing = not st.playing
            if not st.playing:
                self.worker.prefetch([])
        elif action == "reset_view":
            S.reset_view(st)
        elif action == "load_default":
            from pv3d_core.paths import default_checkpoint
            p = default_checkpoint()
            if p.exists():
                self.load_checkpoint(p)
            else:
                self.viewport_error = missing_model_notice(p)
        elif action == "clear_portrait":
            base = getattr(self, "_portrait_base", None)
            if base is not None and base[0] is not None:   # back to the model the portrait was fitted on
                self.worker.set_generator(base[0], name=base[1] or "model")
                self._portrait_base = None
            self.worker.set_appearance(None)
            self.portrait_active = False
        elif action == "export_mp4":
            return self.export("mp4")
        elif action == "export_png":
            return self.export("png")
        elif action == "export_ply":
            return self.export("ply")
        return None

    def load_checkpoint(self, path) -> None:
        self.notice = f"loading {Path(path).name} ..."
        self.viewport_error = None
        self.worker.load(path)

    def export(self, kind: str, path=None):
        from pv3d_core.export import ClipSpec, ExportError, clip_settings

        G = self.worker.generator
        if G is None:
            self.message = "nothing to export: no model loaded"
            return None
        cfg = self.settings
        ws = self.worker.renderer.appearance_ws if self.worker.renderer is not None else None
        base = S.render_settings(self.st).with_(resolution=int(cfg.export_resolution))
        folder = Path(cfg.export_folder).expanduser()
        try:
            if kind == "mp4":
                n = max(2, int(cfg.export_frames))
                spec = ClipSpec(frames=n, camera=cfg.export_camera)
                cams = clip_settings(base, spec)
                length = S.timeline_length(self.st)
                todo = [S.render_settings(self.st, pos=length * i / (n - 1)).with_(
                    resolution=int(cfg.export_resolution), yaw=c.yaw, pitch=c.pitch) for i, c in enumerate(cams)]
                path = path or output_name(folder, base, "mp4", f"_{cfg.export_camera}")
                job = self.jobs.start("MP4", mp4_job(G, base, spec, cfg.export_fps, path, ws, settings_list=todo),
                                      self._job_done)
            elif kind == "png":
                path = path or output_name(folder, base, "png")
                from .jobs import job_renderer

                def body(job, G=G, base=base, path=path, ws=ws):
                    img = job_renderer(G, ws).render(base).numpy()
                    return png_job(img, path)(job)
                job = self.jobs.start("PNG", body, self._job_done)
            elif kind == "ply":
                path = path or output_name(folder, base, "ply")
                job = self.jobs.start("PLY", ply_job(G, base, path, appearance_ws=ws), self._job_done)
            else:
                raise ExportError(f"unknown export kind {kind!r}")
        except (ExportError, ValueError) as e:
            self.message = f"export failed: {e}"
            return None
        self.message = f"exporting {Path(path).name} ..."
        return job

    def _job_done(self, job) -> None:  # runs in the job's thread: only set plain attributes
        if job.error:
            self.message = f"{job.name} failed: {job.error}"
        elif job.cancelled:
            self.message = f"{job.name} cancelled"
        elif job.name == "portrait":
            tuned = getattr(job, "tuned_generator", None)
            if tuned is not None:
                self._portrait_base = (self.worker.generator, self.worker.model_name)
                self.worker.set_generator(tuned, name="portrait (pivotal-tuned)")
            self.worker.set_appearance(job.result)
            self._portrait_view = getattr(job, "portrait_view", None)
            self.portrait_active = True
            self.message = "portrait fitted: animating it"
        else:
            self.message = f"saved {job.result}"
            try:
                self.settings.export_folder = str(Path(job.result).parent)
            except TypeError:
                pass

    def apply_portrait_view(self) -> None:
        """After a photo is fitted, show it as it was taken: its camera, at t = 0 (then orbit/play freely)."""
        view, self._portrait_view = self._portrait_view, None
        if view is not None:
            yaw, pitch = (math.degrees(float(v)) for v in view)
            self.st.yaw = S.clamp(yaw, -S.YAW_LIMIT, S.YAW_LIMIT)
            self.st.pitch = S.clamp(pitch, -S.PITCH_LIMIT, S.PITCH_LIMIT)
            self.st.t = 0.0
            self.st.playing = False

    # ------------------------------------------------------------------ drag and drop
    def on_drop(self, window, paths) -> None:
        """glfw drop callback: queue; handled at the start of the next frame."""
        self._drops.extend(list(paths))

    def handle_drops(self) -> list[str]:
        outcomes = []
        drops, self._drops = self._drops, []
        for p in drops[:1]:   # one file at a time: the first one wins
            kind, why = D.classify(p)
            if kind == "checkpoint":
                self.load_checkpoint(p)
                outcomes.append("checkpoint")
            elif kind == "image":
                if not D.portrait_available():
                    self.viewport_error = D.PORTRAIT_MISSING
                    outcomes.append("portrait-missing")
                elif self.worker.generator is None:
                    self.viewport_error = "load a model before dropping a portrait"
                    outcomes.append("no-model")
                else:
                    self.jobs.start("portrait", portrait_job(p, self.worker.generator), self._job_done)
                    self.message = f"fitting portrait {Path(p).name} ..."
                    outcomes.append("portrait")
            else:
                self.viewport_error = f"cannot open the dropped file: {why}"
                outcomes.append("rejected")
        if len(drops) > 1:
            self.message = f"{len(drops)} files dropped: used the first one"
        return outcomes

    # ------------------------------------------------------------------ control socket (tests, scripts)
    def handle_control(self) -> None:
        if self.control is None:
            return
        for p in self.control.drain():
            cmd = p.msg.get("cmd")
            fn = getattr(self, f"control_{cmd}", None)
            if fn is None:
                p.finish({"ok": False, "error": f"unknown command {cmd!r}"})
                continue
            try:
                reply = fn(p, **{k: v for k, v in p.msg.items() if k != "cmd"})
                if reply is not None:
                    p.finish({"ok": True, **reply})
            except Exception as e:  # noqa: BLE001
                p.finish({"ok": False, "error": f"{type(e).__name__}: {e}"})

    def control_state(self, p):
        return {
            "state": asdict(self.st),
            "shown": asdict(self.shown_settings) if self.shown_settings is not None else None,
            "shown_preview": self.shown_preview,
            "settled": self.settled(),
            "error": self.viewport_error, "notice": self.notice, "message": self.message,
            "model": self.worker.model_name, "has_model": self.worker.has_model,
            "model_path": self.worker.model_path, "epoch": self.worker.epoch,
            "display_path": self.display.path, "display_reason": self.display.reason,
            "upload_ms": self.display.last_upload_ms,
            "ui_frame_parts": self.frame_parts, "ui_fps": self.ui_fps(), "ui_frame_ms": list(self.frame_ms), "frames_shown": self.frames_shown, "uploads": self.display.uploads,
            "rendered": self.worker.rendered, "prefetched": self.worker.prefetched,
            "cache_frames": len(self.worker.cache), "viewport": list(self.viewport_rect),
            "window": list(self.glfw.get_window_size(self.window)), "timings": self.timings,
            "status_line": self.status_line(), "jobs": [self._job_dict(j) for j in self.jobs.jobs],
            "worker_alive": self.worker.alive, "dropped_stale": self.gate.dropped,
        }

    @staticmethod
    def _job_dict(j):
        return {"name": j.name, "done": j.done, "progress": j.progress, "error": j.error,
                "cancelled": j.cancelled, "result": j.result if isinstance(j.result, str) else None,
                "output": j.output, "status": j.status}

    def control_set(self, p, **fields_):
        names = {f.name: f for f in fields(S.ViewerState)}
        for k, v in fields_.items():
            if k not in names:
                raise KeyError(f"no state field {k!r}")
            setattr(self.st, k, type(getattr(self.st, k))(v))
        return {"state": asdict(self.st)}

    def control_settings(self, p, **fields_):
        for k, v in fields_.items():
            if not hasattr(self.settings, k):
                raise KeyError(f"no setting {k!r}")
            setattr(self.settings, k, v)
        return {"settings": asdict(self.settings)}

    def control_action(self, p, name):
        r = self.do(name)
        return {"job": len(self.jobs.jobs) - 1 if r is not None else None}

    def control_screenshot(self, p, path):
        self._screenshots.append((path, p))
        return None   # answered after the frame is drawn

    def _finish_screenshot(self, img, path, p):
        from PIL import Image
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
        x, y, s, _ = self.viewport_rect
        vp = img[y:y + s, x:x + s]
        p.finish({"ok": True, "path": str(path), "shape": list(img.shape), "viewport": [x, y, s, s],
                  "std": float(img.std()), "viewport_std": float(vp.std()) if vp.size else 0.0})

    def control_frame(self, p, path=None):
        img = self.display.last_image
        if img is None:
            return {"shape": None}
        out = {"shape": list(img.shape), "mean": float(img.mean())}
        if path:
            from PIL import Image
            Image.fromarray(np.ascontiguousarray(img)).save(path)
            out["path"] = path
        return out

    def control_drop(self, p, paths):
        self.on_drop(self.window, paths)
        return {"outcomes": self.handle_drops(), "error": self.viewport_error}

    def control_export(self, p, kind="mp4", path=None, **cfg):
        for k, v in cfg.items():
            setattr(self.settings, k, v)
        job = self.export(kind, path)
        return {"job": None if job is None else len(self.jobs.jobs) - 1, "message": self.message}

    def control_jobs(self, p):
        return {"jobs": [self._job_dict(j) for j in self.jobs.jobs]}

    def control_break_generator(self, p, message="injected test fault"):
        """Patch the worker's generator so that every render raises (tests the error path)."""
        def do(w):
            G = w.renderer.G

            def boom(*a, **k):
                raise RuntimeError(message)
            G._orig_planes = getattr(G, "_orig_planes", G.planes)
            G.planes = boom
            w.renderer.clear_cache()
            w.cache.clear()
            return "generator patched to fail"
        self.worker.command(do)
        self.last_requested = None
        return {}

    def control_fix_generator(self, p):
        def do(w):
            G = w.renderer.G
            if hasattr(G, "_orig_planes"):
                G.planes = G._orig_planes
                del G._orig_planes
            return "generator restored"
        self.worker.command(do)
        self.last_requested = None
        return {}

    def control_quit(self, p):
        self._quit = True
        return {}


def missing_model_notice(path) -> str:
    where = f" ({path})" if path else ""
    return ("No model loaded: the embedded default checkpoint is missing" + where + ".\n"
            "Get one: train it (see README.md), or convert an official PV3D checkpoint with "
            "`pv3d convert official.ckpt model.safetensors`.\n"
            "Then start `pv3d-viewer --ckpt model.safetensors`, set $PV3D_DEFAULT_CKPT, or drop the "
            "checkpoint file onto this window.")
