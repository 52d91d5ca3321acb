import math

import numpy as np
import pytest
import torch

from pv3d_core.render import cameras as C


def test_frontal_camera_hand_computed():
    c = C.frontal()
    m, k = C.unpack(c)
    # at pivot + radius * (0, 0, 1), looking down -z; OpenCV axes with camera y pointing world-down
    np.testing.assert_allclose(m[:3, 3], [0, 0, 2.9], atol=1e-6)
    np.testing.assert_allclose(m[:3, 2], [0, 0, -1], atol=1e-6)   # forward
    np.testing.assert_allclose(m[:3, 1], [0, -1, 0], atol=1e-6)   # camera y = world down
    np.testing.assert_allclose(m[:3, 0], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(k, [[4.2647, 0, 0.5], [0, 4.2647, 0.5], [0, 0, 1]], atol=1e-6)


def test_yaw_quarter_turn_hand_computed():
    m = C.orbit_cam2world(math.pi / 2, 0.0, radius=2.0, pivot=(0, 0, 0))
    np.testing.assert_allclose(m[:3, 3], [2, 0, 0], atol=1e-9)     # positive yaw -> +x side
    np.testing.assert_allclose(m[:3, 2], [-1, 0, 0], atol=1e-9)    # looking back at the pivot
    m = C.orbit_cam2world(0.0, math.radians(30), radius=2.0, pivot=(0, 0, 0))
    np.testing.assert_allclose(m[:3, 3], [0, -1.0, math.sqrt(3)], atol=1e-9)  # positive pitch -> below


def test_roundtrip_yaw_pitch():
    for yaw, pitch in [(0.3, -0.2), (-0.6, 0.1), (1.2, 0.5)]:
        c = C.pack(C.orbit_cam2world(yaw, pitch, 2.5))
        y, p, r = C.yaw_pitch_of(c)
        assert abs(y - yaw) < 1e-6 and abs(p - pitch) < 1e-6 and abs(r - 2.5) < 1e-6


def test_fov_focal_conversion():
    assert abs(C.fov_to_focal(C.focal_to_fov(4.2647)) - 4.2647) < 1e-9
    # EG3D's FOV_to_intrinsics(18.837) is 4.2647 (its sqrt(2)-scaled definition)
    assert abs(C.fov_to_focal(18.837) - 4.2647) < 2e-3
    with pytest.raises(ValueError):
        C.fov_to_focal(0)


def test_mirror_flips_yaw_and_is_an_involution():
    c = C.pack(C.orbit_cam2world(0.4, -0.1))
    mc = C.mirror(c)
    y, p, _ = C.yaw_pitch_of(mc)
    assert abs(y + 0.4) < 1e-6 and abs(p + 0.1) < 1e-6
    np.testing.assert_allclose(C.mirror(mc), c, atol=1e-6)
    m, _ = C.unpack(mc)
    assert abs(np.linalg.det(m[:3, :3]) - 1) < 1e-6   # still a rotation


def test_lookat_sampler_is_eg3ds_sphere_about_the_origin():
    m = C.lookat_sampler(math.pi / 2, math.pi / 2, (0, 0, 0.2), 2.7)
    np.testing.assert_allclose(m[:3, 3], [0, 0, 2.7], atol=1e-6)
    m = C.lookat_sampler(math.pi / 2 + 0.5, math.pi / 2, (0, 0, 0.2), 2.7)
    assert m[0, 3] > 0


def test_camera_paths():
    for kind in ("fixed", "orbit", "yaw"):
        cs = C.camera_path(kind, 8)
        assert cs.shape == (8, 25)
    with pytest.raises(ValueError):
        C.camera_path("spiral", 4)


def test_one_camera_path_for_exports_generate_and_portraits():
    """cameras.camera_path, the clip exporter (pv3d generate, the viewer, portrait animations) used to
    disagree on the orbit's pitch: one went round the base view, the other started at it."""
    from pv3d_core.export import ClipSpec, clip_settings
    from pv3d_core.pipeline import RenderSettings

    base = RenderSettings(yaw=0.3, pitch=-0.1)
    for kind in ("fixed", "orbit", "yaw"):
        spec = ClipSpec(frames=12, camera=kind, yaw_range=0.4, pitch_range=0.12)
        from_clip = np.stack([s.camera() for s in clip_settings(base, spec)])
        path = C.camera_path(kind, 12, yaw_range=0.4, pitch_range=0.12, yaw=0.3, pitch=-0.1)
        np.testing.assert_allclose(from_clip, path, atol=1e-6)
        # every path starts at the chosen view (a photo's camera, for portraits)
        np.testing.assert_allclose(path[0], base.camera(), atol=1e-6)
    angles = C.path_angles("orbit", 400, yaw_range=0.4, pitch_range=0.12, yaw=0.3, pitch=-0.1)
    assert np.allclose([angles[:, 0].min(), angles[:, 0].max()], [-0.1, 0.7], atol=1e-4)
    assert np.allclose([angles[:, 1].min(), angles[:, 1].max()], [-0.34, -0.1], atol=1e-4)


def test_projection_through_rays_matches_hand_computed_pixel():
    import torch

    from pv3d_core.render.rays import pixel_rays, split_camera

    c = torch.from_numpy(C.frontal()).unsqueeze(0)
    o, d = pixel_rays(*split_camera(c), 4)
    # pixel (row 0, col 0) centre at u = v = 1/8: direction ∝ ((1/8 - 0.5)/f, (1/8 - 0.5)/f, 1) in camera axes
    f = 4.2647
    cam = np.array([(0.125 - 0.5) / f, (0.125 - 0.5) / f, 1.0])
    world = np.array([cam[0], -cam[1], -cam[2]])
    world /= np.linalg.norm(world)
    np.testing.assert_allclose(d[0, 0].numpy(), world, atol=1e-6)
    np.testing.assert_allclose(o[0, 0].numpy(), [0, 0, 2.9], atol=1e-6)


def test_one_conditioning_camera_everywhere(tiny_generator, monkeypatch):
    """The mapping sees the same camera in the viewer/CLI renderer, in inversion and in evaluation, so
    a seed is the same face everywhere: EG3D's canonical camera at (0, 0, 2.7), looking at the pivot
    (the renderer and inversion used to use the orbit camera at radius 2.7 about the pivot: z = 2.9)."""
    from pv3d_core.invert import InversionConfig, invert
    from pv3d_core.metrics.evaluate import multiview_renders
    from pv3d_core.pipeline import FrameRenderer

    G = tiny_generator
    seen = []
    real = G.mapping

    def spy(z, c, *a, **k):
        seen.append(c.detach().cpu().numpy().reshape(-1, 25))
        return real(z, c, *a, **k)

    monkeypatch.setattr(G, "mapping", spy)
    FrameRenderer(G).ws_for(3, 0.7)
    invert(G, torch.zeros(1, 3, G.img_resolution, G.img_resolution), C.frontal(),
           InversionConfig(w_steps=1, pti_steps=0, w_avg_samples=8))
    next(multiview_renders(G, 1))
    assert len(seen) >= 3
    want = C.CONDITIONING_CAMERA
    for c in seen:
        np.testing.assert_allclose(c, np.broadcast_to(want, c.shape), atol=1e-6)
    m, _ = C.unpack(want)
    np.testing.assert_allclose(m[:3, 3], [0, 0, 2.7], atol=1e-6)
    np.testing.assert_allclose(m[:3, 2], [0, 0, -1], atol=1e-6)
    assert C.conditioning_camera(G.rendering_kwargs).tolist() == want.tolist()
