"""The render worker: a background thread that owns the model.

* :meth:`RenderWorker.request` replaces the single pending request (latest wins); each request gets
  a generation stamp, and each result carries its generation and the model *epoch* (bumped when the
  model or the appearance latent changes).
* :class:`ResultGate` is the UI's side: it accepts a result only if it is newer than the one shown
  and belongs to the current epoch; older (stale) ones are dropped. A result that is merely
  superseded by a still-pending request is *not* stale: showing it keeps a drag responsive.
* Commands (load a checkpoint, set an appearance latent, run a callable on the model) run in the
  worker thread before any render, so the model is touched by one thread only.
* Idle time renders ahead: :meth:`prefetch` gives the next timeline frames, which go into a frame
  cache keyed by (epoch, every render setting).
* Errors never escape the thread: they come back as results with ``error`` set. A user error (a bad
  checkpoint...) gives its message; anything else is a bug and is logged with its traceback.
* Frames come back as RGBA (what the display uploads), converted on the render thread right after the
  render; on a GPU a CUDA event marks when they are ready, so the display's copy waits on the device
  for exactly that work, never on the host.
* The renderer runs NHWC convolutions (``FrameRenderer(G, channels_last=True)``). When a model is
  installed, a warm-up thread asks :func:`pv3d_core.render.cuda_ops.describe` which volume renderer
  runs on this device, building the fused CPU kernels if they are not in the disk cache yet (1-2 s):
  the first frames render meanwhile with the PyTorch reference, so the build never delays them.
  :attr:`RenderWorker.kernels` holds that line and :attr:`RenderWorker.last_path` what the latest
  frame of this worker ran (``cuda_ops.last_path()``), for the status bar.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from pv3d_core.errors import REPORT_BUG, UserError
from pv3d_core.pipeline import FrameRenderer, RenderSettings
from pv3d_core.render import cuda_ops

from .cpu_share import RENDER_THREADS, use_threads

log = logging.getLogger(__name__)


@dataclass
class Result:
    gen: int
    epoch: int
    kind: str                          # "frame" | "model" | "command"
    settings: RenderSettings | None = None
    image: Any = None                  # (H, W, 4) uint8 RGBA torch tensor (on the model's device)
    ready: Any = None                  # torch.cuda.Event recorded after ``image`` was written (CUDA only)
    timings: dict = field(default_factory=dict)
    error: str | None = None
    message: str | None = None
    elapsed_ms: float = 0.0
    from_cache: bool = False
    info: dict = field(default_factory=dict)   # the frame's extra facts (the depth view's range)


class FrameCache:
    """Thread-safe LRU of rendered frames, bounded by bytes."""

    def __init__(self, max_bytes: int = 384 << 20):
        self.max_bytes = max_bytes
        self._d: collections.OrderedDict = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def __contains__(self, key):
        with self._lock:
            return key in self._d

    def put(self, key, image) -> None:
        nbytes = _nbytes(image)
        with self._lock:
            if key in self._d:
                self._bytes -= _nbytes(self._d.pop(key))
            self._d[key] = image
            self._bytes += nbytes
            while self._bytes > self.max_bytes and len(self._d) > 1:
                _, old = self._d.popitem(last=False)
                self._bytes -= _nbytes(old)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self._bytes = 0

    def __len__(self):
        with self._lock:
            return len(self._d)


def _nbytes(entry) -> int:
    t = entry[0] if isinstance(entry, tuple) else entry
    return t.numel() * t.element_size()


def to_rgba(image: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8 -> contiguous (H, W, 4) uint8 with opaque alpha, on the same device."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {tuple(image.shape)} {image.dtype}")
    if image.shape[2] == 4:
        return image.contiguous()
    alpha = torch.full(image.shape[:2] + (1,), 255, dtype=torch.uint8, device=image.device)
    return torch.cat([image, alpha], dim=2).contiguous()


def rgba_on_render_stream(image: torch.Tensor):
    """(RGBA image, ready event): converted on the current (render) stream; on a GPU the event marks
    the end of that work, for the display's copy to wait on."""
    rgba = to_rgba(image)
    ready = None
    if rgba.is_cuda:
        ready = torch.cuda.Event()
        ready.record(torch.cuda.current_stream(rgba.device))
    return rgba, ready


def fast_renderer(G) -> FrameRenderer:
    """The viewer's renderer: NHWC convolutions (faster super-resolution on a CPU, same pixels to ~1e-6)."""
    return FrameRenderer(G, channels_last=True)


class ResultGate:
    """UI-side filter: newest result of the current epoch wins; older ones are dropped."""

    def __init__(self):
        self.shown_gen = -1
        self.dropped = 0

    def accept(self, r: Result, current_epoch: int) -> bool:
        if r.kind != "frame":
            return True
        if r.epoch != current_epoch or r.gen <= self.shown_gen:
            self.dropped += 1
            return False
        self.shown_gen = r.gen
        return True


class RenderWorker:
    def __init__(self, device: str | torch.device = "cpu", renderer_factory: Callable = fast_renderer,
                 cache_bytes: int = 384 << 20, warm_up: bool = True):
        self.device = torch.device(device)
        self._factory = renderer_factory
        self._cond = threading.Condition()
        self._pending: tuple | None = None         # (gen, settings)
        self._commands: collections.deque = collections.deque()
        self._prefetch: list[RenderSettings] = []
        self._results: collections.deque = collections.deque(maxlen=64)
        self._stop = False
        self._gen = 0
        self.epoch = 0
        self.renderer: FrameRenderer | None = None
        self.model_path: str | None = None
        self.model_name: str = "no model"
        self.model_serial = 0                      # bumped when another generator is installed
        self.backend = ""                          # what volume rendering runs on, and why (status bar)
        self.cache = FrameCache(cache_bytes)       # (epoch, settings) -> (RGBA image, ready event)
        self.busy = False                          # a job taken off the queues is running (under the lock)
        self._running: str | None = None           # the label of the command running, if one is
        self.rendered = 0                          # frames rendered (requests + prefetch)
        self.prefetched = 0
        self.render_s = 0.0                        # recent seconds per rendered frame (EMA)
        self.info: dict = {}                       # (epoch, settings) -> the frame's info, beside the cache
        self.kernels = "volume renderer: not known yet"    # cuda_ops.describe(device), from the warm-up
        self.last_path: dict = {}                  # cuda_ops.last_path() after this worker's latest frame
        self._warm_up = warm_up
        self._warm_thread: threading.Thread | None = None
        self._timings: collections.deque = collections.deque(maxlen=256)   # (time, ms, stages) of every frame
        self._thread = threading.Thread(target=self._run, name="pv3d-render", daemon=True)

    # ------------------------------------------------------------------ UI thread side
    def start(self) -> "RenderWorker":
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the thread to finish its current step and join it."""
        with self._cond:
            self._stop = True
            self._pending = None
            self._prefetch = []
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def generator(self):
        return self.renderer.G if self.renderer is not None else None

    @property
    def has_model(self) -> bool:
        return self.renderer is not None

    def request(self, settings: RenderSettings) -> int:
        """Render ``settings`` next, replacing any request not yet started. Returns its generation."""
        with self._cond:
            self._gen += 1
            self._pending = (self._gen, settings)
            self._cond.notify_all()
            return self._gen

    def prefetch(self, settings: list[RenderSettings]) -> None:
        """Frames to render ahead into the cache when no request is pending (replaces the old list)."""
        with self._cond:
            self._prefetch = list(settings)
            self._cond.notify_all()

    def command(self, fn: Callable[["RenderWorker"], str | None], label: str = "command") -> None:
        """Run ``fn(worker)`` on the worker thread; its return value becomes the result's message."""
        with self._cond:
            self._commands.append((label, fn))
            self._cond.notify_all()

    def load(self, path) -> None:
        def do(w: "RenderWorker"):
            from pv3d_core.io import load_generator

            G = load_generator(path, device=w.device)
            w._install(G, str(path))
            return f"loaded {path}"
        # a newer load replaces older queued loads
        with self._cond:
            self._commands = collections.deque(c for c in self._commands if c[0] != "model")
        self.command(do, "model")

    def set_generator(self, G, name: str = "in-memory model", path: str | None = None) -> None:
        """Install an in-memory generator (``path``: the checkpoint it came from, if it is one)."""
        self.command(lambda w: (w._install(G, path, name), f"using {name}")[1], "model")

    def show_preview(self, G, ws, name: str = "portrait (fitting)", prepared=None) -> None:
        """Show a running fit's current state (:meth:`pv3d_core.live.FitState.snapshot`): its generator
        and latent. Latest wins: a preview still queued is replaced. Unlike :meth:`set_generator` this
        is not a new model (``model_serial`` stays), so a fit's previews never look like a user's load.

        ``prepared`` (:class:`viewer.live_preview.PreparedFrame`): the state's renderer and a frame the
        fit already rendered; it goes into the cache, so that view is shown without rendering it again."""
        def do(w: "RenderWorker"):
            made = prepared if prepared is not None and w.device == prepared.renderer.device else None
            if made is not None:
                w.renderer = made.renderer
            else:
                w.renderer = w._factory(G)
                w.renderer.set_appearance(ws.to(w.device))
            w.model_path, w.model_name = None, name
            w._bump_epoch()
            if made is not None:
                w.cache.put((w.epoch, made.settings), made.frame)
            return None
        with self._cond:
            self._commands = collections.deque(c for c in self._commands if c[0] != "preview")
        self.command(do, "preview")

    def set_appearance(self, ws) -> None:
        """Fixed appearance latent (an inverted portrait); None goes back to seeds."""
        def do(w: "RenderWorker"):
            if w.renderer is None:
                raise RuntimeError("no model loaded")
            w.renderer.set_appearance(None if ws is None else ws.to(w.device))
            w._bump_epoch()
            return "portrait appearance set" if ws is not None else "appearance from seeds"
        self.command(do, "appearance")

    def cached(self, settings: RenderSettings):
        """(RGBA image, ready event) of the current model, or None."""
        return self.cache.get((self.epoch, settings))

    def frame_info(self, settings: RenderSettings) -> dict:
        """The info of a cached frame (e.g. the depth view's range), or {}."""
        return self.info.get((self.epoch, settings), {})

    @property
    def generation(self) -> int:
        """The stamp of the latest request (results older than the one shown are stale)."""
        with self._cond:
            return self._gen

    def results_waiting(self) -> bool:
        return bool(self._results)

    def loading(self) -> bool:
        """A model is queued to be installed (a load or a generator swap not yet done)."""
        with self._cond:
            return any(c[0] == "model" for c in self._commands) or self._running == "model"

    def drain_timings(self) -> list[tuple]:
        """(perf_counter time, ms, stage timings) of every frame rendered since the last call (requests and
        render-ahead), for the performance panel."""
        out = []
        while True:
            try:
                out.append(self._timings.popleft())
            except IndexError:
                return out

    def poll(self) -> list[Result]:
        out = []
        while True:
            try:
                out.append(self._results.popleft())
            except IndexError:
                return out

    def idle(self) -> bool:
        with self._cond:
            return not self.busy and self._pending is None and not self._commands

    # ------------------------------------------------------------------ worker thread side
    def _install(self, G, path: str | None, name: str | None = None) -> None:
        self.renderer = self._factory(G)
        self.model_path = path
        self.model_name = name or (path.rsplit("/", 1)[-1] if path else "model")
        self.model_serial += 1
        self._bump_epoch()
        if self._warm_up and (self._warm_thread is None or not self._warm_thread.is_alive()):
            self._warm_thread = threading.Thread(target=self._describe_kernels, args=(G,), name="pv3d-kernel-warm-up",
                                                 daemon=True)
            self._warm_thread.start()

    def _describe_kernels(self, G=None) -> None:
        """Warm-up thread: which volume renderer runs here for this model's size, building and self-checking
        the kernels if needed (never on the render thread, so the first frame never waits for a compiler)."""
        self.kernels = "volume renderer: checking (a first use builds the CPU kernels, 1-2 s)"
        if self.device.type == "cpu":
            use_threads(RENDER_THREADS)     # the line tells the render thread's count
        try:
            if hasattr(G, "volume_rendering_backend"):
                self.backend = G.volume_rendering_backend()
            else:
                self.backend = cuda_ops.describe(self.device)
            self.kernels = self.backend
        except Exception as e:  # noqa: BLE001 - a status line, never fatal
            log.warning("could not tell which volume renderer runs: %s", e)
            self.kernels = f"volume renderer: unknown ({type(e).__name__}: {e})"

    def _bump_epoch(self) -> None:
        with self._cond:
            self.epoch += 1
            self._prefetch = []
        self.cache.clear()
        self.info = {}

    def _next(self):
        """The next job, marked busy under the same lock that took it off its queue (so that
        :meth:`idle` never sees an empty queue and an idle worker while a job is starting)."""
        with self._cond:
            self.busy = False
            self._running = None
            while True:
                if self._stop:
                    return None
                job = None
                if self._commands:
                    job = ("command",) + self._commands.popleft()
                    self._running = job[1]
                elif self._pending is not None:
                    item, self._pending = self._pending, None
                    job = ("render",) + item
                else:
                    while self._prefetch and self.renderer is not None:
                        s = self._prefetch.pop(0)
                        if (self.epoch, s) not in self.cache:
                            job = ("prefetch", s)
                            break
                if job is not None:
                    self.busy = True
                    return job
                self._cond.wait()

    def _run(self) -> None:
        if self.device.type == "cpu":
            use_threads(RENDER_THREADS)     # its own count, whatever a job's thread sets for itself
        while True:
            job = self._next()
            if job is None:
                return
            kind = job[0]
            t0 = time.perf_counter()
            if kind == "command":
                _, label, fn = job
                try:
                    msg = fn(self)
                    r = Result(gen=0, epoch=self.epoch, kind="model" if label == "model" else "command", message=msg)
                except Exception as e:  # noqa: BLE001 - shown to the user
                    r = Result(gen=0, epoch=self.epoch, kind="model" if label == "model" else "command",
                               error=_describe(e))
                r.elapsed_ms = (time.perf_counter() - t0) * 1e3
                self._results.append(r)
                continue
            if kind == "render":
                _, gen, s = job
            else:
                gen, s = -1, job[1]
            epoch = self.epoch
            if self.renderer is None:
                if kind == "render":
                    self._results.append(Result(gen=gen, epoch=epoch, kind="frame", settings=s,
                                                error="no model loaded"))
                continue
            try:
                frame = self.renderer.render(s)
                self.last_path = cuda_ops.last_path()
                image, ready = rgba_on_render_stream(frame.image)
                self.rendered += 1
                now = time.perf_counter()
                elapsed = now - t0
                self.render_s = elapsed if self.rendered == 1 else 0.7 * self.render_s + 0.3 * elapsed
                self._timings.append((now, elapsed * 1e3, dict(getattr(frame, "timings", None) or {})))
                info = dict(getattr(frame, "info", None) or {})
                if kind == "prefetch":
                    self.prefetched += 1
                if epoch == self.epoch:
                    self.cache.put((epoch, s), (image, ready))
                    if info:
                        if len(self.info) > 4096:
                            self.info = {}
                        self.info[(epoch, s)] = info
                if kind == "render":
                    self._results.append(Result(gen=gen, epoch=epoch, kind="frame", settings=s, image=image,
                                                ready=ready, timings=frame.timings, elapsed_ms=elapsed * 1e3,
                                                info=info))
            except Exception as e:  # noqa: BLE001 - errors are shown in the viewport
                if kind == "render":
                    self._results.append(Result(gen=gen, epoch=epoch, kind="frame", settings=s, error=_describe(e)))
                else:  # a failing prefetch would fail again: stop rendering ahead
                    with self._cond:
                        self._prefetch = []


def _describe(e: BaseException) -> str:
    """One line for the viewport: a user error's message; for anything else (a bug) the exception and
    where it came from, the traceback going to the log with a line on how to report it."""
    if isinstance(e, UserError):
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    log.error("%s\n%s", "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip(), REPORT_BUG)
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    where = ""
    tb = traceback.extract_tb(e.__traceback__)
    if tb:
        f = tb[-1]
        where = f" (at {f.filename.rsplit('/', 1)[-1]}:{f.lineno})"
    return f"{type(e).__name__}: {msg}{where}"
