"""Background export jobs: progress, cancel, atomic output, clear messages for missing modules."""
import sys
import time

import numpy as np
import pytest
import torch

from pv3d_core.export import ClipSpec, clip_settings
from pv3d_core.pipeline import FrameRenderer, RenderSettings
from pv3d_viewer import jobs as J


def run(job, timeout=120):
    job.join(timeout)
    assert job.done
    return job


def test_mp4_job_writes_a_clip_whose_frames_match_the_renderer(tmp_path, tiny_generator):
    import imageio.v3 as iio

    base = RenderSettings(seed=3, motion_seed=2, resolution=64)
    spec = ClipSpec(frames=4, camera="orbit")
    progress = []
    job = J.Job("MP4", J.mp4_job(tiny_generator, base, spec, 10.0, tmp_path / "out.mp4"))
    job.report = (lambda orig: (lambda i, n, s=None: (progress.append(i), orig(i, n, s))))(job.report)
    run(job.start())
    assert job.error is None, job.error
    assert job.result == str(tmp_path / "out.mp4") and job.progress == 1.0 and progress == [1, 2, 3, 4]
    frames = np.stack(list(iio.imiter(tmp_path / "out.mp4")))
    assert frames.shape == (4, 64, 64, 3)
    r = FrameRenderer(tiny_generator)
    for f, s in zip(frames, clip_settings(base, spec)):
        ref = r.render(s).numpy().astype(np.float64)
        mse = np.mean((f.astype(np.float64) - ref) ** 2)
        assert 10 * np.log10(255 ** 2 / max(mse, 1e-9)) > 30
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_cancelled_export_leaves_nothing(tmp_path, tiny_generator):
    base = RenderSettings(resolution=32)
    job = J.Job("MP4", J.mp4_job(tiny_generator, base, ClipSpec(frames=200), 10.0, tmp_path / "c.mp4"))
    job.start()
    time.sleep(0.3)
    job.cancel()
    run(job)
    assert job.cancelled and job.status == "cancelled" and job.error is None
    assert list(tmp_path.iterdir()) == []


def test_export_into_an_unwritable_place_fails_with_a_message(tmp_path, tiny_generator):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    job = run(J.Job("PNG", J.png_job(np.zeros((8, 8, 3), np.uint8), blocker / "sub" / "x.png")).start())
    assert job.status == "failed" and "cannot create folder" in job.error


def test_png_job(tmp_path):
    from PIL import Image

    img = (np.arange(8 * 8 * 3) % 256).astype(np.uint8).reshape(8, 8, 3)
    job = run(J.Job("PNG", J.png_job(img, tmp_path / "f.png")).start())
    assert job.error is None and np.array_equal(np.asarray(Image.open(tmp_path / "f.png")), img)


def fake_portrait_module():
    """A stand-in for pv3d_core.portrait with its config and a model without an encoder; tests set
    ``prepare_and_invert``."""
    import types

    from pv3d_core.portrait import PortraitConfig

    fake = types.ModuleType("pv3d_core.portrait")
    fake.PortraitConfig = PortraitConfig
    fake.find_encoder = lambda G, which="auto": (None, "no encoder beside the model")
    return fake


def test_portrait_job_hands_back_the_latent(tmp_path, tiny_generator, monkeypatch):
    import types

    import torch

    fake = fake_portrait_module()
    calls = []

    from pv3d_core.live import FitState

    seen = {}

    def prepare_and_invert(image_path, G, progress=None, cancel=None, on_state=None, config=None, encoder=None):
        # pv3d_core.portrait's progress signature: progress(stage, step, total, loss)
        calls.append(image_path)
        progress("align", 1, 1, 0.0)
        seen["align"] = (job.status, job.progress)
        # then the fit's states (pv3d_core.live) for the viewer to show, and the steps for the bar
        on_state(FitState("w", 1, 200, torch.zeros(1, 3), G, eta_s=75.0))
        progress("w", 100, 200, 0.5)
        seen["w"] = (job.status, job.progress)
        on_state(FitState("pti", 300, 300, torch.ones(1, 3), G, final=True))
        progress("pti", 300, 300, 0.1)
        return types.SimpleNamespace(ws=torch.ones(1, 3), generator=G, yaw_pitch=(0.3, -0.1))
    fake.prepare_and_invert = prepare_and_invert
    monkeypatch.setitem(sys.modules, "pv3d_core.portrait", fake)
    import pv3d_core

    monkeypatch.setattr(pv3d_core, "portrait", fake, raising=False)   # an earlier import set the attribute
    body = J.portrait_job(tmp_path / "face.png", tiny_generator)
    job = J.Job("portrait", body)
    job = run(job.start())
    assert job.error is None and torch.equal(job.result, torch.ones(1, 3)) and calls == [tmp_path / "face.png"]
    # one bar over the stages, weighted (no encoder here: 200 latent steps, then 300 PTI steps at 3.5 each)
    assert seen["align"][0] == "finding the face 1/1" and seen["w"][0].startswith("fitting the latent 100/200")
    assert 0 < seen["align"][1] < seen["w"][1] < 0.2 and job.progress == 1.0
    latest = body.latest.take()                 # the newest state, for the viewer to show (latest wins)
    assert latest.stage == "pti" and latest.final and torch.equal(latest.ws, torch.ones(1, 3))
    assert body.latest.take() is None
    # the app shows the tuned generator from the photo's camera
    assert job.tuned_generator is tiny_generator and job.portrait_view == (0.3, -0.1)


def test_output_names_do_not_collide(tmp_path):
    s = RenderSettings(seed=4, motion_seed=5)
    a = J.output_name(tmp_path, s, "mp4")
    a.write_text("x")
    b = J.output_name(tmp_path, s, "mp4")
    assert a != b and a.name.startswith("pv3d_seed4_motion5")


def test_fitted_portrait_is_shown_from_the_photos_camera_at_t0():
    import math
    import types

    from pv3d_viewer import state as S
    from pv3d_viewer.actions import Actions

    app = types.SimpleNamespace(st=S.ViewerState())
    actions = Actions(app)
    actions.portrait_view = (math.radians(-35.8), math.radians(6.3))
    app.st.t, app.st.playing, app.st.yaw = 0.7, True, 12.0
    actions.apply_portrait_view()
    assert app.st.yaw == pytest.approx(-35.8) and app.st.pitch == pytest.approx(6.3)
    assert app.st.t == 0.0 and not app.st.playing
    assert actions.portrait_view is None          # applied once; the user orbits freely afterwards
    app.st.yaw = 5.0
    actions.apply_portrait_view()
    assert app.st.yaw == 5.0


# ------------------------------------------------------------------------------------ completions (UI thread)

class _FakeWorker:
    """What Actions needs of the render worker: the model shown and the commands it is given."""

    def __init__(self, G, name="model.safetensors"):
        self.generator, self.model_name, self.model_serial = G, name, 1
        self.model_path, self.device = None, "cpu"
        self.renderer = None
        self.queued_load = False
        self.calls = []

    def loading(self):
        return self.queued_load

    def set_generator(self, G, name="in-memory model", path=None):
        self.calls.append(("set_generator", name))
        self.generator, self.model_name, self.model_serial = G, name, self.model_serial + 1

    def set_appearance(self, ws):
        self.calls.append(("set_appearance", None if ws is None else "ws"))

    def show_preview(self, G, ws, name="portrait (fitting)", prepared=None):
        self.calls.append(("show_preview", name))
        self.prepared = prepared                             # the frame the fit rendered, if any
        self.generator, self.model_name = G, name          # not a new model: the serial stays

    def load(self, path):
        self.calls.append(("load", str(path)))
        self.generator, self.model_name, self.model_serial = object(), str(path), self.model_serial + 1


def _viewer(monkeypatch, G):
    import types

    from pv3d_viewer import state as S
    from pv3d_viewer.actions import Actions

    app = types.SimpleNamespace(st=S.ViewerState(), worker=_FakeWorker(G), jobs=J.JobManager(), message="",
                                viewport_error=None, notice=None, portrait_active=False, settings=None)
    app.actions = Actions(app)
    fake = fake_portrait_module()
    fake.prepare_and_invert = lambda path, G, **kw: types.SimpleNamespace(
        ws="latent", generator=("tuned", G), yaw_pitch=(0.1, 0.0))
    import pv3d_core

    monkeypatch.setitem(sys.modules, "pv3d_core.portrait", fake)
    monkeypatch.setattr(pv3d_core, "portrait", fake, raising=False)
    return app


def _finish(app, job):
    job.join(30)
    assert job.done
    app.jobs.collect()


def test_a_portrait_fitted_while_another_model_loaded_is_not_shown_over_it(monkeypatch):
    """The fit used to be applied over whatever model was loaded when it finished, and "back to seeds"
    then restored that model instead of the one the portrait came from."""
    base = object()
    app = _viewer(monkeypatch, base)
    job = app.actions.fit_portrait("face.png")
    app.actions.load_checkpoint("other.safetensors")        # the user loads another model meanwhile
    _finish(app, job)
    assert not app.portrait_active and not any("pivotal-tuned" in c[1] for c in app.worker.calls)
    assert "another model was loaded" in app.message
    # undisturbed, the fit is shown, and "back to seeds" restores the model it was fitted on
    app = _viewer(monkeypatch, base)
    _finish(app, app.actions.fit_portrait("face.png"))
    assert app.portrait_active and app.worker.generator == ("tuned", base)
    app.actions.do("clear_portrait")
    assert app.worker.generator is base and not app.portrait_active
    assert app.worker.calls[-2:] == [("set_generator", "model.safetensors"), ("set_appearance", None)]


def test_a_second_photo_is_fitted_on_the_model_not_on_the_first_portrait(monkeypatch):
    base = object()
    app = _viewer(monkeypatch, base)
    _finish(app, app.actions.fit_portrait("a.png"))
    _finish(app, app.actions.fit_portrait("b.png"))
    assert app.worker.generator == ("tuned", base)           # not ("tuned", ("tuned", base))
    app.actions.clear_portrait()
    assert app.worker.generator is base


def _live_fit(monkeypatch, base):
    """A viewer whose fit hands out one state, then waits until it is cancelled or let go."""
    import threading
    import types

    import torch

    from pv3d_core.errors import Cancelled
    from pv3d_core.live import FitState

    app = _viewer(monkeypatch, base)
    go = threading.Event()

    def prepare_and_invert(path, G, progress=None, cancel=None, on_state=None, **kw):
        on_state(FitState("w+", 0, 4, torch.zeros(1, 3), G, camera=None))
        while not go.is_set():
            if cancel.is_set():
                raise Cancelled("cancelled")
            go.wait(0.01)
        return types.SimpleNamespace(ws="latent", generator=("tuned", G), yaw_pitch=(0.1, 0.0))
    sys.modules["pv3d_core.portrait"].prepare_and_invert = prepare_and_invert
    job = app.actions.fit_portrait("face.png")
    for _ in range(500):
        if job.latest is not None and job.latest.serial:
            break
        job.join(0.01)
    return app, job, go


def test_a_running_fit_is_shown_live_and_a_cancelled_one_goes_back_to_the_model(monkeypatch):
    base = object()
    app, job, go = _live_fit(monkeypatch, base)
    app.actions.update_fit_preview()            # the UI loop: the newest state goes to the worker
    assert app.worker.calls[-1] == ("show_preview", "portrait (w+, fitting)") and app.portrait_active
    n = len(app.worker.calls)
    app.actions.update_fit_preview()            # nothing new: nothing sent
    assert len(app.worker.calls) == n
    job.cancel()
    _finish(app, job)
    assert app.worker.generator is base and not app.portrait_active and "cancelled" in app.message
    assert app.actions.fit_job is None and app.actions.portrait_base is None
    # finished normally, the tuned generator replaces the previews; the serial never changed meanwhile
    app, job, go = _live_fit(monkeypatch, base)
    app.actions.update_fit_preview()
    go.set()
    _finish(app, job)
    assert app.worker.generator == ("tuned", base) and app.portrait_active and app.actions.fit_job is None
    # a preview never shows over a model the user loaded meanwhile
    app, job, go = _live_fit(monkeypatch, base)
    app.actions.load_checkpoint("other.safetensors")
    app.actions.update_fit_preview()
    assert ("show_preview", "portrait (w+, fitting)") not in app.worker.calls
    go.set()
    _finish(app, job)
    assert app.worker.model_name == "other.safetensors"


def test_completion_callbacks_run_on_the_ui_thread_and_their_errors_are_not_swallowed(caplog):
    import threading

    seen = []

    def done(job):
        seen.append(threading.current_thread())
        raise KeyError("a bug in the completion")

    jm = J.JobManager()
    job = jm.start("PNG", lambda job: "out.png", done)
    job.join(30)
    with caplog.at_level("ERROR"):
        handled = jm.collect()
    assert handled == [job] and seen == [threading.current_thread()]
    assert "completing it failed" in job.error and "a bug in the completion" in job.error
    assert "Traceback" in caplog.text and "KeyError" in caplog.text
    assert jm.collect() == []                                # handled once


def test_finished_jobs_are_forgotten_and_let_go_of_their_generators():
    import gc
    import weakref

    class Big:
        pass

    jm = J.JobManager()
    refs = []
    for i in range(J.JobManager.KEEP_FINISHED + 5):
        big = Big()
        refs.append(weakref.ref(big))

        def body(job, big=big):
            job.tuned_generator = big
            return big
        jm.start("portrait", body).join(30)
        del big, body
    jm.collect()
    gc.collect()
    assert len(jm.jobs) == J.JobManager.KEEP_FINISHED
    assert all(r() is None for r in refs)                    # nothing keeps a tuned generator alive
    jm.prune(now=time.time() + J.JobManager.KEEP_S + 1)
    assert jm.jobs == []


def test_live_preview_renders_the_fits_state_at_the_viewports_view(tiny_generator):
    """viewer.live_preview: each snapshot comes with a frame at the view the UI set, from a renderer
    holding the snapshot's latent; no view, no frame; a frame that cannot be rendered is left out (the fit
    goes on)."""
    from pv3d_core.live import FitState
    from pv3d_core.pipeline import RenderSettings
    from pv3d_viewer.live_preview import LivePreview

    import copy

    # a copy: the viewer's renderer sets channels-last flags on the generator it renders, which the
    # session's other tests must not inherit
    G = copy.deepcopy(tiny_generator).eval().requires_grad_(False)
    ws = G.mapping(torch.randn(1, G.z_dim), torch.zeros(1, 25)).detach()
    live = LivePreview(min_interval_s=0.0)
    live(FitState("encoder", 1, 1, ws, G))               # each new stage is always shown
    assert live.take().extra["prepared"] is None                       # the UI has not said which view
    live.view = RenderSettings(yaw=0.2, resolution=64)
    live(FitState("w+", 2, 10, ws, G))
    p = live.take().extra["prepared"]
    assert p.settings == live.view and tuple(p.frame[0].shape) == (64, 64, 4)
    assert torch.equal(p.renderer.appearance_ws, ws)
    assert torch.equal(p.renderer.render(live.view).image, p.frame[0][..., :3])      # the same picture
    live.view = RenderSettings(t=2.0)                                   # out of range: render fails
    live(FitState("pti", 3, 10, ws, G, tuned=True))
    assert live.take().extra["prepared"] is None
