"""Background jobs: exports (mp4, PNG, PLY) and the portrait pipeline, with progress and cancel.

A job runs a function in its own thread; the function gets a :class:`Job` to report progress on
and to poll for cancellation. Jobs render with their own :class:`FrameRenderer` on the same
generator (inference only, so sharing the weights between threads is safe), so the viewer's
render worker keeps serving the UI meanwhile. Files are written atomically by pv3d_core.export.
"""
from __future__ import annotations

import gc
import threading
import time
from pathlib import Path
from typing import Any, Callable

from pv3d_core.export import Cancelled, ClipSpec, ExportError, clip_settings, render_clip, write_mp4, write_png
from pv3d_core.pipeline import FrameRenderer, RenderSettings


class Job:
    def __init__(self, name: str, fn: Callable[["Job"], Any], on_done: Callable[["Job"], None] | None = None):
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
        self.output: str | None = None
        self.started = time.time()
        self.finished: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"pv3d-job-{name}", daemon=True)

    def start(self) -> "Job":
        self._thread.start()
        return self

    def report(self, done: int, total: int, status: str | None = None) -> None:
        self.progress = 0.0 if total <= 0 else min(1.0, done / total)
        if status:
            self.status = status

    def cancel(self) -> None:
        self.cancel_event.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return not self.done

    def _run(self) -> None:
        try:
            self.result = self.fn(self)
            self.status = "done"
            self.progress = 1.0
        except Cancelled:
            self.cancelled = True
            self.status = "cancelled"
        except Exception as e:  # noqa: BLE001 - shown to the user
            self.error = f"{type(e).__name__}: {e}" if not isinstance(e, (ExportError, ValueError)) else str(e)
            self.status = "failed"
        finally:
            self.finished = time.time()
            self.done = True
            if self.on_done is not None:
                try:
                    self.on_done(self)
                except Exception:  # noqa: BLE001
                    pass


class JobManager:
    def __init__(self):
        self.jobs: list[Job] = []

    def start(self, name, fn, on_done=None) -> Job:
        job = Job(name, fn, on_done).start()
        self.jobs.append(job)
        return job

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


def output_name(folder, base: RenderSettings, ext: str, tag: str = "") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"pv3d_seed{base.seed}_motion{base.motion_seed}{tag}_{stamp}.{ext}"
    p = Path(folder).expanduser() / name
    i = 1
    while p.exists():
        p = p.with_name(f"{p.stem}-{i}{p.suffix}")
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


def ply_job(G, s: RenderSettings, path, resolution: int = 128, appearance_ws=None):
    def body(job: Job):
        try:
            from pv3d_core import mesh as mesh_mod
            extract, write = mesh_mod.extract_mesh, mesh_mod.write_ply
        except (ImportError, AttributeError):
            raise ExportError("mesh export not available in this build (pv3d_core.mesh is missing)") from None
        r = job_renderer(G, appearance_ws)
        ws = r.ws_for(s.seed, s.psi)
        z = r.motion_for(s.motion_seed)
        job.output = str(path)
        job.status = "extracting mesh"
        m = extract(G, ws, z, s.t, resolution=resolution, progress=lambda i, n: job.report(i, n),
                    cancel=job.cancel_event)
        if job.cancel_event.is_set():
            raise Cancelled("cancelled")
        return str(write(path, m))
    return body


def portrait_job(image_path, G):
    """Job body: prepare and invert a portrait; the result is the appearance latent ``ws``."""
    def body(job: Job):
        try:
            from pv3d_core import portrait
            fn = portrait.prepare_and_invert
        except (ImportError, AttributeError):
            raise ExportError("portrait animation not yet supported in this build "
                              "(pv3d_core.portrait is missing); drop a checkpoint instead") from None
        job.status = "fitting portrait"
        out = fn(image_path, G, progress=lambda stage, i, n, loss=0.0: job.report(i, n, f"{stage} {i}/{n}"), cancel=job.cancel_event)
        if job.cancel_event.is_set():
            raise Cancelled("cancelled")
        # pivotal tuning adapts the generator to the photo: the viewer shows the portrait with it
        job.tuned_generator = getattr(out, "generator", None)
        job.portrait_view = getattr(out, "yaw_pitch", None)     # the photo's camera (radians)
        return out.ws
    return body
