"""Inversion on the tiny model: a render of the model itself is recovered; results save and load."""
import numpy as np
import pytest
import torch

from pv3d_core.invert import (InversionConfig, invert, invert_video, load_portrait, load_reconstruction, psnr,
                              save_portrait, save_video_reconstruction)
from pv3d_core.pipeline import FrameRenderer, RenderSettings

# few steps: a gentle PTI rate (the default 2e-3 is tuned for the default 300 steps)
FAST = InversionConfig(w_steps=25, pti_steps=10, pti_lr=3e-4, w_avg_samples=200)


def _target(G, **kw):
    s = RenderSettings(psi=0.7, **kw)
    img = FrameRenderer(G).render(s).image.permute(2, 0, 1)[None].float() / 127.5 - 1
    return img, s.camera()


@pytest.fixture(scope="module")
def inverted(tiny_generator):
    tgt, cam = _target(tiny_generator, seed=11, yaw=0.15)
    return tgt, invert(tiny_generator, tgt, cam, FAST)


def test_inversion_reconstructs_the_models_own_render(tiny_generator, inverted):
    tgt, res = inverted
    other, _ = _target(tiny_generator, seed=3, yaw=0.15)
    assert res.metrics["psnr"] > psnr(other, tgt) + 5, res.metrics
    losses = [h[2] for h in res.history if h[0] == "w"]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    # PTI changed a copy, never the input generator
    assert res.generator is not tiny_generator


def test_inversion_is_deterministic_under_a_seed(tiny_generator):
    tgt, cam = _target(tiny_generator, seed=11, yaw=0.15)
    quick = InversionConfig(w_steps=4, pti_steps=2, w_avg_samples=100)
    a, b = invert(tiny_generator, tgt, cam, quick), invert(tiny_generator, tgt, cam, quick)
    assert torch.equal(a.ws, b.ws)
    for pa, pb in zip(a.generator.parameters(), b.generator.parameters()):
        assert torch.equal(pa, pb)


def test_saved_portrait_renders_the_same_frame(tmp_path, inverted):
    _, res = inverted
    path = save_portrait(tmp_path / "p.safetensors", res)
    G, ws, meta = load_portrait(path)
    assert meta["kind"] == "portrait"
    cam = torch.from_numpy(res.camera)[None]
    with torch.no_grad():
        zm, t = torch.zeros(1, G.motion_dim), torch.zeros(1)
        a = res.generator.synthesis(res.ws, zm, t, cam)["image"]
        b = G.synthesis(ws, zm, t, cam)["image"]
    assert torch.equal(a, b)


def test_cancel_stops_inversion(tiny_generator):
    import threading

    from pv3d_core.export import Cancelled

    ev = threading.Event()
    tgt, cam = _target(tiny_generator, seed=1)
    seen = []

    def prog(phase, step, total, loss):
        seen.append(step)
        if step == 3:
            ev.set()

    with pytest.raises(Cancelled):
        invert(tiny_generator, tgt, cam, FAST, progress=prog, cancel=ev)
    assert max(seen) == 3


def test_bad_target_shape(tiny_generator):
    with pytest.raises(ValueError, match="target"):
        invert(tiny_generator, torch.zeros(1, 3, 64, 64), np.zeros(25), FAST)


def test_video_reconstruction_fits_timestamps(tmp_path, tiny_generator):
    """The timestamps are fitted parameters: they leave their even initialisation while the motion
    phase's loss falls, the reported quality is that of the frames rendered at them, and they are what
    is saved. (Eight steps on a random model do not recover the true times, so that is not asserted.)"""
    G = tiny_generator
    r = FrameRenderer(G)
    true_ts = [0.0, 0.9, 0.3, 0.6]
    frames = torch.stack([r.render(RenderSettings(seed=5, motion_seed=2, t=t, psi=0.7)).image.permute(2, 0, 1)
                          .float() / 127.5 - 1 for t in true_ts])
    cams = np.stack([RenderSettings().camera()] * 4)
    res = invert_video(G, frames, cams, InversionConfig(w_steps=12, pti_steps=0, w_avg_samples=100),
                       motion_steps=8, batch=2)
    assert res.ts[0] == 0 and res.ts.shape == (4,) and bool(((res.ts >= 0) & (res.ts <= 1)).all())

    def scores(ts):
        with torch.no_grad():
            out = [res.generator.synthesis(res.ws, res.z_motion, ts[i:i + 1], torch.from_numpy(cams[i:i + 1]),
                                           noise_mode="const", deterministic=True)["image"] for i in range(4)]
        return [psnr(o, frames[i:i + 1]) for i, o in enumerate(out)]

    initial = torch.cat([torch.zeros(1), torch.linspace(0, 1, 4)[1:].clamp(0.02, 0.98)])
    assert (res.ts[1:] - initial[1:]).abs().max() > 1e-3
    motion = [h[2] for h in res.history if h[0] == "motion"]
    assert len(motion) == 8 and np.mean(motion[-3:]) < np.mean(motion[:3])
    fitted = scores(res.ts)
    assert np.mean(fitted) == pytest.approx(res.metrics["psnr_mean"], abs=1e-4)
    assert min(fitted) == pytest.approx(res.metrics["psnr_min"], abs=1e-4)
    assert np.mean(scores(initial)) != pytest.approx(np.mean(fitted), abs=1e-6)   # the times matter
    path = save_video_reconstruction(tmp_path / "v.safetensors", res)
    G2, extras, meta = load_reconstruction(path)
    assert meta["kind"] == "video" and torch.equal(extras["ts"], res.ts)


def test_geometry_term_keeps_the_pivot_shape_from_side_views(tiny_generator):
    """PTI with the geometry term changes the pivot's side-view depth less than without it."""
    from pv3d_core.render import cameras

    tgt, cam = _target(tiny_generator, seed=5, yaw=0.1)
    side = torch.from_numpy(cameras.OrbitCamera(yaw=0.45).c())[None]
    zm, t0 = torch.zeros(1, tiny_generator.motion_dim), torch.zeros(1)
    change = {}
    for gw in (0.0, 5.0):
        cfg = InversionConfig(w_steps=4, pti_steps=8, pti_lr=2e-3, geometry_weight=gw, locality_weight=0,
                              w_avg_samples=100)
        res = invert(tiny_generator, tgt, cam, cfg)
        with torch.no_grad():
            before = tiny_generator.synthesis(res.ws, zm, t0, side)["image_depth"]
            after = res.generator.synthesis(res.ws, zm, t0, side)["image_depth"]
        change[gw] = float((after - before).abs().mean())
    assert change[5.0] < 0.7 * change[0.0], change
