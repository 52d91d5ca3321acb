"""Background jobs: exports (mp4, PNG, meshes and mesh sequences) and portraits (fit, open, save), with
progress and cancel.

A job runs a function in its own thread; the function gets a :class:`Job` to report progress on
and to poll for cancellation. Jobs render with their own :class:`FrameRenderer` on the same
generator (inference only, so sharing the weights between threads is safe), so the viewer's
render worker keeps serving the UI meanwhile. Files are written atomically by pv3d_core.export.

Interactive priority: a job's thread lowers its own scheduling priority and computes with every core
(:mod:`.cpu_share`): the UI and the render worker win the CPU whenever they want it, and the job takes
what is left, which is all of it while the viewer is idle.
"""
from __future__ import annotations

import gc
import itertools
import logging
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from pv3d_core.errors import REPORT_BUG, UserError
from pv3d_core.export import Cancelled, ClipSpec, ExportError, clip_settings, render_clip, write_mp4, write_png
from pv3d_core.pipeline import FrameRenderer, RenderSettings

from .cpu_share import env_number, lower_thread_priority, share_cores
from .progress import StagedProgress

log = logging.getLogger(__name__)

# a portrait fit's stages in latent-step units: a pivotal-tuning step costs pv3d_core.invert.pti_cost
# (2.1 with the encoder's settings; measured in the viewer on the astronaut, 0.40 s a latent step and
# 0.76 s a PTI step: 1.9), finding and cropping the face ~3 s, 6-8 latent steps
ALIGN_STEP_COST = 6.0

# the shortest interval between two shown states of a running portrait fit (seconds; LIVE_SHARE below
# usually sets a longer one); the first result and each new stage show at once
LIVE_STATE_S = env_number("PV3D_LIVE_STATE_S", 1.0, 0.05, 3600)
# the share of a fit's time its live states may take (snapshot and frame, on the fit's thread: see
# viewer.live_preview): at 128² one every ~3 s, at 512² fewer. Each also costs the UI a new frame drawn
# (under llvmpipe both cores for ~25 ms), so the fit loses more than the share says. A drop of the
# astronaut (bench_viewer_jobs.py portrait --runs 2 --env PV3D_LIVE_SHARE=0.1 --env PV3D_LIVE_SHARE=0.05,
# alternated, quiet): 0.1 (~60 frames) 103.9 / 106.5 s, 0.05 (~35 frames) 96.7 / 96.9 s
LIVE_SHARE = env_number("PV3D_LIVE_SHARE", 0.05, 0.01, 1.0)


class Job:
    """A function run in its own thread, with progress, cancel and an outcome. ``on_done`` is not
    called from that thread: :meth:`JobManager.collect` calls it on the UI thread."""

    _ids = itertools.count(1)

    def __init__(self, name: str, fn: Callable[["Job"], Any], on_done: Callable[["Job"], None] | None = None):
        self.id = next(Job._ids)
        self.name = name
        self.fn = fn
        self.on_done = on_done
        self.cancel_event = threading.Event()
        self.progress = 0.0
        self.status = "starting"
        self.result: Any = None
        self.error: str | None = None
        self.cancelled = False
        self.done = False
        self.collected = False          # its completion was handled on the UI thread
        self.output: str | None = None
        self.threads: int | None = None     # the intra-op threads it computes with now (cpu_share)
        self.started = time.time()
        self.finished: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"pv3d-job-{name}", daemon=True)

    def start(self) -> "Job":
        self._thread.start()
        return self

    def report(self, done: int, total: int, status: str | None = None) -> None:
        self.update(0.0 if total <= 0 else min(1.0, done / total), status)

    def update(self, fraction: float, status: str | None = None) -> None:
        """Progress, from the job's thread between its steps (where it also gives cores back to an
        interacting user, :func:`.cpu_share.share_cores`)."""
        self.threads = share_cores()
        self.progress = fraction
        if status:
            self.status = status

    def cancel(self) -> None:
        self.cancel_event.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def release(self) -> None:
        """Drop what the job produced but the app has taken over (a tuned generator is ~180 MB at 512²);
        a path stays, for the panel to show."""
        if not isinstance(self.result, str):
            self.result = None
        for heavy in ("tuned_generator", "base", "portrait", "latest"):
            if hasattr(self, heavy):
                setattr(self, heavy, None)

    def _run(self) -> None:
        self.nice = lower_thread_priority()
        self.threads = share_cores()
        try:
            self.result = self.fn(self)
            self.status = "done"
            self.progress = 1.0
        except Cancelled:
            self.cancelled = True
            self.status = "cancelled"
        except UserError as e:
            self.error = str(e)
            self.status = "failed"
        except Exception as e:  # noqa: BLE001 - a bug: shown to the user, logged with its traceback
            log.error("%s job failed:\n%s\n%s", self.name, traceback.format_exc().rstrip(), REPORT_BUG)
            self.error = f"{type(e).__name__}: {e}"
            self.status = "failed"
        finally:
            self.fn = None                  # its closure may hold a model
            self.finished = time.time()
            self.done = True


class JobManager:
    """The app's jobs. Call :meth:`collect` from the UI loop: it runs the completion callbacks there
    and forgets finished jobs once they are old (:data:`KEEP_S`) or too many (:data:`KEEP_FINISHED`)."""

    KEEP_S = 30.0
    KEEP_FINISHED = 16

    def __init__(self):
        self.jobs: list[Job] = []

    def start(self, name, fn, on_done=None) -> Job:
        job = Job(name, fn, on_done).start()
        self.jobs.append(job)
        return job

    def get(self, job_id: int) -> Job | None:
        return next((j for j in self.jobs if j.id == job_id), None)

    def collect(self) -> list[Job]:
        """Handle finished jobs: each one's ``on_done`` (UI thread), then :meth:`Job.release`. A failing
        callback is logged with its traceback and its message put on the job, never swallowed.
        Returns the jobs handled now."""
        handled = []
        for job in [j for j in self.jobs if j.done and not j.collected]:
            job.collected = True
            try:
                if job.on_done is not None:
                    job.on_done(job)
            except Exception as e:  # noqa: BLE001 - reported on the job and in the log, the app goes on
                log.error("completing the %s job failed:\n%s\n%s", job.name, traceback.format_exc().rstrip(),
                          REPORT_BUG)
                job.error = f"completing it failed: {type(e).__name__}: {e}"
            finally:
                job.release()
            handled.append(job)
        self.prune()
        return handled

    def prune(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        finished = [j for j in self.jobs if j.done and j.collected]
        old = {id(j) for j in finished if now - (j.finished or now) > self.KEEP_S}
        old |= {id(j) for j in finished[:max(0, len(finished) - self.KEEP_FINISHED)]}
        self.jobs = [j for j in self.jobs if id(j) not in old]

    def active(self) -> list[Job]:
        return [j for j in self.jobs if not j.done]

    def recent(self, seconds: float = 30.0) -> list[Job]:
        now = time.time()
        return [j for j in self.jobs if not j.done or (j.finished and now - j.finished < seconds)]

    def cancel_all(self) -> None:
        for j in self.active():
            j.cancel()

    def join_all(self, timeout: float = 30.0) -> None:
        end = time.time() + timeout
        for j in self.jobs:
            j.join(max(0.0, end - time.time()))


def job_renderer(G, appearance_ws=None, motion_code=None) -> FrameRenderer:
    r = FrameRenderer(G)
    if appearance_ws is not None:
        r.set_appearance(appearance_ws)
    if motion_code is not None:
        r.set_motion(motion_code)
    return r


def _safe(name: str) -> str:
    """A file-name-safe version of a portrait's name."""
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in str(name)).strip("-.")
    return keep[:60] or "portrait"


def output_name(folder, base: RenderSettings, ext: str, tag: str = "", portrait: str | None = None) -> Path:
    """A new name in ``folder``: after the portrait shown (``portrait``: its name), else after the seeds."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    who = f"portrait-{_safe(portrait)}" if portrait else f"seed{base.seed}"
    if not portrait and base.seed_b is not None and base.blend:
        who += f"-to{base.seed_b}-{int(round(base.blend * 100))}pct"
    name = f"pv3d_{who}_motion{base.motion_seed}{tag}_{stamp}{'.' + ext if ext else ''}"
    p = Path(folder).expanduser() / name
    stem, suffix = (name[:-len(ext) - 1], "." + ext) if ext else (name, "")
    i = 1
    while p.exists():
        p = p.with_name(f"{stem}-{i}{suffix}")
        i += 1
    return p


# ------------------------------------------------------------------------------------ job bodies

def mp4_job(G, base: RenderSettings, spec: ClipSpec, fps: float, path, appearance_ws=None,
            settings_list: list[RenderSettings] | None = None):
    """Job body: render the clip and encode it to ``path`` (atomic)."""
    if fps <= 0:
        raise ExportError(f"fps must be positive, got {fps}")

    def body(job: Job):
        r = job_renderer(G, appearance_ws)
        todo = settings_list if settings_list is not None else clip_settings(base, spec)
        job.output = str(path)
        job.status = f"rendering {len(todo)} frames"
        frames = render_clip(r, todo, progress=lambda i, n: job.report(i, n, f"frame {i}/{n}"),
                             cancel=job.cancel_event)
        folder = Path(path).parent
        before = set(folder.glob(f".{Path(path).stem}.*.mp4")) if folder.is_dir() else set()
        err = None
        try:
            return str(write_mp4(path, frames, fps=fps, cancel=job.cancel_event))
        except BaseException as e:  # noqa: BLE001 - re-raised below
            err = e
        # imageio's writer is not closed when an exception leaves its `with` block: ffmpeg keeps
        # running until the writer is garbage-collected and then writes the temporary file that
        # write_mp4 has already deleted. Drop the traceback (it holds the writer), collect, and sweep.
        err.__traceback__ = None
        frames = None
        gc.collect()
        _sweep_partial(folder, Path(path).stem, before)
        raise err
    return body


def _sweep_partial(folder: Path, stem: str, before: set, wait_s: float = 0.5) -> None:
    """Remove the temporary mp4 of an interrupted encode (see mp4_job)."""
    end = time.time() + wait_s
    while True:
        for p in set(folder.glob(f".{stem}.*.mp4")) - before:
            try:
                p.unlink()
            except OSError:
                pass
        if time.time() >= end:
            return
        time.sleep(0.1)


def png_job(image, path):
    def body(job: Job):
        job.output = str(path)
        return str(write_png(path, image))
    return body


def mesh_job(G, s: RenderSettings, path, resolution: int = 128, level: float = 10.0, fmt: str | None = None,
             appearance_ws=None):
    """Job body: the surface at ``s``'s moment as PLY, OBJ or GLB (pv3d_core.mesh, as `pv3d mesh` writes it)."""
    def body(job: Job):
        from pv3d_core.mesh import extract_mesh, write_mesh

        r = job_renderer(G, appearance_ws)
        job.output = str(path)
        job.status = "extracting the surface"
        m = extract_mesh(G, r.appearance(s), r.motion(s), s.t, resolution=resolution, level=level,
                         progress=lambda i, n: job.report(i, n, f"surface {100 * i // max(1, n)} %"),
                         cancel=job.cancel_event)
        if job.cancel_event.is_set():
            raise Cancelled("cancelled")
        return str(write_mesh(path, m, fmt))
    return body


def ply_job(G, s: RenderSettings, path, resolution: int = 128, appearance_ws=None):
    return mesh_job(G, s, path, resolution, fmt="ply", appearance_ws=appearance_ws)


def mesh_sequence_job(G, settings_list: list[RenderSettings], folder, resolution: int = 128, level: float = 10.0,
                      fmt: str = "glb", fps: float | None = None, appearance_ws=None):
    """Job body: a mesh per frame of ``settings_list`` into ``folder`` with index.json (pv3d_core.mesh)."""
    def body(job: Job):
        from pv3d_core.mesh import extract_mesh, write_mesh_sequence

        r = job_renderer(G, appearance_ws)
        job.output = str(folder)
        n = len(settings_list)

        def meshes():
            for k, s in enumerate(settings_list):
                prog = (lambda i, m, k=k: job.report(k * 1000 + i * 1000 // max(1, m), n * 1000,
                                                     f"mesh {k + 1}/{n}"))
                yield s.t, extract_mesh(G, r.appearance(s), r.motion(s), s.t, resolution=resolution, level=level,
                                        progress=prog, cancel=job.cancel_event)
        return str(write_mesh_sequence(folder, meshes(), fmt, fps=fps, cancel=job.cancel_event))
    return body


def portrait_job(image_path, G, config=None):
    """Job body: find the face, crop, start from the model's encoder when it has one, fit and tune
    (pv3d_core.portrait); the result is the appearance latent ``ws``, ``job.portrait`` the whole portrait
    (to show and to save). One bar over every stage, weighted by their cost, with the time left. While it
    runs, ``body.latest`` (:class:`pv3d_core.live.LatestState`) holds the newest state of the fit for
    the UI to show (the encoder's first result, then the refinement; latest wins).

    ``config``: a :class:`pv3d_core.portrait.PortraitConfig`, an InversionConfig, or None (the defaults
    for the start the model allows)."""
    from .live_preview import LivePreview

    def body(job: Job):
        from pv3d_core import portrait
        from pv3d_core.invert import pti_cost

        pcfg = config if isinstance(config, portrait.PortraitConfig) else portrait.PortraitConfig(inversion=config)
        job.status = "finding the face"
        encoder, _ = portrait.find_encoder(G, pcfg.encoder)
        cfg = pcfg.inversion_for(encoder is not None)
        bar = StagedProgress([("align", 1, ALIGN_STEP_COST), ("encoder", 1 if encoder is not None else 0),
                              ("w", cfg.w_steps), ("w+", cfg.wplus_steps), ("pti", cfg.pti_steps, pti_cost(cfg))])

        def progress(stage, i, n, loss=0.0):
            job.update(*bar.update(stage, i, n))

        out = portrait.prepare_and_invert(image_path, G, progress=progress, cancel=job.cancel_event, config=pcfg,
                                          on_state=body.latest, encoder=encoder)
        if job.cancel_event.is_set():
            raise Cancelled("cancelled")
        _hand_over(job, out)
        return out.ws
    # a live state every LIVE_STATE_S at most: each costs the fit a copy of the tuned generator (~25 ms on
    # the default model) and a frame rendered with its threads (~80 ms at 128²), at most LIVE_SHARE of its time
    body.latest = LivePreview(min_interval_s=LIVE_STATE_S, max_share=LIVE_SHARE)
    return body


def open_portrait_job(path, device="cpu"):
    """Job body: a saved portrait (pv3d animate --save-portrait, or the viewer's Save portrait)."""
    def body(job: Job):
        from pv3d_core import portrait

        job.status = "reading the portrait"
        out = portrait.load(path, device=device)
        _hand_over(job, out)
        return out.ws
    return body


def save_portrait_job(portrait, path):
    """Job body: ``portrait.save(path)``, what `pv3d animate --save-portrait` calls."""
    def body(job: Job):
        job.output = str(path)
        job.status = "saving the portrait"
        return str(portrait.save(path))
    return body


def _hand_over(job: Job, out) -> None:
    # pivotal tuning adapts the generator to the photo: the viewer shows the portrait with it
    job.portrait = out
    metrics = getattr(out, "metrics", None) or {}
    job.summary = "shown" + (f" (PSNR {metrics['psnr']:.1f} dB at the photo's view)" if "psnr" in metrics else "")
    job.tuned_generator = getattr(out, "generator", None)
    job.portrait_view = getattr(out, "yaw_pitch", None)     # the photo's camera (radians)
