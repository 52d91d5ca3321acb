"""The window and its frame loop: glfw + imgui, the layout (control panel, viewport, status bar), and the
glue that asks the render worker for frames and shows its results.

What the user asks for is carried out by :class:`viewer.actions.Actions`; the widgets live in
:mod:`viewer.widgets` (one module each), the viewport and status bar in :mod:`viewer.viewport`, the
playback clock in :mod:`viewer.playback`; the optional test/automation socket in
:mod:`viewer.control_commands`.
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
from .cpu_share import RENDER_THREADS, USER_ACTIVE, use_threads
from .dialogs import Dialogs
from .jobs import JobManager
from .messages import EXIT_USAGE, NO_DISPLAY, missing_model_notice
from .path_editor import PathEditor
from .perf import PerfHistory
from .playback import Playback
from .recent import RecentFiles

PANEL_WIDTH = 392
STATUS_HEIGHT = 44             # two lines: what runs and how fast, then the last message
PREVIEW_HOLD_S = 0.25          # input pause after which the full frame replaces the preview
JOB_REDRAW_S = 0.1             # while only a background job runs, look at its progress this often
INPUT_TAIL_S = 1.0             # after an input event, draw every loop turn this long (imgui's hover delays)
IDLE_REDRAW_S = 1.0            # with nothing changing, draw once a second anyway (status bar figures)
PROGRESS_REDRAW_S = 0.5        # a job's progress bar and label alone redraw at most this often

log = logging.getLogger(__name__)


def font_path() -> Path | None:
    """Roboto, shipped inside imgui-bundle (nothing is fetched at run time)."""
    import imgui_bundle

    p = Path(imgui_bundle.__file__).parent / "assets" / "fonts" / "Roboto" / "Roboto-Regular.ttf"
    return p if p.exists() else None


class ViewerApp:
    def __init__(self, args):
        self.args = args
        from .widgets.base import TABS, UIState, choice

        self.settings, warn = settings_store.load()
        self.message = warn or ""
        self.settings_note = warn         # kept in the status bar past the first model's message
        self.st = S.ViewerState(seed=max(0, args.seed),
                                playback_mode=choice(self.settings.playback_mode, S.PLAYBACK_MODES, "realtime"))
        if args.resolution:
            self.st.resolution = args.resolution
        self.ui = UIState(perf_open=bool(self.settings.show_performance))
        self.ui.requested_tab = choice(self.settings.panel_tab, TABS, TABS[0])
        self.recent = RecentFiles().load()
        if self.recent.warning and not self.message:
            self.message = self.recent.warning
        self.dialogs = Dialogs()
        self.path_editor = PathEditor()
        self.playback = Playback()
        self.perf = PerfHistory()
        self.depth_range = None
        self.jobs = JobManager()
        self.actions = Actions(self)
        self.portrait_active = False
        self.viewport_error: str | None = None   # last render / load error, shown in the viewport
        self.notice: str | None = None           # e.g. "no model loaded: ..."
        self.shown_settings = None
        self.shown_epoch = -1             # the worker's epoch (model and latent) of the frame on screen
        self.shown_preview = False
        self.last_result_settings = None
        self.last_requested = None
        self.last_input = 0.0             # last viewport interaction (previews while dragging)
        self.last_event = 0.0             # last input event of any kind, or a script's command
        self.results_seen = 0             # worker results taken
        self.frames_drawn = 0
        self._drawn_state: tuple | None = None
        self._drawn_progress: tuple | None = None
        self.ui_dt = []
        self.frame_ms = []
        self.frame_parts: dict = {}       # EMA of the UI frame's parts, ms
        self._prefetching = False
        self._perf_seen = 0
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
        from imgui_bundle import imgui
        from imgui_bundle.python_backends.glfw_backend import GlfwRenderer

        from .display import Display
        from .worker import RenderWorker, ResultGate

        try:
            from pv3d_core.device import pick_device

            device = pick_device(self.args.device)
            if self.args.control_socket:      # opened before any window or thread: a bad path exits cleanly
                from .control import ControlServer

                self.control = ControlServer(self.args.control_socket)
        except UserError as e:
            print(f"pv3d-viewer: error: {one_line(e)}", file=sys.stderr)
            return EXIT_USAGE
        if not glfw.init():
            print(NO_DISPLAY.format(why="glfw could not initialise"), file=sys.stderr)
            self._close_control()
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
            self._close_control()
            return EXIT_USAGE
        glfw.make_context_current(self.window)
        glfw.swap_interval(0)   # the loop caps itself at 60 fps; vsync under Xvfb/llvmpipe only adds latency

        # the render thread and the UI share the CPU cores (cpu_share: jobs take what is left)
        if device.type == "cpu":
            use_threads(RENDER_THREADS)

        imgui.create_context()
        from imgui_bundle import implot
        implot.create_context()
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
        if self.control is not None:
            from .control_commands import ControlCommands

            self.control_commands = ControlCommands(self, self.control, test_faults=self.args.control_test_faults)

        from .widgets import Panels
        self.panels = Panels()
        self._watch_input()
        last_draw = last_turn = time.perf_counter()
        try:
            while not glfw.window_should_close(self.window) and not self._quit:
                animating = bool(self.st.playing or self.path_editor.previewing
                                 or (self.control_commands is not None and self.control_commands.wants_screenshot)
                                 or time.perf_counter() - self.last_input < PREVIEW_HOLD_S + 0.1)
                if animating:
                    glfw.poll_events()
                elif not self.worker.idle():
                    # a render is under way: wake for input at once, else look for its result every
                    # 20 ms, leaving the CPU to the render thread in between
                    glfw.wait_events_timeout(0.02)
                elif self.jobs.active():
                    # a portrait fit or an export runs on the CPU the UI would take: look at its
                    # progress ~10 times a second (input still wakes the loop at once)
                    glfw.wait_events_timeout(JOB_REDRAW_S)
                else:
                    glfw.wait_events_timeout(0.05)
                now = time.perf_counter()
                self.poll()
                # a background job computes with one thread while the user interacts (cpu_share)
                if animating or now - self.last_event < INPUT_TAIL_S:
                    USER_ACTIVE.set()
                else:
                    USER_ACTIVE.clear()
                if not (animating or self.needs_redraw(now, last_draw)):
                    last_turn = now
                    continue
                # dt: since the last loop turn (playback and a path preview, which use it, draw every turn)
                dt, last_turn = now - last_turn, now
                last_draw = now
                if animating:   # idle frames wait for events: their spacing is not a frame rate
                    self.ui_dt = (self.ui_dt + [dt])[-120:]
                self.draw(dt)
                self.frames_drawn += 1
                self._drawn_state, self._drawn_progress = self.visible_state(), self.job_progress()
                self.frame_ms = (self.frame_ms + [(time.perf_counter() - now) * 1e3])[-120:]
                self.perf.add("ui", self.frame_ms[-1])
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
            self.settings.panel_tab = self.ui.tab
            self.settings.show_performance = bool(self.ui.perf_open)
            self.settings.playback_mode = self.st.playback_mode
            settings_store.save(self.settings)
        except Exception as e:  # noqa: BLE001 - leaving must not fail
            print(f"pv3d-viewer: warning: could not save settings: {one_line(e)}", file=sys.stderr)
        self.dialogs.cancel_all()
        self.jobs.cancel_all()
        self.worker.stop()
        self.jobs.join_all(30)
        self._close_control()
        self.display.close()
        if self.cpp_renderer:
            self.imgui.backends.opengl3_shutdown()
        from imgui_bundle import implot
        implot.destroy_context()
        self.impl.shutdown()
        glfw.terminate()

    def _close_control(self) -> None:
        if self.control is not None:
            self.control.close()

    # ------------------------------------------------------------------ redraw on demand
    def _watch_input(self) -> None:
        """Note the time of every input event (chained after imgui's own callbacks): the loop draws
        for :data:`INPUT_TAIL_S` after one."""
        glfw = self.glfw

        def noted(setter):
            previous = None

            def cb(*a):
                self.last_event = time.perf_counter()
                if previous is not None:
                    previous(*a)
            previous = setter(self.window, cb)

        for setter in (glfw.set_key_callback, glfw.set_char_callback, glfw.set_cursor_pos_callback,
                       glfw.set_mouse_button_callback, glfw.set_scroll_callback, glfw.set_window_size_callback,
                       glfw.set_framebuffer_size_callback, glfw.set_window_refresh_callback,
                       glfw.set_window_focus_callback, glfw.set_cursor_enter_callback):
            noted(setter)

    def visible_state(self) -> tuple:
        """What the window shows that can change without input: a new frame, a message, a model, a
        job's progress, a dialog, a result taken from the worker. A frame is drawn when it changes
        (input and scripts' commands count through :attr:`last_event`)."""
        w = self.worker
        return (self.results_seen, self.display.uploads, self.frames_shown, w.epoch, w.model_name, self.message,
                self.notice, self.viewport_error, len(self.dialogs.pending), self.portrait_active,
                self.last_requested is None, tuple((j.id, j.done, j.error) for j in self.jobs.jobs))

    def job_progress(self) -> tuple:
        """The jobs' progress bars and labels: they change with every step of a fit (several a second)."""
        return tuple((j.status, round(j.progress, 3)) for j in self.jobs.jobs)

    def needs_redraw(self, now: float, last_draw: float) -> bool:
        """Draw only when something changed, for a while after input (imgui's hover delays and
        tooltips), while text is typed, and once a second regardless; a job's progress alone at most
        every :data:`PROGRESS_REDRAW_S`. An idle window (or one beside a portrait fit) then costs the CPU
        almost nothing: under a software OpenGL (Mesa's llvmpipe) each frame is ~20-30 ms of both cores."""
        return (self.visible_state() != self._drawn_state or now - self.last_event < INPUT_TAIL_S
                or now - last_draw >= IDLE_REDRAW_S or self.imgui.get_io().want_text_input
                or (now - last_draw >= PROGRESS_REDRAW_S and self.job_progress() != self._drawn_progress))

    # ------------------------------------------------------------------ per frame
    def poll(self) -> None:
        """Every loop turn, drawn or not: what the control socket, drops, dialogs, jobs and the render
        worker have for the UI thread."""
        if self.control_commands is not None and self.control_commands.handle():
            self.last_event = time.perf_counter()       # a script acting for the user
        self.guarded("a drop", self.actions.handle_drops)
        self.guarded("a file dialog", self.dialogs.poll)
        self.guarded("a finished job", self.jobs.collect)   # completions run here, on the UI thread
        self.collect_results()             # includes the texture upload of a new frame
        for when, ms, timings in self.worker.drain_timings():
            self.perf.add_render(ms, timings, when)
        self.actions.update_fit_preview()  # a running portrait fit's newest state, shown live
        self.actions.apply_portrait_view()

    def draw(self, dt: float) -> None:
        imgui, gl, glfw = self.imgui, self.gl, self.glfw
        t0 = time.perf_counter()
        self.impl.process_inputs()
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
        for k, v in (("inputs", t1 - t0), ("ui", t2 - t1), ("gl", t3 - t2), ("swap", t4 - t3)):
            self.frame_parts[k] = 0.9 * self.frame_parts.get(k, v * 1e3) + 0.1 * v * 1e3

    def shortcuts_and_schedule(self, dt: float) -> None:
        self.shortcuts()
        self.schedule(dt)

    def collect_results(self) -> None:
        for r in self.worker.poll():
            self.results_seen += 1
            if r.kind == "model":
                if r.error:
                    self.viewport_error = f"could not load the model: {r.error}"
                    # the "loading ..." notice goes; the model shown before stays (or says there is none)
                    self.notice = None if self.worker.has_model else missing_model_notice(None)
                    self.last_requested = None
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
            if r.kind == "command":         # its message is the worker's; the user's come from actions
                if r.error:
                    self.viewport_error = r.error
                self.last_requested = None
                continue
            if not self.gate.accept(r, self.worker.epoch):
                continue
            self.last_result_settings = r.settings
            if r.error:
                self.viewport_error = f"render failed: {r.error}"
                continue
            self.viewport_error = None
            self.show((r.image, r.ready), r.settings, r.timings, r.info)
            self.render_times = (self.render_times + [time.perf_counter()])[-30:]
            if self.st.playing:
                self.playback.note_shown()

    def show(self, frame, settings, timings=None, info=None) -> None:
        """``frame``: (RGBA image, ready event or None), as results and the frame cache hold them."""
        image, ready = frame
        self.display.upload(image, ready)
        self.shown_settings = settings
        self.shown_epoch = self.worker.epoch
        self.shown_preview = settings.neural_resolution is not None
        if timings:
            self.timings = dict(timings)
        info = info if info is not None else self.worker.frame_info(settings)
        self.depth_range = info.get("depth_range")
        self.frames_shown += 1

    def shown_now(self):
        """The settings of the frame on screen if it belongs to the worker's current model and latent,
        else None: after a new epoch (a live state of a fit, a portrait, a new model) the same settings
        are a different picture."""
        return self.shown_settings if self.shown_epoch == self.worker.epoch else None

    def schedule(self, dt: float) -> None:
        """Decide what to show next; ask the worker only when the wanted settings change."""
        w = self.worker
        if not w.has_model:
            return
        st = self.st
        self.path_editor.step(st, dt)            # a camera path preview moves the camera in real time
        interacting = self.panels.interacting or (time.perf_counter() - self.last_input) < PREVIEW_HOLD_S
        if self.panels.interacting:
            self.last_input = time.perf_counter()
        if st.playing:
            step = self.playback.step(st, dt, w.cached, w.render_s, self.shown_now())
            if step.show is not None:
                frame, want = step.show
                self.gate.shown_gen = w.generation
                self.last_result_settings = want
                self.show(frame, want)
                self.render_times = (self.render_times + [time.perf_counter()])[-30:]
            self.buffering = step.late
            if step.request is not None and self.last_requested != step.request:
                w.request(step.request)
                self.last_requested = step.request
            w.prefetch(step.prefetch)
            self._prefetching = True
            return
        self.playback.stop()
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
            if self.shown_now() != full:    # a new epoch's frame (a fit's live state) at the same view too
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
        return (not self.st.playing and not self.path_editor.previewing and self.worker.idle()
                and self.last_result_settings == full
                and time.perf_counter() - self.last_input >= PREVIEW_HOLD_S and not self.worker.results_waiting())

    # ------------------------------------------------------------------ UI
    def draw_ui(self) -> None:
        from . import viewport
        from .widgets import perf as perf_panel

        imgui = self.imgui
        io = imgui.get_io()
        W, H = io.display_size.x, io.display_size.y
        self.ui.new_frame()
        imgui.set_next_window_pos(imgui.ImVec2(0, 0))
        imgui.set_next_window_size(imgui.ImVec2(W, H))
        flags = (imgui.WindowFlags_.no_title_bar | imgui.WindowFlags_.no_resize | imgui.WindowFlags_.no_move
                 | imgui.WindowFlags_.no_collapse | imgui.WindowFlags_.no_bring_to_front_on_focus
                 | imgui.WindowFlags_.no_scrollbar)
        imgui.push_style_var(imgui.StyleVar_.window_padding, imgui.ImVec2(6, 6))
        imgui.begin("PV3D Studio##main", None, flags)
        actions = self.panels.draw(self.st, self, PANEL_WIDTH, -STATUS_HEIGHT - 4)
        imgui.same_line()
        imgui.begin_child("viewport", imgui.ImVec2(0, -STATUS_HEIGHT - 4), 0,
                          imgui.WindowFlags_.no_scrollbar | imgui.WindowFlags_.no_scroll_with_mouse)
        viewport.draw(self)
        imgui.end_child()
        viewport.draw_status(self, STATUS_HEIGHT)
        imgui.end()
        imgui.pop_style_var()
        perf_panel.draw(self)
        self.dialogs.draw()
        for a in actions:
            name, kw = (a, {}) if isinstance(a, str) else a
            self.guarded(name.replace("_", " "), self.actions.do, name, **kw)

    def status_line(self) -> str:
        """The status bar's text (both lines), as drawn."""
        from .viewport import status_lines

        return "  |  ".join(x for x in status_lines(self) if x)

    def ui_fps(self) -> float:
        dts = sorted(self.ui_dt[-60:])
        return 1.0 / dts[len(dts) // 2] if dts and dts[len(dts) // 2] > 0 else 0.0

    def shortcuts(self) -> None:
        imgui = self.imgui
        io = imgui.get_io()
        if io.want_text_input or self.dialogs.open_now:
            return
        if imgui.is_key_pressed(imgui.Key.space, False):
            self.actions.do("toggle_play")
        if imgui.is_key_pressed(imgui.Key.r, False):
            self.actions.do("reset_view")
        if imgui.is_key_pressed(imgui.Key.e, False):
            self.actions.do("export_mp4")
        if imgui.is_key_pressed(imgui.Key.o, False):
            self.actions.do("open_dialog", kind="any")
        if imgui.is_key_pressed(imgui.Key.k, False):
            self.actions.do("add_keyframe")
            self.ui.requested_tab = "Path"
        if imgui.is_key_pressed(imgui.Key.p, False):
            self.actions.do("toggle_perf")

    # ------------------------------------------------------------------ errors and the rest
    def guarded(self, what: str, fn, *args, **kw) -> bool:
        """``fn(*args)`` so that no failure ends the app: a user error shows its message in the viewport;
        anything else is a bug, shown with its type and logged with its traceback and a line on how to
        report it. Returns False when it failed."""
        try:
            fn(*args, **kw)
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
