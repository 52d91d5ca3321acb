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


def test_motion_reference_gives_the_reference_change_over_t(tiny_generator):
    """planes(ws, z, t) = own planes at t = 0 + the reference's change from t = 0 (cached still part
    refreshed when ws changes); with its own synthesis as the reference nothing changes."""
    import copy

    G = copy.deepcopy(tiny_generator)
    g = torch.Generator().manual_seed(0)
    ws = G.mapping(torch.randn(1, G.z_dim, generator=g), torch.zeros(1, 25))
    z = torch.randn(1, G.motion_dim, generator=g)
    t, t0, z0 = torch.tensor([0.7]), torch.zeros(1), torch.zeros(1, G.motion_dim)
    with torch.no_grad():
        plain = G.planes(ws, z, t, noise_mode="const")
        G.set_motion_reference(G.backbone.synthesis)
        assert torch.allclose(G.planes(ws, z, t, noise_mode="const"), plain, atol=1e-5)
        other = copy.deepcopy(tiny_generator)
        for p in other.backbone.synthesis.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
        G.set_motion_reference(other.backbone.synthesis)
        for w in (ws, ws + 0.5, ws):                                   # the cache follows ws
            want = G.backbone.synthesis(w, z0, t0, noise_mode="const") + other.planes(w, z, t, noise_mode="const") \
                .flatten(1, 2) - other.planes(w, z0, t0, noise_mode="const").flatten(1, 2)
            assert torch.allclose(G.planes(w, z, t, noise_mode="const").flatten(1, 2), want, atol=1e-5)
        assert torch.equal(G.planes(ws, z, t0, noise_mode="const"), tiny_generator.planes(ws, z, t0, noise_mode="const"))
    assert "motion_reference.b4.conv1.weight" in G.state_dict()
    assert "motion_reference.b4.conv1.weight" not in G.set_motion_reference(None).state_dict()


def test_nhwc_generator_renders_what_the_nchw_one_does(tiny_generator):
    """set_channels_last (what the viewer runs): the same planes and images as NCHW within rounding, for a
    batch of two; the tri-planes and the feature image come out with the channels innermost (the
    renderer's and the super-resolution's layout), so nothing converts them back and forth."""
    import copy

    from pv3d_core.render import cameras

    G = copy.deepcopy(tiny_generator).eval().requires_grad_(False)
    z = torch.cat([seed_latent(s, G.z_dim) for s in (3, 4)])
    zm = torch.cat([seed_latent(s, G.motion_dim) for s in (1, 2)])
    t = torch.tensor([0.3, 0.8])
    c = torch.from_numpy(np.stack([cameras.pack(cameras.orbit_cam2world(y, 0.1)).reshape(25) for y in (-0.3, 0.4)])).float()
    out = {}
    for nhwc in (False, True):
        G.set_channels_last(nhwc)
        with torch.no_grad():
            ws = G.mapping(z, c, truncation_psi=0.7)
            planes = G.planes(ws, zm, t, noise_mode="const")
            out[nhwc] = dict(G.render_planes(planes, ws, c), planes=planes)
    for k in ("planes", "feature_image", "image_raw", "image"):
        torch.testing.assert_close(out[True][k], out[False][k], rtol=1e-4, atol=1e-4, msg=k)
        assert out[False][k].is_contiguous(), k
    p = out[True]["planes"]
    assert p.shape[:3] == (2, 3, G.plane_channels) and p.stride(2) == 1     # channels innermost
    assert out[True]["feature_image"].is_contiguous(memory_format=torch.channels_last)
    assert out[True]["image"].is_contiguous(memory_format=torch.channels_last)


def test_seed_latents_are_numpys_codes_in_new_tensors():
    """pipeline.seed_latent keeps the codes it made (a scrub asks for the same motion seed's every frame);
    each call hands out a new tensor, so a caller writing to one does not change the next."""
    import numpy as np

    from pv3d_core.pipeline import seed_latent

    z = seed_latent(12, 64)
    assert torch.equal(z, torch.from_numpy(np.random.RandomState(12).randn(1, 64).astype(np.float32)))
    made = z.clone()
    z.add_(1.0)
    assert torch.equal(seed_latent(12, 64), made)
    assert torch.equal(seed_latent(12 + 2 ** 32, 64), seed_latent(12, 64))
    assert not torch.equal(seed_latent(13, 64), seed_latent(12, 64))
