"""The render worker: a background thread that owns the model.

The UI posts requests (latest wins: a new request replaces one not yet started) stamped with a
generation number; results carry the stamp, so the UI drops stale ones. While idle the worker renders
prefetch requests (the timeline's next frames) into a frame cache keyed by every setting, so a loop
plays smoothly once rendered. Model loading runs on the same thread, so the model is never used by
two renders at once. Errors come back as results with an ``error`` text; the thread keeps running.
"""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Result:
    generation: int
    settings: object = None
    image: object = None             # torch uint8 (H, W, 3) on the model's device
    timings: dict = field(default_factory=dict)
    error: str | None = None
    from_cache: bool = False
    message: str | None = None       # e.g. "loaded model X"


class FrameCache(OrderedDict):
    def __init__(self, capacity: int = 256):
        super().__init__()
        self.capacity = capacity

    def get_frame(self, key):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


class RenderWorker:
    def __init__(self, threads: int | None = None):
        self._cv = threading.Condition()
        self._request = None          # (generation, settings)
        self._prefetch: list = []
        self._load = None             # (generation, path)
        self._task = None             # (generation, callable(renderer) -> message)
        self._results: list[Result] = []
        self._stop = False
        self.renderer = None
        self.model_name = None
        self.device = "cpu"
        self.cache = FrameCache()
        self.busy = False
        self.threads = threads or max(1, (os.cpu_count() or 2) - 1)
        self._thread = threading.Thread(target=self._run, name="pv3d-render", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ UI side
    def request(self, generation: int, settings, prefetch=()) -> None:
        with self._cv:
            self._request = (generation, settings)
            self._prefetch = list(prefetch)
            self._cv.notify()

    def set_prefetch(self, prefetch) -> None:
        """Frames to render into the cache while there is nothing else to do (timeline look-ahead)."""
        with self._cv:
            self._prefetch = list(prefetch)
            self._cv.notify()

    def load(self, generation: int, path) -> None:
        with self._cv:
            self._load = (generation, str(path))
            self._cv.notify()

    def run_task(self, generation: int, fn) -> None:
        """Run ``fn(renderer)`` on the worker thread (e.g. set an inverted portrait's latent)."""
        with self._cv:
            self._task = (generation, fn)
            self._cv.notify()

    def poll(self) -> list[Result]:
        with self._cv:
            out, self._results = self._results, []
        return out

    def cached(self, settings):
        return self.cache.get_frame(settings)

    def stop(self, timeout: float = 30.0) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------ worker side
    def _post(self, r: Result) -> None:
        with self._cv:
            self._results.append(r)

    def _run(self) -> None:
        import torch

        torch.set_num_threads(self.threads)
        while True:
            with self._cv:
                while not (self._stop or self._request or self._load or self._task or self._prefetch):
                    self._cv.wait()
                if self._stop:
                    return
                load, self._load = self._load, None
                task, self._task = self._task, None
                req, self._request = (self._request, None) if not (load or task) else (None, self._request)
                pre = None
                if not (load or task or req) and self._prefetch:
                    pre = self._prefetch.pop(0)
            self.busy = True
            try:
                if load:
                    self._do_load(*load)
                elif task:
                    self._do_task(*task)
                elif req:
                    self._do_render(*req)
                elif pre is not None:
                    self._do_prefetch(pre)
            finally:
                self.busy = False

    def _do_load(self, generation: int, path: str) -> None:
        from pv3d_core.io import load_generator
        from pv3d_core.pipeline import FrameRenderer

        try:
            import torch

            dev = "cuda" if torch.cuda.is_available() and os.environ.get("PV3D_DEVICE", "") != "cpu" else "cpu"
            G = load_generator(path, device=dev)
        except Exception as e:  # CheckpointError and anything a broken file raises
            self._post(Result(generation, error=f"cannot load {os.path.basename(path)}: {e}"))
            return
        self.renderer = FrameRenderer(G)
        self.device = dev
        self.model_name = os.path.basename(path)
        self.cache.clear()
        self._post(Result(generation, message=f"loaded {self.model_name} ({G.img_resolution}², {dev})"))

    def _do_task(self, generation: int, fn) -> None:
        try:
            msg = fn(self.renderer)
            self.cache.clear()
            self._post(Result(generation, message=msg))
        except Exception as e:
            self._post(Result(generation, error=f"{type(e).__name__}: {e}"))

    def _render(self, settings):
        hit = self.cache.get_frame(settings)
        if hit is not None:
            return hit, True
        t0 = time.perf_counter()
        frame = self.renderer.render(settings)
        timings = dict(frame.timings)
        timings["total"] = (time.perf_counter() - t0) * 1e3
        out = (frame.image, timings)
        self.cache.put(settings, out)
        return out, False

    def _do_render(self, generation: int, settings) -> None:
        if self.renderer is None:
            self._post(Result(generation, settings, error="no model loaded: drop a checkpoint on the window "
                                                           "or start with --ckpt PATH"))
            return
        try:
            (image, timings), hit = self._render(settings)
            self._post(Result(generation, settings, image, timings, from_cache=hit))
        except Exception as e:
            self._post(Result(generation, settings, error=f"render failed: {type(e).__name__}: {e}"))

    def _do_prefetch(self, settings) -> None:
        if self.renderer is None:
            return
        try:
            self._render(settings)
        except Exception:
            pass   # the same error shows when the frame is actually requested


def to_rgba(image) -> np.ndarray:
    """(H, W, 3) uint8 tensor/array -> contiguous (H, W, 4) uint8 numpy (RGBA uploads are the fast path)."""
    a = image.cpu().numpy() if hasattr(image, "cpu") else np.asarray(image)
    out = np.empty(a.shape[:2] + (4,), np.uint8)
    out[..., :3] = a
    out[..., 3] = 255
    return out
