"""Background jobs (exports, portrait inversion) with progress, cancel and a result or an error.

Each export renders with its own :class:`FrameRenderer` over the loaded generator (inference is
read-only, so it can run beside the display worker), and writes through pv3d_core's atomic writers.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

from pv3d_core.export import Cancelled, ClipSpec, clip_settings, render_clip, write_mp4, write_png


class Job:
    def __init__(self, name: str, fn):
        self.name = name
        self.progress = 0.0
        self.cancel = threading.Event()
        self.result = None
        self.error: str | None = None
        self.done = False
        self.started = time.time()
        self._thread = threading.Thread(target=self._run, args=(fn,), name=f"pv3d-job-{name}", daemon=True)
        self._thread.start()

    def _run(self, fn):
        try:
            self.result = fn(self)
        except Cancelled:
            self.error = "cancelled"
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.done = True

    def set_progress(self, i: int, n: int) -> None:
        self.progress = i / max(n, 1)

    def join(self, timeout=None):
        self._thread.join(timeout)


def _renderer_like(renderer):
    from pv3d_core.pipeline import FrameRenderer

    r = FrameRenderer(renderer.G, plane_cache=4)
    r.appearance_ws, r.motion_code = renderer.appearance_ws, renderer.motion_code
    return r


def export_mp4(renderer, base_settings, path, frames: int = 64, fps: float = 25.0, camera: str = "fixed",
               t0: float = 0.0, t1: float = 1.0) -> Job:
    r = _renderer_like(renderer)
    spec = ClipSpec(frames=frames, t0=t0, t1=t1, camera=camera)
    base = base_settings.with_(view=base_settings.view if base_settings.view != "raw" else "raw")

    def run(job: Job):
        settings = clip_settings(base, spec)
        out = write_mp4(path, render_clip(r, settings, progress=job.set_progress, cancel=job.cancel), fps=fps,
                        cancel=job.cancel)
        return str(out)

    return Job("mp4", run)


def export_png(image, path) -> Job:
    from .worker import to_rgba

    def run(job: Job):
        return str(write_png(path, to_rgba(image)[..., :3]))

    return Job("png", run)


def export_ply(renderer, settings, path, resolution: int = 192) -> Job:
    def run(job: Job):
        try:
            from pv3d_core import mesh
        except ImportError:
            raise RuntimeError("mesh export is not available in this build (pv3d_core.mesh is missing)") from None
        import torch

        r = renderer
        ws = r.ws_for(settings.seed, settings.psi)
        zm = r.motion_for(settings.motion_seed)
        m = mesh.extract_mesh(r.G, ws, zm, float(settings.t), resolution=resolution,
                              progress=job.set_progress, cancel=job.cancel)
        with torch.no_grad():
            pass
        return str(mesh.write_ply(path, m))

    return Job("ply", run)


def default_name(folder, stem: str, ext: str) -> Path:
    folder = Path(folder)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    p = folder / f"{stem}-{stamp}.{ext}"
    k = 1
    while p.exists():
        p = folder / f"{stem}-{stamp}-{k}.{ext}"
        k += 1
    return p
