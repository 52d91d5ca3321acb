"""The render worker: latest request wins, stale results are dropped, errors come back as results."""
import re
import threading
import time

import pytest
import torch

from pv3d_core.pipeline import RenderSettings
from pv3d_viewer.cpu_share import RENDER_THREADS
from pv3d_viewer.worker import RenderWorker, Result, ResultGate


class FakeRenderer:
    """Renders a flat image whose value is the seed; can block on an event or raise."""

    def __init__(self, G):
        self.G = G
        self.rendered = []
        self.gate = G.get("gate")
        self.appearance_ws = None

    def render(self, s):
        if self.gate is not None:
            self.G["started"].set()
            self.gate.wait(10)
        if s.seed == 666:
            raise RuntimeError("boom from the generator")
        self.rendered.append(s.seed)
        return type("F", (), {"image": torch.full((4, 4, 3), s.seed % 256, dtype=torch.uint8),
                              "timings": {"render": 1.0}})()

    def set_appearance(self, ws):
        self.appearance_ws = ws

    def clear_cache(self):
        pass


def wait(pred, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.005)
    return False


def collect(w, n, timeout=10.0):
    out = []
    end = time.time() + timeout
    while len(out) < n and time.time() < end:
        out += w.poll()
        time.sleep(0.005)
    return out


@pytest.fixture
def worker():
    w = RenderWorker("cpu", renderer_factory=FakeRenderer).start()
    yield w
    if w._pending is None and getattr(w.renderer, "gate", None) is not None:
        w.renderer.gate.set()
    w.stop()
    assert not w.alive, "the worker thread must be joined on stop"


def test_a_preview_the_fit_rendered_is_shown_without_rendering_it_again(worker):
    """show_preview with a prepared frame (rendered on the fit's thread, viewer.live_preview): the worker
    takes the fit's renderer and caches the frame at its settings for the new epoch; it renders nothing.
    Other settings are rendered by that renderer as usual (orbiting during a fit)."""
    from pv3d_viewer.live_preview import PreparedFrame

    worker.set_generator({}, name="base")
    assert wait(lambda: worker.renderer is not None)
    fit_renderer = FakeRenderer({})
    fit_renderer.device = worker.device
    view = RenderSettings(seed=5, yaw=0.3)
    frame = (torch.full((4, 4, 4), 77, dtype=torch.uint8), None)
    worker.show_preview({}, torch.zeros(1, 2), prepared=PreparedFrame(fit_renderer, view, frame))
    assert wait(worker.idle)
    assert worker.renderer is fit_renderer and fit_renderer.rendered == []
    assert worker.cached(view) is frame and worker.cached(RenderSettings(seed=6)) is None
    worker.request(RenderSettings(seed=6))
    assert wait(lambda: fit_renderer.rendered == [6])


def test_latest_request_wins(worker):
    gate, started = threading.Event(), threading.Event()
    worker.set_generator({"gate": gate, "started": started})
    assert [r.kind for r in collect(worker, 1)] == ["model"]
    worker.request(RenderSettings(seed=1))
    assert started.wait(5)                       # seed 1 is rendering (blocked on the gate)
    gens = [worker.request(RenderSettings(seed=s)) for s in (2, 3, 4, 5)]
    assert gens == sorted(gens)
    gate.set()
    results = collect(worker, 2)
    assert [r.settings.seed for r in results] == [1, 5]     # 2, 3, 4 were superseded before they started
    assert worker.renderer.rendered == [1, 5]
    assert results[1].gen == gens[-1]
    assert torch.all(results[1].image[..., :3] == 5) and torch.all(results[1].image[..., 3] == 255)


def test_gate_drops_stale_results_and_other_epochs():
    gate = ResultGate()
    frame = lambda gen, epoch: Result(gen=gen, epoch=epoch, kind="frame")
    assert gate.accept(frame(3, 1), current_epoch=1)
    assert not gate.accept(frame(2, 1), current_epoch=1)       # older than the one shown
    assert not gate.accept(frame(3, 1), current_epoch=1)
    assert not gate.accept(frame(9, 0), current_epoch=1)       # rendered by the previous model
    assert gate.accept(frame(4, 1), current_epoch=1)
    assert gate.dropped == 3
    assert gate.accept(Result(gen=0, epoch=0, kind="model"), current_epoch=1)


def test_results_of_a_replaced_model_are_stale(worker):
    gate, started = threading.Event(), threading.Event()
    worker.set_generator({"gate": gate, "started": started})
    collect(worker, 1)
    worker.request(RenderSettings(seed=7))
    assert started.wait(5)
    worker.set_generator({})                       # a new model while seed 7 renders
    gate.set()
    results = collect(worker, 2)
    frame = [r for r in results if r.kind == "frame"][0]
    assert frame.epoch == 1 and worker.epoch == 2
    assert not ResultGate().accept(frame, worker.epoch)
    assert len(worker.cache) == 0                 # and it did not enter the new model's cache


def test_errors_come_back_as_results_and_the_worker_keeps_going(worker):
    worker.set_generator({})
    collect(worker, 1)
    worker.request(RenderSettings(seed=666))
    (r,) = collect(worker, 1)
    assert r.error and "RuntimeError" in r.error and "boom from the generator" in r.error and r.image is None
    worker.request(RenderSettings(seed=8))
    (r,) = collect(worker, 1)
    assert r.error is None and torch.all(r.image[..., :3] == 8)
    assert worker.alive


def test_no_model_and_bad_checkpoint_are_reported(worker, tmp_path):
    worker.request(RenderSettings(seed=1))
    (r,) = collect(worker, 1)
    assert r.error == "no model loaded"
    bad = tmp_path / "bad.safetensors"
    bad.write_text("not a checkpoint")
    worker.load(bad)
    (r,) = collect(worker, 1)
    assert r.kind == "model" and r.error and "is not a readable safetensors file" in r.error   # a user error: its message
    worker.load(tmp_path / "missing.ckpt")
    (r,) = collect(worker, 1)
    assert "not found" in r.error and not worker.has_model


def test_prefetch_fills_the_frame_cache_when_idle(worker):
    worker.set_generator({})
    collect(worker, 1)
    todo = [RenderSettings(seed=s) for s in range(10, 16)]
    worker.prefetch(todo)
    assert wait(lambda: all(worker.cached(s) is not None for s in todo))
    assert worker.prefetched == 6 and worker.poll() == []      # prefetch publishes no results
    worker.prefetch(todo)                                       # already cached: nothing re-rendered
    time.sleep(0.1)
    assert worker.prefetched == 6
    worker.set_appearance(torch.zeros(1, 2, 3))                 # a new appearance empties the cache
    collect(worker, 1)
    assert worker.cached(todo[0]) is None


def test_real_generator_renders_and_caches(tiny_generator):
    w = RenderWorker("cpu").start()
    try:
        w.set_generator(tiny_generator, "tiny")
        s = RenderSettings(resolution=32)
        w.request(s)
        results = collect(w, 2, timeout=60)
        frame = [r for r in results if r.kind == "frame"][0]
        # RGBA, made on the render thread (the display uploads it as it is); no CUDA event on the CPU
        assert frame.error is None and frame.image.shape == (32, 32, 4) and frame.image.dtype == torch.uint8
        assert frame.ready is None and bool((frame.image[..., 3] == 255).all())
        assert set(frame.timings) >= {"backbone", "render"}
        image, ready = w.cached(s)
        assert torch.equal(image, frame.image) and ready is None
    finally:
        w.stop()
    assert not w.alive


def test_a_job_taken_off_the_queue_is_busy_at_once():
    """busy was set after the lock that took the job was released: idle() could answer True while a
    render was starting. The worker thread's first step, run here by hand, shows it."""
    w = RenderWorker("cpu", renderer_factory=FakeRenderer)       # not started: this thread plays its part
    w.request(RenderSettings(seed=1))
    assert not w.idle()
    job = w._next()
    assert job[0] == "render" and w._pending is None
    assert not w.idle()                   # the queue is empty, but the render has started
    w.command(lambda worker: "done", "command")
    assert w._next()[0] == "command" and not w.idle()


def test_the_kernel_build_never_delays_the_first_frame(tiny_generator, monkeypatch):
    """The worker builds the CPU kernels in a warm-up thread when a model is installed; frames asked for
    meanwhile render with the PyTorch reference instead of waiting for the compiler."""
    from pv3d_core import native
    from pv3d_core.render import cpu_kernels, cuda_ops
    from pv3d_viewer.worker import RenderWorker

    if cuda_ops.kernels_mode() == "off" or native.compiler() is None:
        pytest.skip("no CPU kernels here")
    real_build = cpu_kernels._build
    started = threading.Event()

    def slow_build(dims):
        started.set()
        time.sleep(2.0)                  # a first compile on a slow machine
        return real_build(dims)          # (the disk cache makes the real one quick)

    monkeypatch.setattr(cpu_kernels, "_libs", {})
    monkeypatch.setattr(cpu_kernels, "_build", slow_build)
    w = RenderWorker("cpu").start()
    try:
        w.set_generator(tiny_generator, "tiny")
        assert started.wait(10)
        t0 = time.perf_counter()
        w.request(RenderSettings(resolution=32))
        frame = None
        while frame is None and time.perf_counter() - t0 < 30:
            frame = next((r for r in w.poll() if r.kind == "frame"), None)
            time.sleep(0.005)
        first = time.perf_counter() - t0
        assert frame is not None and frame.error is None
        assert first < 1.5, f"the first frame waited {first:.2f} s for the compiler"
        assert w.last_path["path"] == "pytorch" and "compiling" in w.last_path["reason"]
        assert "compiling" in w.kernels or "checking" in w.kernels
        end = time.time() + 30
        while not w.kernels.startswith("CPU kernels") and time.time() < end:
            time.sleep(0.05)
        assert w.kernels.startswith("CPU kernels")
        w.request(RenderSettings(resolution=32, yaw=0.1))
        end = time.time() + 30
        while not any(r.kind == "frame" for r in w.poll()) and time.time() < end:
            time.sleep(0.005)
        assert w.last_path["path"] == "cpu-kernels"
    finally:
        w.stop()
    assert isinstance(w.renderer.G, torch.nn.Module)


def test_worker_says_what_volume_rendering_runs_on(tiny_generator):
    """The status bar's "volume rendering: ..." comes from the model once installed (kernels compiled and
    self-checked then, on the warm-up thread), with the render thread's own thread count."""
    w = RenderWorker("cpu").start()
    try:
        w.set_generator(tiny_generator, "tiny")
        assert wait(lambda: w.has_model and w.backend, 60)
        here = tiny_generator.volume_rendering_backend()
        own = f"{RENDER_THREADS} thread{'' if RENDER_THREADS == 1 else 's'}"
        assert w.backend and w.backend == re.sub(r"\d+ threads?", own, here)
        assert w.backend.startswith(("CPU kernels (", "PyTorch ("))
    finally:
        w.stop()


def test_a_fits_preview_shows_its_state_without_looking_like_a_new_model(worker):
    """show_preview (a running portrait fit's state): the latest queued preview wins, the latent is set,
    the cache starts over, and model_serial stays (the app tells a user's load by it)."""
    gate = threading.Event()
    worker.set_generator({"gate": gate, "started": threading.Event()}, name="base")
    assert wait(lambda: worker.renderer is not None)
    serial = worker.model_serial
    worker.request(RenderSettings(seed=1))
    assert wait(lambda: worker.renderer.G["started"].is_set())   # the worker is busy rendering
    worker.show_preview({}, torch.zeros(1, 2), name="portrait (w+, fitting)")
    worker.show_preview({"n": 2}, torch.ones(1, 2), name="portrait (pti, fitting)")
    gate.set()
    assert wait(worker.idle)
    assert worker.renderer.G == {"n": 2} and torch.equal(worker.renderer.appearance_ws, torch.ones(1, 2))
    assert worker.model_name == "portrait (pti, fitting)" and worker.model_serial == serial
    assert worker.model_path is None
