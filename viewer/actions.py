"""What the user asks for, carried out: opening files (models, photos, portraits, camera paths), portraits,
drops, the camera path's edits; exports are in :mod:`viewer.exports`.

:class:`Actions` works on the app's state (its worker, jobs, settings, messages); the widgets, the
keyboard shortcuts, the drop callback, the file dialogs and the control socket all come here, so every
path runs the same code. Everything here runs on the UI thread: job completions too
(:meth:`JobManager.collect` calls them from the frame loop), so they may touch the app freely.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from pv3d_core.errors import UserError

from . import drop as D
from . import state as S
from .exports import Exports
from .jobs import open_portrait_job, portrait_job, save_portrait_job
from .messages import missing_model_notice

log = logging.getLogger(__name__)


@dataclass
class PortraitBase:
    """The model a portrait was fitted on (or opened over): restored by "back to seeds"."""
    generator: object
    name: str
    path: str | None = None


class Actions:
    def __init__(self, app):
        self.app = app
        self.exports = Exports(app)
        self.portrait_base: PortraitBase | None = None   # set while a portrait is shown
        self.portrait = None           # the pv3d_core.portrait.Portrait shown (to save it)
        self.portrait_name: str | None = None
        self.portrait_view = None      # (yaw, pitch) radians of a portrait's photo, applied once on the UI thread
        self.fit_job = None            # the portrait fit whose live states are shown
        self._drops: list = []

    # ------------------------------------------------------------------ buttons and keys
    def do(self, action: str, **kw):
        """Carry out ``action`` (a widget's, a key's or the control socket's); returns a job if it started one."""
        app, st = self.app, self.app.st
        if action == "toggle_play":
            st.playing = not st.playing
            if not st.playing:
                app.worker.prefetch([])
        elif action == "reset_view":
            S.reset_view(st)
            app.path_editor.previewing = False
        elif action == "load_default":
            from pv3d_core.paths import default_checkpoint
            p = default_checkpoint()
            if p.exists():
                self.load_checkpoint(p)
            else:
                app.viewport_error = missing_model_notice(p)
        elif action == "clear_portrait":
            self.clear_portrait()
        elif action == "save_portrait":
            return self.save_portrait(kw.get("path"))
        elif action == "open":
            return self.open_path(kw["path"])
        elif action == "open_dialog":
            self.open_dialog(kw.get("kind", "any"))
        elif action == "dismiss_error":
            app.viewport_error = None
        elif action == "toggle_perf":
            app.ui.perf_open = not app.ui.perf_open
            app.settings.show_performance = app.ui.perf_open
        elif action == "add_keyframe":
            app.path_editor.add_view(st)
        elif action == "remove_keyframe":
            app.path_editor.remove(int(kw.get("index", -1)))
        elif action == "clear_keyframes":
            app.path_editor.clear()
        elif action == "preview_path":
            app.path_editor.toggle_preview()
        elif action == "save_path":
            self.save_path(kw.get("path"))
        elif action == "load_path":
            self.load_path(kw["path"])
        elif action in Exports.ACTIONS:
            return self.exports.do(action, **kw)
        else:
            raise KeyError(f"unknown action {action!r}")
        return None

    # ------------------------------------------------------------------ models
    def load_checkpoint(self, path) -> None:
        app = self.app
        app.notice = f"loading {Path(path).name} ..."
        app.viewport_error = None
        app.worker.load(path)

    def model_loaded(self) -> None:
        """A checkpoint finished loading: a portrait shown before is gone with its model."""
        self._forget_portrait()
        if self.app.worker.model_path:
            self.remember(self.app.worker.model_path, "model")

    def clear_portrait(self) -> None:
        """Back to the seeds of the model the portrait was fitted on (or opened over); a fit under way
        is cancelled."""
        app = self.app
        if self.fit_job is not None:
            self.fit_job.cancel()
            self.fit_job = None
        if self.portrait_base is not None:
            app.worker.set_generator(self.portrait_base.generator, name=self.portrait_base.name,
                                     path=self.portrait_base.path)
        app.worker.set_appearance(None)
        self._forget_portrait()

    def _forget_portrait(self) -> None:
        self.portrait_base = None
        self.portrait = None
        self.portrait_name = None
        self.app.portrait_active = False

    # ------------------------------------------------------------------ opening files
    def open_path(self, path):
        """Open any file the viewer knows: a checkpoint, a saved portrait, a photo (fitted) or a camera path.
        Returns the job it started, if any."""
        return self._open(path)[1]

    def _open(self, path) -> tuple[str, object]:
        """(outcome, job): "checkpoint", "portrait" (a fit or a saved portrait), "path", "rejected" or
        "no-model"; a refusal is shown in the viewport."""
        app = self.app
        kind, why = D.classify(path)
        if kind == "image":
            why = D.image_problem(path)
            kind = "reject" if why else kind
        if kind == "reject":
            app.viewport_error = f"cannot open it: {why}"
            return "rejected", None
        if kind == "path":
            try:
                self.load_path(path)
            except UserError as e:
                app.viewport_error = f"cannot open it: {e}"
                return "rejected", None
            return "path", None
        if kind == "image":
            job = self.fit_portrait(path)
            if job is not None:
                self.remember(path, "photo")
            return ("portrait" if job is not None else "no-model"), job
        from pv3d_core.fit_files import is_portrait

        if Path(path).suffix.lower() == ".safetensors" and is_portrait(path):
            job = self.open_portrait(path)
            return ("portrait" if job is not None else "no-model"), job
        self.load_checkpoint(path)
        return "checkpoint", None

    def open_dialog(self, kind: str = "any") -> None:
        titles = {"model": "Open a checkpoint or portrait", "photo": "Open a portrait photo",
                  "path": "Open a camera path", "any": "Open"}
        start = self.app.settings.last_checkpoint or ""
        self.app.dialogs.open_file(titles.get(kind, "Open"), lambda p: self.app.guarded("opening", self.open_path, p),
                                   kind if kind in ("model", "photo", "path") else "any", start)

    def remember(self, path, kind: str) -> None:
        app = self.app
        app.recent.add(path, kind)
        if app.recent.warning:
            app.message = app.recent.warning

    # ------------------------------------------------------------------ portraits
    def fit_portrait(self, image_path):
        """Start fitting a photo on the model shown (or, over a shown portrait, on the model it was fitted on)."""
        app = self.app
        if app.worker.generator is None:
            app.viewport_error = "load a model before dropping a portrait"
            return None
        base = self.portrait_base or PortraitBase(app.worker.generator, app.worker.model_name, app.worker.model_path)
        body = portrait_job(image_path, base.generator)
        job = app.jobs.start("portrait", body, self.job_done)
        job.base = base
        job.portrait_name = Path(image_path).stem
        job.model_serial = app.worker.model_serial
        job.latest = body.latest
        if self.fit_job is not None:
            self.fit_job.cancel()
        self.fit_job = job
        app.message = f"fitting portrait {Path(image_path).name} ..."
        return job

    def open_portrait(self, path):
        """Open a saved portrait (its tuned generator and latent) over the model shown."""
        app = self.app
        base = self.portrait_base or (PortraitBase(app.worker.generator, app.worker.model_name, app.worker.model_path)
                                      if app.worker.generator is not None else None)
        job = app.jobs.start("open portrait", open_portrait_job(path, app.worker.device), self.job_done)
        job.base = base
        job.portrait_name = Path(path).stem
        job.model_serial = app.worker.model_serial
        job.source = str(path)
        return job

    def save_portrait(self, path=None):
        """Save the portrait shown as `pv3d animate --save-portrait` does (a file that opens again here and
        in `pv3d animate portrait.safetensors`). Without a path, asks for one."""
        app = self.app
        if self.portrait is None:
            app.message = "no portrait to save: drop or open a photo first"
            return None
        if path is None:
            start = str(Path(app.settings.export_folder).expanduser() / f"{self.portrait_name or 'portrait'}.safetensors")
            app.dialogs.save_file("Save the portrait", lambda p: app.guarded("saving", self.save_portrait, p),
                                  "portrait", start)
            return None
        if not str(path).endswith(".safetensors"):
            path = f"{path}.safetensors"
        job = app.jobs.start("save portrait", save_portrait_job(self.portrait, path), self.job_done)
        app.message = f"saving {Path(path).name} ..."
        return job

    def job_done(self, job) -> None:
        """A job finished (called on the UI thread by :meth:`JobManager.collect`)."""
        app = self.app
        if job.name == "portrait" and (job.error or job.cancelled):
            self._drop_fit_preview(job)
        if job.error:
            app.message = f"{job.name} failed: {job.error}"
            if job.name in ("portrait", "open portrait"):     # the user waits on these: say it in the viewport
                app.viewport_error = f"{job.name} failed: {job.error}"
        elif job.cancelled:
            app.message = f"{job.name} cancelled"
        elif job.name in ("portrait", "open portrait"):
            self._show_portrait(job)
        else:
            app.message = f"saved {job.result}"
            if job.name == "save portrait":
                self.remember(job.result, "portrait")
            elif job.name not in ("save portrait",):
                try:
                    app.settings.export_folder = str(Path(job.result).parent)
                except TypeError:
                    pass

    def _show_portrait(self, job) -> None:
        app = self.app
        if job.base is None:
            app.message = "open a model first"
            return
        if app.worker.model_serial != job.model_serial or app.worker.loading():
            # another model was loaded while the photo was being fitted: keep the user's model
            app.message = (f"portrait fitted on {job.base.name}, but another model was loaded meanwhile; "
                           "not shown (drop the photo again to fit it on this model)")
            return
        tuned = job.tuned_generator
        if tuned is not None:
            app.worker.set_generator(tuned, name=f"portrait {job.portrait_name} (pivotal-tuned)")
        self.portrait_base = job.base
        self.portrait = getattr(job, "portrait", None)
        self.portrait_name = job.portrait_name
        app.worker.set_appearance(job.result)
        if not getattr(job, "previewed", False):     # the previews already turned to the photo's camera
            self.portrait_view = job.portrait_view
        if self.fit_job is job:
            self.fit_job = None
        app.portrait_active = True
        app.message = f"portrait {job.portrait_name}: animating it"
        if getattr(job, "source", None):
            self.remember(job.source, "portrait")

    def _drop_fit_preview(self, job) -> None:
        """A fit that failed or was cancelled after showing live states: back to the model it started
        from (unless a newer fit, a "back to seeds" or another model has taken over the view since)."""
        if self.fit_job is not job:
            return
        self.fit_job = None
        if getattr(job, "previewed", False) and self.app.worker.model_serial == job.model_serial:
            self.clear_portrait()

    def update_fit_preview(self) -> None:
        """Each UI frame: show the running fit's newest state, if there is a new one and the model shown
        is still the one it fits (never waits: the worker installs it between renders)."""
        app, job = self.app, self.fit_job
        if job is None or job.done or getattr(job, "latest", None) is None:
            return
        if app.worker.model_serial != job.model_serial or app.worker.loading():
            return                      # the user loaded another model meanwhile
        job.latest.view = S.render_settings(app.st)     # the fit renders its next state at this view
        s = job.latest.take()
        if s is None:
            return
        app.worker.show_preview(s.generator, s.ws, name=f"portrait ({s.stage}, fitting)",
                                prepared=s.extra.get("prepared"))
        if not getattr(job, "previewed", False):
            job.previewed = True        # the photo's camera once, at the first result; then orbit freely
            if self.portrait_base is None:
                self.portrait_base = job.base
            self.portrait_name = getattr(job, "portrait_name", None)   # the model panel names the photo
            if s.camera is not None:
                from pv3d_core.render import cameras

                pivot = tuple(job.base.generator.rendering_kwargs.get("avg_camera_pivot", cameras.DEFAULT_PIVOT))
                self.portrait_view = cameras.yaw_pitch_of(s.camera, pivot)[:2]
        app.portrait_active = True

    def apply_portrait_view(self) -> None:
        """After a photo is fitted, show it as it was taken: its camera, at t = 0 (then orbit/play freely)."""
        view, self.portrait_view = self.portrait_view, None
        if view is not None:
            st = self.app.st
            yaw, pitch = (math.degrees(float(v)) for v in view)
            st.yaw = S.clamp(yaw, -S.YAW_LIMIT, S.YAW_LIMIT)
            st.pitch = S.clamp(pitch, -S.PITCH_LIMIT, S.PITCH_LIMIT)
            st.t = 0.0
            st.playing = False

    # ------------------------------------------------------------------ camera paths
    def save_path(self, path=None) -> None:
        app = self.app
        if path is None:
            start = app.path_editor.file or str(Path(app.settings.export_folder).expanduser() / "camera_path.json")
            app.dialogs.save_file("Save the camera path", lambda p: app.guarded("saving the path", self.save_path, p),
                                  "path", start)
            return
        if not str(path).endswith(".json"):
            path = f"{path}.json"
        saved = app.path_editor.save(path)
        self.remember(saved, "path")
        app.message = f"saved {saved}"

    def load_path(self, path) -> None:
        app = self.app
        app.path_editor.load(path)
        self.remember(path, "path")
        app.message = f"camera path {Path(path).name}: {len(app.path_editor.keyframes)} keyframes"
        app.ui.requested_tab = "Path"

    # ------------------------------------------------------------------ drag and drop
    def on_drop(self, window, paths) -> None:
        """glfw drop callback: queue; handled at the start of the next frame."""
        self._drops.extend(list(paths))

    def handle_drops(self) -> list[str]:
        app = self.app
        drops, self._drops = self._drops, []
        outcomes = [self._open(p)[0] for p in drops[:1]]     # one file at a time: the first one wins
        if len(drops) > 1:
            app.message = f"{len(drops)} files dropped: used the first one"
        return outcomes
