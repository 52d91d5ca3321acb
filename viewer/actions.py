"""What the user asks for, carried out: loading models, drops, exports, portrait fits.

:class:`Actions` works on the app's state (its worker, jobs, settings, messages); the widgets, the
keyboard shortcuts, the drop callback and the control socket all come here, so every path runs the
same code. Everything here runs on the UI thread: job completions too (:meth:`JobManager.collect`
calls them from the frame loop), so they may touch the app freely.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from pv3d_core.errors import UserError

from . import drop as D
from . import state as S
from .jobs import mp4_job, output_name, ply_job, png_job, portrait_job
from .messages import missing_model_notice

log = logging.getLogger(__name__)


@dataclass
class PortraitBase:
    """The model a portrait fit started from: restored by "back to seeds"."""
    generator: object
    name: str


class Actions:
    def __init__(self, app):
        self.app = app
        self.portrait_base: PortraitBase | None = None   # set while a fitted portrait is shown
        self.portrait_view = None      # (yaw, pitch) radians of a fitted photo, applied once on the UI thread
        self.fit_job = None            # the portrait fit whose live states are shown
        self._drops: list = []

    # ------------------------------------------------------------------ buttons and keys
    def do(self, action: str):
        app, st = self.app, self.app.st
        if action == "toggle_play":
            st.playing = not st.playing
            if not st.playing:
                app.worker.prefetch([])
        elif action == "reset_view":
            S.reset_view(st)
        elif action == "load_default":
            from pv3d_core.paths import default_checkpoint
            p = default_checkpoint()
            if p.exists():
                self.load_checkpoint(p)
            else:
                app.viewport_error = missing_model_notice(p)
        elif action == "clear_portrait":
            self.clear_portrait()
        elif action == "export_mp4":
            return self.export("mp4")
        elif action == "export_png":
            return self.export("png")
        elif action == "export_ply":
            return self.export("ply")
        return None

    def load_checkpoint(self, path) -> None:
        app = self.app
        app.notice = f"loading {Path(path).name} ..."
        app.viewport_error = None
        app.worker.load(path)

    def clear_portrait(self) -> None:
        """Back to the seeds of the model the portrait was fitted on (a fit under way is cancelled)."""
        app = self.app
        if self.fit_job is not None:
            self.fit_job.cancel()
            self.fit_job = None
        if self.portrait_base is not None:
            app.worker.set_generator(self.portrait_base.generator, name=self.portrait_base.name)
            self.portrait_base = None
        app.worker.set_appearance(None)
        app.portrait_active = False

    def model_loaded(self) -> None:
        """A checkpoint finished loading: a portrait shown before is gone with its model."""
        self.portrait_base = None
        self.app.portrait_active = False

    # ------------------------------------------------------------------ exports
    def export(self, kind: str, path=None):
        from pv3d_core.export import ClipSpec, ExportError, clip_settings

        app = self.app
        G = app.worker.generator
        if G is None:
            app.message = "nothing to export: no model loaded"
            return None
        cfg = app.settings
        ws = app.worker.renderer.appearance_ws if app.worker.renderer is not None else None
        base = S.render_settings(app.st).with_(resolution=int(cfg.export_resolution))
        folder = Path(cfg.export_folder).expanduser()
        try:
            if kind == "mp4":
                n = max(2, int(cfg.export_frames))
                spec = ClipSpec(frames=n, camera=cfg.export_camera)
                cams = clip_settings(base, spec)
                length = S.timeline_length(app.st)
                todo = [S.render_settings(app.st, pos=length * i / (n - 1)).with_(
                    resolution=int(cfg.export_resolution), yaw=c.yaw, pitch=c.pitch) for i, c in enumerate(cams)]
                path = path or output_name(folder, base, "mp4", f"_{cfg.export_camera}")
                job = app.jobs.start("MP4", mp4_job(G, base, spec, cfg.export_fps, path, ws, settings_list=todo),
                                     self.job_done)
            elif kind == "png":
                path = path or output_name(folder, base, "png")
                from .jobs import job_renderer

                def body(job, G=G, base=base, path=path, ws=ws):
                    img = job_renderer(G, ws).render(base).numpy()
                    return png_job(img, path)(job)
                job = app.jobs.start("PNG", body, self.job_done)
            elif kind == "ply":
                path = path or output_name(folder, base, "ply")
                job = app.jobs.start("PLY", ply_job(G, base, path, appearance_ws=ws), self.job_done)
            else:
                raise ExportError(f"unknown export kind {kind!r}")
        except UserError as e:
            app.message = f"export failed: {e}"
            return None
        app.message = f"exporting {Path(path).name} ..."
        return job

    # ------------------------------------------------------------------ portraits
    def fit_portrait(self, image_path):
        """Start fitting a photo on the model shown (or, over a shown portrait, on the model it was fitted on)."""
        app = self.app
        if app.worker.generator is None:
            app.viewport_error = "load a model before dropping a portrait"
            return None
        base = self.portrait_base or PortraitBase(app.worker.generator, app.worker.model_name)
        body = portrait_job(image_path, base.generator)
        job = app.jobs.start("portrait", body, self.job_done)
        job.base = base
        job.model_serial = app.worker.model_serial
        job.latest = body.latest
        if self.fit_job is not None:
            self.fit_job.cancel()
        self.fit_job = job
        app.message = f"fitting portrait {Path(image_path).name} ..."
        return job

    def job_done(self, job) -> None:
        """A job finished (called on the UI thread by :meth:`JobManager.collect`)."""
        app = self.app
        if job.name == "portrait" and (job.error or job.cancelled):
            self._drop_fit_preview(job)
        if job.error:
            app.message = f"{job.name} failed: {job.error}"
        elif job.cancelled:
            app.message = f"{job.name} cancelled"
        elif job.name == "portrait":
            self._show_portrait(job)
        else:
            app.message = f"saved {job.result}"
            try:
                app.settings.export_folder = str(Path(job.result).parent)
            except TypeError:
                pass

    def _show_portrait(self, job) -> None:
        app = self.app
        if app.worker.model_serial != job.model_serial or app.worker.loading():
            # another model was loaded while the photo was being fitted: keep the user's model
            app.message = (f"portrait fitted on {job.base.name}, but another model was loaded meanwhile; "
                           "not shown (drop the photo again to fit it on this model)")
            return
        tuned = job.tuned_generator
        if tuned is not None:
            app.worker.set_generator(tuned, name="portrait (pivotal-tuned)")
        self.portrait_base = job.base
        app.worker.set_appearance(job.result)
        if not getattr(job, "previewed", False):     # the previews already turned to the photo's camera
            self.portrait_view = job.portrait_view
        if self.fit_job is job:
            self.fit_job = None
        app.portrait_active = True
        app.message = "portrait fitted: animating it"

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
        s = job.latest.take()
        if s is None:
            return
        app.worker.show_preview(s.generator, s.ws, name=f"portrait ({s.stage}, fitting)")
        if not getattr(job, "previewed", False):
            job.previewed = True        # the photo's camera once, at the first result; then orbit freely
            if self.portrait_base is None:
                self.portrait_base = job.base
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

    # ------------------------------------------------------------------ drag and drop
    def on_drop(self, window, paths) -> None:
        """glfw drop callback: queue; handled at the start of the next frame."""
        self._drops.extend(list(paths))

    def handle_drops(self) -> list[str]:
        app = self.app
        outcomes = []
        drops, self._drops = self._drops, []
        for p in drops[:1]:   # one file at a time: the first one wins
            kind, why = D.classify(p)
            if kind == "checkpoint":
                self.load_checkpoint(p)
                outcomes.append("checkpoint")
            elif kind == "image":
                outcomes.append("portrait" if self.fit_portrait(p) is not None else "no-model")
            else:
                app.viewport_error = f"cannot open the dropped file: {why}"
                outcomes.append("rejected")
        if len(drops) > 1:
            app.message = f"{len(drops)} files dropped: used the first one"
        return outcomes
