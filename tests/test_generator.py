"""Behaviour of the generator and the frame pipeline beyond the parity fixture."""
import numpy as np
import pytest
import torch

from pv3d_core.pipeline import FrameRenderer, RenderSettings, seed_latent


def _frames(G, zm, t):
    z = seed_latent(3, G.z_dim)
    from pv3d_core.render.cameras import frontal

    c = torch.from_numpy(frontal()).unsqueeze(0)
    with torch.no_grad():
        ws = G.mapping(z, c, truncation_psi=1)
        return G.synthesis(ws, zm, torch.tensor([t]), c)["image"]


def test_t0_is_the_canonical_frame_for_every_motion_code(tiny_generator):
    G = tiny_generator
    a = _frames(G, seed_latent(1, G.motion_dim), 0.0)
    b = _frames(G, seed_latent(2, G.motion_dim), 0.0)
    assert torch.equal(a, b)
    c = _frames(G, seed_latent(1, G.motion_dim), 0.7)
    d = _frames(G, seed_latent(2, G.motion_dim), 0.7)
    assert (c - d).abs().max() > 1e-3
    assert (a - c).abs().max() > 1e-3


def test_cached_planes_give_the_same_frame(tiny_generator):
    r = FrameRenderer(tiny_generator)
    s = RenderSettings(seed=5, motion_seed=2, t=0.4, yaw=0.2)
    cold = r.render(s.with_(use_cache=False))
    r.render(s.with_(yaw=-0.3))                # fills the cache
    warm = r.render(s)
    assert warm.cached_planes and not cold.cached_planes
    assert torch.equal(cold.image, warm.image)
    assert "backbone" not in warm.timings and "backbone" in cold.timings


def test_camera_changes_the_frame_and_seeds_are_deterministic(tiny_generator):
    r = FrameRenderer(tiny_generator)
    a = r.render(RenderSettings(seed=1)).numpy()
    b = FrameRenderer(tiny_generator).render(RenderSettings(seed=1)).numpy()
    c = r.render(RenderSettings(seed=1, yaw=0.4)).numpy()
    d = r.render(RenderSettings(seed=2)).numpy()
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 1
    assert np.abs(a.astype(int) - d).mean() > 1


def test_view_modes_and_resolution(tiny_generator):
    r = FrameRenderer(tiny_generator)
    for view in ("final", "raw", "depth", "normals"):
        f = r.render(RenderSettings(view=view, resolution=96))
        assert f.image.shape == (96, 96, 3) and f.image.dtype == torch.uint8
    with pytest.raises(ValueError):
        r.render(RenderSettings(view="xray"))
    with pytest.raises(ValueError):
        r.render(RenderSettings(t=1.5))


def test_training_mode_sampling_is_random_and_display_is_not(tiny_generator):
    G = tiny_generator
    z = seed_latent(0, G.z_dim)
    zm = seed_latent(0, G.motion_dim)
    from pv3d_core.render.cameras import frontal

    c = torch.from_numpy(frontal()).unsqueeze(0)
    with torch.no_grad():
        ws = G.mapping(z, c)
        a = G.synthesis(ws, zm, torch.tensor([0.5]), c, deterministic=True)["image_depth"]
        b = G.synthesis(ws, zm, torch.tensor([0.5]), c, deterministic=True)["image_depth"]
        d = G.synthesis(ws, zm, torch.tensor([0.5]), c, deterministic=False)["image_depth"]
    assert torch.equal(a, b) and not torch.equal(a, d)


def test_truncation_pulls_towards_w_avg(tiny_generator):
    G = tiny_generator
    z = seed_latent(9, G.z_dim)
    c = torch.zeros(1, 25)
    with torch.no_grad():
        w1 = G.mapping(z, c, truncation_psi=1)
        w0 = G.mapping(z, c, truncation_psi=0)
        wh = G.mapping(z, c, truncation_psi=0.5)
    assert torch.allclose(w0[0, 0], G.backbone.mapping.w_avg)
    assert torch.allclose(wh, (w0 + w1) / 2, atol=1e-5)
