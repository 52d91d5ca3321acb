"""pv3d-viewer: window, panels, input, and the loop that ties the UI state to the render worker.

The main thread owns the window, imgui and the GL texture; the render worker (viewer/worker.py) owns
the model. Widgets write :class:`~viewer.state.ViewerState`; each frame the state's render settings
are compared with the last request and, when they changed, a new request goes to the worker.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

EXIT_USAGE = 2
CHECKPOINT_EXT = (".safetensors", ".ckpt", ".pt", ".pth")
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
PANEL_W = 390
STATUS_H = 28
REFINE_AFTER_S = 0.15     # full-quality frame once input pauses this long


def _no_display_message() -> str:
    return ("pv3d-viewer: no display found (DISPLAY / WAYLAND_DISPLAY unset or unusable). "
            "Render from the command line instead, e.g.  pv3d generate --seeds 0-3 -o out.mp4")


def build_parser():
    p = argparse.ArgumentParser(prog="pv3d-viewer", description="PV3D Studio desktop viewer")
    p.add_argument("--ckpt", help="checkpoint to open (ours .safetensors or official .ckpt); default: the "
                                  "embedded default model")
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), help="window size")
    p.add_argument("--threads", type=int, help="render threads (default: cores - 1)")
    p.add_argument("--script", help=argparse.SUPPRESS)   # test hook: a JSON list of UI steps
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        print(_no_display_message(), file=sys.stderr)
        return EXIT_USAGE
    try:
        import glfw
    except Exception as e:
        print(f"pv3d-viewer: the GUI libraries are missing ({e}); install with  pip install -e \".[viewer]\"",
              file=sys.stderr)
        return EXIT_USAGE
    if not glfw.init():
        print(_no_display_message(), file=sys.stderr)
        return EXIT_USAGE
    app = None
    try:
        app = App(args)
        return app.run()
    finally:
        if app is not None:
            app.shutdown()
        glfw.terminate()


class App:
    def __init__(self, args):
        import glfw
        import OpenGL.GL as gl
        from imgui_bundle import imgui
        from imgui_bundle.python_backends.glfw_backend import GlfwRenderer

        from . import settings_store
        from .display import Display
        from .state import ViewerState
        from .worker import RenderWorker

        self.glfw, self.gl, self.imgui = glfw, gl, imgui
        self.store = settings_store
        self.prefs = settings_store.load()
        w, h = args.size or self.prefs.get("window") or (1280, 800)
        glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
        glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
        glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
        glfw.window_hint(glfw.OPENGL_FORWARD_COMPAT, gl.GL_TRUE)
        self.window = glfw.create_window(int(w), int(h), "PV3D Studio", None, None)
        if not self.window:
            raise SystemExit(_no_display_message())
        glfw.make_context_current(self.window)
        glfw.swap_interval(1)
        imgui.create_context()
        imgui.get_io().set_ini_filename("")
        self._load_font()
        self.impl = GlfwRenderer(self.window)
        self._drops: list[list[str]] = []
        glfw.set_drop_callback(self.window, lambda _w, paths: self._drops.append(list(paths)))
        self.display = Display()
        self.state = ViewerState()
        self.worker = RenderWorker(threads=args.threads)
        self.generation = 0
        self.requested = None
        self.shown_generation = -1
        self.shown = None             # last shown Result
        self.error: str | None = None
        self.message = ""
        self.jobs = []
        self.last_input = 0.0
        self.frame_times: list[float] = []
        self.render_times: list[float] = []
        self.loading = False
        self.model_path: str | None = None
        self.script = _Script(args.script, self) if args.script else None
        self.export = {"frames": 64, "fps": 25, "camera": 0, "resolution": 0,
                       "folder": self.prefs.get("export_folder") or str(Path.home() / "pv3d-exports")}
        self._open_initial(args.ckpt)

    # ------------------------------------------------------------------ set-up
    def _load_font(self):
        from imgui_bundle import imgui

        try:
            import imgui_bundle

            font = Path(imgui_bundle.__file__).parent / "assets" / "fonts" / "DroidSans.ttf"
            if font.is_file():
                imgui.get_io().fonts.add_font_from_file_ttf(str(font), 16.0)
        except Exception:
            pass   # imgui's built-in font

    def _open_initial(self, ckpt):
        from pv3d_core.paths import default_checkpoint

        if ckpt:
            self.open_checkpoint(ckpt)
            return
        default = default_checkpoint()
        if default.is_file():
            self.open_checkpoint(str(default))
        else:
            self.error = (f"the embedded default model {default.name} is missing.\nDrop a checkpoint "
                          f"(.safetensors or official .ckpt) on this window, or start with --ckpt PATH.")

    def open_checkpoint(self, path: str):
        self.generation += 1
        self.loading = True
        self.model_path = path
        self.message = f"loading {os.path.basename(path)} ..."
        self.worker.load(self.generation, path)
        self.requested = None

    # ------------------------------------------------------------------ drops
    def handle_drop(self, paths: list[str]):
        for p in paths:
            ext = os.path.splitext(p)[1].lower()
            if ext in CHECKPOINT_EXT:
                self.open_checkpoint(p)
            elif ext in IMAGE_EXT:
                self.start_portrait(p)
            else:
                self.message = (f"cannot open {os.path.basename(p)}: drop a checkpoint (.safetensors, .ckpt) "
                                f"or a portrait photo (.png, .jpg)")

    def start_portrait(self, path: str):
        try:
            from pv3d_core import portrait
        except ImportError:
            self.message = "portrait animation is not supported yet in this build (pv3d_core.portrait is missing)"
            return
        if self.worker.renderer is None:
            self.message = "load a model first, then drop the photo"
            return
        from .jobs import Job

        G = self.worker.renderer.G

        def run(job):
            return portrait.prepare_and_invert(path, G, progress=job.set_progress, cancel=job.cancel)

        job = Job("portrait", run)
        job.on_done = self._portrait_done
        self.jobs.append(job)
        self.message = f"inverting {os.path.basename(path)} ..."

    def _portrait_done(self, job):
        res = job.result
        self.generation += 1

        def apply(renderer):
            renderer.set_appearance(res.ws)
            return "portrait loaded: drag to orbit, play the timeline to animate it"

        self.worker.run_task(self.generation, apply)
        self.requested = None

    # ------------------------------------------------------------------ exports
    def export_mp4(self):
        from .jobs import default_name, export_mp4

        if self.worker.renderer is None:
            self.message = "nothing to export: no model loaded"
            return
        cam = ("fixed", "orbit", "yaw")[self.export["camera"]]
        s = self.state.settings(preview=False).with_(resolution=self.export["resolution"] or None)
        path = default_name(self.export["folder"], "pv3d-clip", "mp4")
        self.jobs.append(export_mp4(self.worker.renderer, s, path, frames=int(self.export["frames"]),
                                    fps=float(self.export["fps"]), camera=cam))

    def export_png(self):
        from .jobs import default_name, export_png

        if self.shown is None or self.shown.image is None:
            self.message = "nothing to export yet"
            return
        self.jobs.append(export_png(self.shown.image, default_name(self.export["folder"], "pv3d-frame", "png")))

    def export_ply(self):
        from .jobs import default_name, export_ply

        if self.worker.renderer is None:
            self.message = "nothing to export: no model loaded"
            return
        self.jobs.append(export_ply(self.worker.renderer, self.state.settings(preview=False),
                                    default_name(self.export["folder"], "pv3d-mesh", "ply")))

    # ------------------------------------------------------------------ loop
    def run(self) -> int:
        glfw, gl, imgui = self.glfw, self.gl, self.imgui
        last = time.perf_counter()
        while not glfw.window_should_close(self.window):
            idle = not (self.state.playing or self.worker.busy or self.jobs or self.script
                        or self.requested != self._wanted())
            if idle:
                glfw.wait_events_timeout(1 / 30)
            else:
                glfw.poll_events()
            now = time.perf_counter()
            dt = now - last
            last = now
            self.frame_times = (self.frame_times + [dt])[-60:]
            while self._drops:
                self.handle_drop(self._drops.pop(0))
            self.impl.process_inputs()
            imgui.new_frame()
            self._keys()
            self.state.advance(dt)
            self._collect_results()
            self._update_jobs()
            self._request_frame(now)
            self._draw_ui()
            imgui.render()
            fw, fh = glfw.get_framebuffer_size(self.window)
            gl.glViewport(0, 0, fw, fh)
            gl.glClearColor(0.08, 0.08, 0.09, 1)
            gl.glClear(gl.GL_COLOR_BUFFER_BIT)
            self.impl.render(imgui.get_draw_data())
            if self.script is not None:
                if self.script.step():
                    glfw.set_window_should_close(self.window, True)
            glfw.swap_buffers(self.window)
        return self.script.exit_code if self.script is not None else 0

    def _wanted(self):
        interacting = self.state.interacting or (time.perf_counter() - self.last_input < REFINE_AFTER_S)
        return self.state.settings(preview=interacting)

    def _request_frame(self, now):
        if self.loading:
            return
        want = self._wanted()
        if want == self.requested:
            return
        self.requested = want
        self.generation += 1
        hit = self.worker.cached(want)
        if hit is not None:   # timeline frames rendered ahead: show at once
            from .worker import Result

            self._show(Result(self.generation, want, hit[0], hit[1], from_cache=True))
            if self.state.playing:
                self.worker.set_prefetch(self._prefetch())
            return
        self.worker.request(self.generation, want, prefetch=self._prefetch() if self.state.playing else ())

    def _prefetch(self):
        fps = 1 / max(1e-3, sum(self.frame_times) / max(1, len(self.frame_times)))
        return [s for s in self.state.upcoming(24, 1 / min(fps, 30)) if self.worker.cached(s) is None][:12]

    def _collect_results(self):
        for r in self.worker.poll():
            if r.message:
                self.message = r.message
                self.loading = False
                self.error = None
                self.requested = None
                continue
            if r.error:
                if r.generation >= self.shown_generation:
                    self.error = r.error
                    self.loading = False
                    self.shown_generation = r.generation
                continue
            if r.generation >= self.shown_generation:
                self._show(r)

    def _show(self, r):
        self.display.upload(r.image)
        self.shown = r
        self.shown_generation = r.generation
        self.error = None
        if not r.from_cache and r.timings:
            self.render_times = (self.render_times + [r.timings.get("total", 0.0)])[-20:]

    def _update_jobs(self):
        for j in list(self.jobs):
            if j.done:
                self.jobs.remove(j)
                if j.error:
                    self.message = f"{j.name}: {j.error}"
                else:
                    cb = getattr(j, "on_done", None)
                    if cb:
                        cb(j)
                    else:
                        self.message = f"{j.name} written: {j.result}"

    # ------------------------------------------------------------------ input
    def _keys(self):
        imgui = self.imgui
        io = imgui.get_io()
        if io.want_text_input:
            return
        if imgui.is_key_pressed(imgui.Key.space, False):
            self.state.playing = not self.state.playing
        if imgui.is_key_pressed(imgui.Key.r, False):
            self.state.reset_view()
        if imgui.is_key_pressed(imgui.Key.e, False):
            self.export_mp4()

    # ------------------------------------------------------------------ UI
    def _draw_ui(self):
        imgui = self.imgui
        io = imgui.get_io()
        W, H = io.display_size.x, io.display_size.y
        flags = (imgui.WindowFlags_.no_move | imgui.WindowFlags_.no_resize | imgui.WindowFlags_.no_collapse
                 | imgui.WindowFlags_.no_title_bar)
        imgui.set_next_window_pos(imgui.ImVec2(0, 0))
        imgui.set_next_window_size(imgui.ImVec2(PANEL_W, H - STATUS_H))
        imgui.begin("Controls", None, flags)
        from .panels import draw_controls

        draw_controls(self)
        imgui.end()
        imgui.set_next_window_pos(imgui.ImVec2(PANEL_W, 0))
        imgui.set_next_window_size(imgui.ImVec2(W - PANEL_W, H - STATUS_H))
        imgui.push_style_var(imgui.StyleVar_.window_padding, imgui.ImVec2(0, 0))
        imgui.begin("Viewport", None, flags | imgui.WindowFlags_.no_scrollbar | imgui.WindowFlags_.no_scroll_with_mouse)
        self._draw_viewport(W - PANEL_W, H - STATUS_H)
        imgui.end()
        imgui.pop_style_var()
        imgui.set_next_window_pos(imgui.ImVec2(0, H - STATUS_H))
        imgui.set_next_window_size(imgui.ImVec2(W, STATUS_H))
        imgui.begin("Status", None, flags | imgui.WindowFlags_.no_scrollbar)
        imgui.text(self.status_line())
        imgui.end()

    def _draw_viewport(self, vw, vh):
        imgui = self.imgui
        side = max(16, min(vw, vh) - 16)
        x0 = (vw - side) / 2
        y0 = (vh - side) / 2
        imgui.set_cursor_pos(imgui.ImVec2(x0, y0))
        if self.display.tex is not None:
            imgui.image(imgui.ImTextureRef(self.display.tex), imgui.ImVec2(side, side))
        imgui.set_cursor_pos(imgui.ImVec2(x0, y0))
        imgui.invisible_button("##viewport", imgui.ImVec2(side, side))
        io = imgui.get_io()
        active = imgui.is_item_active()
        if active and (io.mouse_delta.x or io.mouse_delta.y):
            self.state.orbit(io.mouse_delta.x, io.mouse_delta.y, side)
            self.last_input = time.perf_counter()
        self.state.interacting = active
        if imgui.is_item_hovered() and io.mouse_wheel:
            self.state.zoom(io.mouse_wheel)
            self.last_input = time.perf_counter()
        if self.error or self.loading or self.display.tex is None:
            imgui.set_cursor_pos(imgui.ImVec2(20, 20))
            if self.error:
                imgui.push_style_color(imgui.Col_.text, imgui.ImVec4(1.0, 0.45, 0.4, 1.0))
                imgui.text_wrapped(self.error)
                imgui.pop_style_color()
            elif self.loading:
                imgui.text(self.message)

    def status_line(self) -> str:
        ft = sorted(self.frame_times)[len(self.frame_times) // 2] if self.frame_times else 0
        fps = 1 / ft if ft else 0
        parts = [f"UI {fps:5.1f} fps"]
        if self.shown is not None and self.shown.timings:
            t = self.shown.timings
            stages = " ".join(f"{k} {v:.0f}" for k, v in t.items() if k != "total")
            parts.append(f"render {t.get('total', 0):.0f} ms ({stages})" + (" cached" if self.shown.from_cache else ""))
        parts.append(f"device {self.worker.device}")
        parts.append(f"display {self.display.path}")
        try:
            from pv3d_core.render import cuda_ops

            lp = cuda_ops.last_path()
            if lp:
                parts.append(f"renderer {lp.get('path', '?')}")
        except Exception:
            pass
        if self.worker.model_name:
            parts.append(self.worker.model_name)
        if self.message:
            parts.append(self.message)
        return "  |  ".join(p for p in parts if p)

    # ------------------------------------------------------------------ exit
    def shutdown(self):
        for j in self.jobs:
            j.cancel.set()
        self.worker.stop()
        for j in self.jobs:
            j.join(10)
        try:
            w, h = self.glfw.get_window_size(self.window)
            self.prefs["window"] = [int(w), int(h)]
        except Exception:
            pass
        self.prefs["export_folder"] = self.export["folder"]
        if self.model_path:
            self.prefs["last_checkpoint"] = self.model_path
        self.store.save(self.prefs)
        self.display.destroy()
        self.impl.shutdown()


class _Script:
    """Test hook: JSON steps run in the real loop (set state, drop files, export, screenshots, dumps)."""

    def __init__(self, path, app: App):
        self.steps = json.loads(Path(path).read_text())
        self.app = app
        self.i = 0
        self.t_step = time.perf_counter()
        self.exit_code = 0

    def _render_settled(self) -> bool:
        a = self.app
        return (not a.loading and a.requested is not None and a.requested == a._wanted()
                and a.shown_generation == a.generation and not a.worker.busy)

    def step(self) -> bool:
        a = self.app
        if self.i >= len(self.steps):
            return True
        s = self.steps[self.i]
        waited = time.perf_counter() - self.t_step
        done = True
        if "wait_render" in s:
            done = self._render_settled() or waited > s["wait_render"]
            if waited > s["wait_render"] and not self._render_settled():
                self.exit_code = 3
        elif "sleep" in s:
            done = waited >= s["sleep"]
        elif "wait_jobs" in s:
            done = not a.jobs or waited > s["wait_jobs"]
        elif "set" in s:
            for k, v in s["set"].items():
                if k.startswith("export."):
                    a.export[k[7:]] = v
                else:
                    setattr(a.state, k, v)
        elif "drop" in s:
            a.handle_drop(s["drop"])
        elif "export" in s:
            {"mp4": a.export_mp4, "png": a.export_png, "ply": a.export_ply}[s["export"]]()
        elif "break_model" in s:
            def broken(*_a, **_k):
                raise RuntimeError("injected failure (test)")

            r = a.worker.renderer
            r._saved_render_planes = r.G.render_planes
            r.G.render_planes = broken
            r.clear_cache()
            a.worker.cache.clear()
        elif "fix_model" in s:
            r = a.worker.renderer
            r.G.render_planes = r._saved_render_planes
            a.worker.cache.clear()
        elif "screenshot" in s:
            self._screenshot(s["screenshot"])
        elif "dump" in s:
            self._dump(s["dump"])
        elif "quit" in s:
            return True
        if done:
            self.i += 1
            self.t_step = time.perf_counter()
        return False

    def _screenshot(self, path):
        import numpy as np
        import OpenGL.GL as gl

        from pv3d_core.export import write_png

        fw, fh = self.app.glfw.get_framebuffer_size(self.app.window)
        gl.glPixelStorei(gl.GL_PACK_ALIGNMENT, 1)
        data = gl.glReadPixels(0, 0, fw, fh, gl.GL_RGB, gl.GL_UNSIGNED_BYTE)
        img = np.frombuffer(data, np.uint8).reshape(fh, fw, 3)[::-1]
        write_png(path, np.ascontiguousarray(img))

    def _dump(self, path):
        import hashlib

        a = self.app
        info = {"state": a.state.to_dict(), "error": a.error, "message": a.message,
                "generation": a.generation, "shown_generation": a.shown_generation,
                "model": a.worker.model_name, "display_path": a.display.path, "status": a.status_line(),
                "jobs": len(a.jobs), "texture": None, "settings": None}
        if a.display.tex is not None and a.shown is not None:
            px = a.display.read_back()
            info["texture"] = {"shape": list(px.shape), "md5": hashlib.md5(px.tobytes()).hexdigest(),
                               "mean": float(px.mean())}
            s = a.shown.settings
            info["settings"] = None if s is None else {k: getattr(s, k) for k in s.__dataclass_fields__}
        Path(path).write_text(json.dumps(info, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
