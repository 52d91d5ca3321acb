"""The commands of the test/automation control socket (:mod:`.control` carries them), run on the UI
thread against the running app through the same code paths as the widgets and callbacks.

Fault injection (``break_generator`` / ``fix_generator``, which patch the model to fail every render;
``slow_render``, which makes every frame take longer, as a CPU shared with another job does) exists only when the viewer was started with its hidden ``--control-test-faults`` flag: without it
those commands are unknown, like any other name.
"""
from __future__ import annotations

import time
import typing
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from pv3d_core.errors import one_line

from . import state as S


# commands that only read: they do not make the window draw a frame
READ_ONLY = frozenset({"state", "jobs"})


class ControlCommands:
    def __init__(self, app, server, test_faults: bool = False):
        self.app = app
        self.server = server
        self.commands = {name[len("cmd_"):]: getattr(self, name) for name in dir(self) if name.startswith("cmd_")}
        if test_faults:
            faults = FaultInjection(app)
            self.commands.update(break_generator=faults.break_generator, fix_generator=faults.fix_generator,
                                 slow_render=faults.slow_render)
        self._screenshots: list = []

    # ------------------------------------------------------------------ dispatch (UI thread, once a frame)
    def handle(self) -> int:
        """Run the commands that came in; returns how many of them may change what is shown."""
        acting = 0
        for p in self.server.drain():
            cmd = p.msg.get("cmd")
            acting += cmd not in READ_ONLY
            fn = self.commands.get(cmd)
            if fn is None:
                p.finish({"ok": False, "error": f"unknown command {cmd!r}"})
                continue
            try:
                reply = fn(p, **{k: v for k, v in p.msg.items() if k != "cmd"})
                if reply is not None:
                    p.finish({"ok": True, **reply})
            except Exception as e:  # noqa: BLE001 - the caller sees the error; the app goes on
                p.finish({"ok": False, "error": f"{type(e).__name__}: {one_line(e)}"})
        return acting

    @property
    def wants_screenshot(self) -> bool:
        return bool(self._screenshots)

    def take_screenshots(self, read) -> None:
        """After the frame is drawn: ``read()`` gives the framebuffer (H, W, 3)."""
        if not self._screenshots:
            return
        img = read()
        for path, pending in self._screenshots:
            self._finish_screenshot(img, path, pending)
        self._screenshots = []

    # ------------------------------------------------------------------ commands
    def cmd_state(self, p):
        app = self.app
        from .widgets.base import TABS

        return {
            "state": asdict(app.st),
            "shown": asdict(app.shown_settings) if app.shown_settings is not None else None,
            "shown_preview": app.shown_preview,
            "settled": app.settled(),
            "error": app.viewport_error, "notice": app.notice, "message": app.message,
            "model": app.worker.model_name, "has_model": app.worker.has_model,
            "model_path": app.worker.model_path, "epoch": app.worker.epoch,
            "display_path": app.display.path, "display_reason": app.display.reason,
            "upload_ms": app.display.last_upload_ms,
            "ui_frame_parts": app.frame_parts, "ui_frames_drawn": app.frames_drawn, "ui_fps": app.ui_fps(),
            "ui_frame_ms": list(app.frame_ms),
            "frames_shown": app.frames_shown, "uploads": app.display.uploads,
            "rendered": app.worker.rendered, "prefetched": app.worker.prefetched,
            "render_ms": app.worker.render_s * 1e3,
            "cache_frames": len(app.worker.cache), "viewport": list(app.viewport_rect),
            "window": list(app.window_size()), "timings": app.timings,
            "status_line": app.status_line(), "jobs": [job_dict(j) for j in app.jobs.jobs],
            "worker_alive": app.worker.alive, "dropped_stale": app.gate.dropped,
            # issue 14: which volume renderer runs, and what the last frame ran
            "kernels": app.worker.kernels, "kernel_path": app.worker.last_path,
            # the UI: tabs, where named items were drawn, what is greyed out or out of range
            "tab": app.ui.tab, "tabs": list(TABS), "widgets": app.ui.rects, "tooltip": app.ui.tooltip,
            "disabled_controls": list(app.ui.disabled), "out_of_range": list(app.ui.out_of_range),
            "panel_overflow": app.ui.panel_overflow, "status_overflow": app.ui.status_overflow,
            "perf_open": app.ui.perf_open, "dialogs_open": len(app.dialogs.pending),
            "depth_range": list(app.depth_range) if app.depth_range else None,
            "playback": app.playback.stats(),
            "portrait_active": app.portrait_active, "portrait_name": app.actions.portrait_name,
            "keyframes": [asdict(k) for k in app.path_editor.keyframes],
            "path_previewing": app.path_editor.previewing, "path_file": app.path_editor.file,
            "recent": app.recent.of(), "settings": asdict(app.settings),
        }

    def cmd_set(self, p, **values):
        st = self.app.st
        types = typing.get_type_hints(S.ViewerState)
        names = {f.name for f in fields(S.ViewerState)}
        for k, v in values.items():
            if k not in names:
                raise KeyError(f"no state field {k!r}")
            want = types[k]
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, want) or (want is int and isinstance(v, bool)):
                raise TypeError(f"state field {k} is {want.__name__}, got {v!r}")
            setattr(st, k, v)
        return {"state": asdict(st)}

    def cmd_settings(self, p, **values):
        cfg = self.app.settings
        for k, v in values.items():
            if not hasattr(cfg, k):
                raise KeyError(f"no setting {k!r}")
            setattr(cfg, k, v)
        return {"settings": asdict(cfg)}

    def cmd_action(self, p, name, **kw):
        job = self.app.actions.do(name, **kw)
        return {"job": job.id if job is not None else None, "message": self.app.message,
                "error": self.app.viewport_error}

    def cmd_ui(self, p, tab=None, perf_open=None):
        """Open a tab (as a click on it does) or the performance panel."""
        from .widgets.base import TABS

        if tab is not None:
            if tab not in TABS:
                raise KeyError(f"no tab {tab!r}")
            self.app.ui.requested_tab = tab
        if perf_open is not None:
            self.app.ui.perf_open = bool(perf_open)
            self.app.settings.show_performance = bool(perf_open)
        return {}

    def cmd_screenshot(self, p, path):
        self._screenshots.append((path, p))
        return None   # answered after the frame is drawn

    def _finish_screenshot(self, img, path, p):
        from PIL import Image

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
        x, y, s, _ = self.app.viewport_rect
        vp = img[y:y + s, x:x + s]
        p.finish({"ok": True, "path": str(path), "shape": list(img.shape), "viewport": [x, y, s, s],
                  "std": float(img.std()), "viewport_std": float(vp.std()) if vp.size else 0.0})

    def cmd_frame(self, p, path=None):
        img = self.app.display.last_frame()
        if img is None:
            return {"shape": None}
        out = {"shape": list(img.shape), "mean": float(img.mean())}
        if path:
            from PIL import Image

            Image.fromarray(np.ascontiguousarray(img)).save(path)
            out["path"] = path
        return out

    def cmd_drop(self, p, paths):
        actions = self.app.actions
        actions.on_drop(None, paths)
        return {"outcomes": actions.handle_drops(), "error": self.app.viewport_error}

    def cmd_export(self, p, kind="mp4", path=None, **cfg):
        for k, v in cfg.items():
            setattr(self.app.settings, k, v)
        mesh = kind in ("ply", "obj", "glb")
        job = self.app.actions.exports.export("mesh" if mesh else kind, path, fmt=kind if mesh else None)
        return {"job": None if job is None else job.id, "message": self.app.message}

    def cmd_cancel_jobs(self, p):
        """Cancel every running job (as their Cancel buttons do)."""
        self.app.jobs.cancel_all()
        return {}

    def cmd_jobs(self, p):
        return {"jobs": [job_dict(j) for j in self.app.jobs.jobs]}

    def cmd_quit(self, p):
        self.app.request_quit()
        return {}


def job_dict(j) -> dict:
    return {"id": j.id, "name": j.name, "done": j.done, "progress": j.progress, "error": j.error,
            "cancelled": j.cancelled, "result": j.result if isinstance(j.result, str) else None,
            "output": j.output, "status": j.status, "threads": j.threads}


class FaultInjection:
    """Test-only commands (``--control-test-faults``): make the model fail every render, then mend it."""

    def __init__(self, app):
        self.app = app

    def break_generator(self, p, message="injected test fault"):
        def do(w):
            G = w.renderer.G

            def boom(*a, **k):
                raise RuntimeError(message)
            G._orig_planes = getattr(G, "_orig_planes", G.planes)
            G.planes = boom
            w.renderer.clear_cache()
            w.cache.clear()
            return "generator patched to fail"
        self.app.worker.command(do)
        self.app.last_requested = None
        return {}

    def fix_generator(self, p):
        def do(w):
            G = w.renderer.G
            if hasattr(G, "_orig_planes"):
                G.planes = G._orig_planes
                del G._orig_planes
            return "generator restored"
        self.app.worker.command(do)
        self.app.last_requested = None
        return {}

    def slow_render(self, p, ms=0):
        """Every frame of the render worker takes ``ms`` longer (0: back to normal)."""
        def do(w):
            r = w.renderer
            if "render" in vars(r):
                del r.render
            if ms > 0:
                plain = r.render

                def slow(s, plain=plain):
                    time.sleep(ms / 1000)
                    return plain(s)
                r.render = slow
            w.cache.clear()
            return f"renders slowed by {ms} ms"
        self.app.worker.command(do)
        self.app.last_requested = None
        return {}
