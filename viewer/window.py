"""The window and its frame loop: glfw + imgui, the viewport, the status line, and the glue that asks the
render worker for frames and shows its results.

What the user asks for is carried out by :class:`viewer.actions.Actions`; the widgets live in
:mod:`viewer.panels`; the optional test/automation socket in :mod:`viewer.control_commands`.
"""
from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path

from pv3d_core.errors import REPORT_BUG, UserError, one_line

from . import settings_store
from . import state as S
from .actions import Actions
from .jobs import JobManager
from .messages import EXIT_USAGE, NO_DISPLAY, missing_model_notice

PANEL_WIDTH = 380
STATUS_HEIGHT = 26
PREVIEW_HOLD_S = 0.25          # input pause after which the full frame replaces the preview
RENDER_AHEAD = 12              # playback frames rendered ahead of the playhead
JOB_REDRAW_S = 0.1             # while only a background job runs, redraw its progress this often

log = logging.getLogger(__name__)


def font_path() -> Path | None:
    """Roboto, shipped inside imgui-bundle (nothing is fetched at run time)."""
    import imgui_bundle

    p = Path(imgui_bundle.__file__).parent / "assets" / "fonts" / "Roboto" / "Roboto-Regular.ttf"
    return p if p.exists() else None


class ViewerApp:
    def __init__(self, args):
        self.args = args
        self.settings, warn = settings_store.load()
        self.message = warn or ""
        self.settings_note = warn         # kept in the status bar past the first model's message
        self.st = S.ViewerState(seed=max(0, args.seed))
        if args.resolution:
            self.st.resolution = args.resolution
        self.jobs = JobManager()
        self.actions = Actions(self)
        self.portrait_active = False
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
        self._quit = False
        self.control = None              # the control socket's server and commands (tests, scripts)
        self.control_commands = None

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
            from pv3d_core.device import pick_device

            device = pick_device(self.args.device)
        except UserError as e:
            print(f"pv3d-viewer: error: {one_line(e)}", file=sys.stderr)
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
        glfw.set_drop_callback(self.window, self.actions.on_drop)
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
        else:
            self.notice = notice
        if self.args.control_socket:
            from .control import ControlServer
            from .control_commands import ControlCommands

            self.control = ControlServer(self.args.control_socket)
            self.control_commands = ControlCommands(self, self.control, test_faults=self.args.control_test_faults)

        from .panels import Panels
        self.panels = Panels()
        last = time.perf_counter()
        try:
            while not glfw.window_should_close(self.window) and not self._quit:
                animating = bool(self.st.playing
                                 or (self.control_commands is not None and self.control_commands.wants_screenshot)
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
        except Exception as e:  # noqa: BLE001 - leaving must not fail
            print(f"pv3d-viewer: warning: could not save settings: {one_line(e)}", file=sys.stderr)
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
        if self.control_commands is not None:
            self.control_commands.handle()
        self.actions.handle_drops()
        self.guarded("a finished job", self.jobs.collect)   # completions run here, on the UI thread
        self.collect_results()             # includes the texture upload of a new frame
        self.actions.apply_portrait_view()
        t1 = time.perf_counter()
        if self.cpp_renderer:
            imgui.backends.opengl3_new_frame()
        imgui.new_frame()
        self.draw_ui()
        if not self.guarded("rendering", self.shortcuts_and_schedule, dt):   # e.g. settings the renderer refuses
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
        if self.control_commands is not None and self.control_commands.wants_screenshot:
            from .display import read_framebuffer
            self.control_commands.take_screenshots(lambda: read_framebuffer(fbw, fbh))
        t3 = time.perf_counter()
        glfw.swap_buffers(self.window)
        t4 = time.perf_counter()
        for k, v in (("inputs+results", t1 - t0), ("ui", t2 - t1), ("gl", t3 - t2), ("swap", t4 - t3)):
            self.frame_parts[k] = 0.9 * self.frame_parts.get(k, v * 1e3) + 0.1 * v * 1e3

    def shortcuts_and_schedule(self, dt: float) -> None:
        self.shortcuts()
        self.schedule(dt)

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
                    self.message = "; ".join(m for m in (r.message, self.settings_note) if m)
                    self.settings_note = None
                    if self.worker.model_path:       # a checkpoint, not a portrait's generator
                        self.actions.model_loaded()
                        self.settings.last_checkpoint = str(Path(self.worker.model_path).resolve())
                        try:
                            settings_store.save(self.settings)
                        except UserError as e:
                            self.message = f"could not remember the model: {one_line(e)}"
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
            self.show((r.image, r.ready), r.settings, r.timings)
            self.render_times = (self.render_times + [time.perf_counter()])[-30:]

    def show(self, frame, settings, timings=None) -> None:
        """``frame``: (RGBA image, ready event or None), as results and the frame cache hold them."""
        image, ready = frame
        self.display.upload(image, ready)
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
                    self.gate.shown_gen = w.generation
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
            self.gate.shown_gen = w.generation
            self.last_result_settings = full
            self.last_requested = want
            if self.shown_settings != full:
                self.show(img, full)
            return
        if interacting:
            img = w.cached(want)
            if img is not None:
                self.gate.shown_gen = w.generation
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
                and time.perf_counter() - self.last_input >= PREVIEW_HOLD_S and not self.worker.results_waiting())

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
            self.guarded(a, self.actions.do, a)

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
                 f"display {self.display.describe()}", f"cache {len(self.worker.cache)} frames"]
        if self.worker.backend:
            parts.append(f"volume rendering: {self.worker.backend}")
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
            self.actions.do("toggle_play")
        if imgui.is_key_pressed(imgui.Key.r, False):
            self.actions.do("reset_view")
        if imgui.is_key_pressed(imgui.Key.e, False):
            self.actions.do("export_mp4")

    # ------------------------------------------------------------------ errors and the rest
    def guarded(self, what: str, fn, *args) -> bool:
        """``fn(*args)`` so that no failure ends the app: a user error shows its message in the viewport;
        anything else is a bug, shown with its type and logged with its traceback and a line on how to
        report it. Returns False when it failed."""
        try:
            fn(*args)
            return True
        except UserError as e:
            self.viewport_error = f"{what}: {one_line(e)}"
        except Exception as e:  # noqa: BLE001 - never fatal; the bug goes to the log
            log.error("%s failed:\n%s\n%s", what, traceback.format_exc().rstrip(), REPORT_BUG)
            self.viewport_error = f"{what} failed: {type(e).__name__}: {one_line(e)} (details in the terminal)"
        return False

    def window_size(self) -> tuple[int, int]:
        return tuple(self.glfw.get_window_size(self.window))

    def request_quit(self) -> None:
        self._quit = True
