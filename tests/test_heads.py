"""Procedural heads in PyTorch (pv3d_core.data.heads) and the code-driven teacher (head_codes)."""
import math

import numpy as np
import torch

from pv3d_core.data import head_codes, heads, synth
from pv3d_core.render import cameras


def _cam(yaw=0.0, pitch=0.0):
    return torch.from_numpy(cameras.OrbitCamera(yaw, pitch).c())[None]


def test_batched_render_equals_one_at_a_time():
    g = torch.Generator().manual_seed(3)
    z, zm = torch.randn(3, 64, generator=g), torch.randn(3, 64, generator=g)
    t = torch.tensor([0.0, 0.4, 0.9])
    c = torch.cat([_cam(-0.3), _cam(0.0, 0.1), _cam(0.5)])
    both = head_codes.render(z, zm, t, c, 40, ssaa=1)
    for i in range(3):
        one = head_codes.render(z[i:i + 1], zm[i:i + 1], t[i:i + 1], c[i:i + 1], 40, ssaa=1)
        for k in ("image", "mask", "depth"):
            assert torch.allclose(both[k][i], one[k][0], atol=1e-5), k


def test_clip_heads_render_through_the_same_code():
    """synth.render_head is heads.render of the identity's vector: depth lies on heads.sdf's surface."""
    ident = synth.Identity.sample(synth.clip_rng(0, 1))
    c = cameras.OrbitCamera(0.2, 0.05).c()
    out = synth.render_head(ident, synth.Expression(mouth=0.5), c, 48, ssaa=1)
    from pv3d_core.render.rays import pixel_rays, split_camera

    o, d = pixel_rays(*split_camera(torch.from_numpy(c)[None]), 48)
    sel = out["mask"].reshape(-1) == 1
    pts = (o[0] + d[0] * torch.from_numpy(out["depth"].reshape(-1, 1)))[torch.from_numpy(sel)]
    sdf = synth.head_sdf(pts.numpy(), ident, synth.Expression(mouth=0.5))
    assert sel.mean() > 0.3 and np.percentile(np.abs(sdf), 95) < 1e-3


def test_teacher_time_zero_is_the_canonical_frame():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 128, generator=g).expand(4, -1)
    zm = torch.randn(4, 128, generator=g)
    e0 = head_codes.expression(zm, torch.zeros(4))
    assert torch.equal(e0, e0[:1].expand(4, -1)) and float(e0[0, 0]) == 0 and float(e0[0, 1]) == 0
    # later, different motion codes give different expressions, and the mouth, blink and brow all move
    ts = torch.linspace(0, 1, 64)
    e = head_codes.expression(zm[:1].expand(64, -1), ts)
    assert float(e[:, 1].max()) > 0.3 and float(e[:, 3].max()) > 0.1
    blinks = head_codes.expression(torch.randn(256, 128, generator=g), torch.rand(256, generator=g))[:, 0]
    assert 0.03 < float((blinks > 0.5).float().mean()) < 0.4
    f0 = head_codes.render(z[:2], zm[:2], torch.zeros(2), torch.cat([_cam(), _cam()]), 32, ssaa=1)["image"]
    assert torch.allclose(f0[0], f0[1], atol=1e-5)


def test_teacher_identities_are_smooth_and_distinct():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(200, 128, generator=g)
    dz = 1e-3 * torch.randn(200, 128, generator=g)
    a, b = head_codes.identity(z), head_codes.identity(z + dz)
    # a small step in z is a small step in the head (Lipschitz; the steepest are the hair-style ramps)
    assert float((a - b).abs().max()) < 10 * float(dz.abs().max())
    # different codes: different heads (pairwise distances well away from 0)
    d = torch.cdist(a, a) + torch.eye(200) * 10
    assert float(d.min()) > 0.05
    # colours stay colours; skin is never green
    skin = a[:, heads.PARAMS["skin"]]
    assert float(skin.min()) >= 0 and float(skin.max()) <= 1
    assert bool((skin[:, 0] > skin[:, 1]).all() and (skin[:, 1] > skin[:, 2]).all())
    # hair styles cover the family (long, fringe, buzz each on a good share) and mostly sit at 0 or 1
    for k in ("hair_long", "hair_fringe", "hair_buzz"):
        v = a[:, heads.PARAMS[k]]
        assert 0.05 < float((v > 0.5).float().mean()) < 0.5, k
        assert float(((v > 0.05) & (v < 0.95)).float().mean()) < 0.1, k


def test_truncation_pulls_towards_the_mean_head():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(64, 128, generator=g)
    zm = torch.zeros(64, 128)
    full = head_codes.head_batch(z, zm, 0.0, psi=1.0).values
    half = head_codes.head_batch(z, zm, 0.0, psi=0.5).values
    none = head_codes.head_batch(z, zm, 0.0, psi=0.0).values
    assert torch.allclose(none, none[:1].expand(64, -1))
    assert float((half - none).abs().mean()) < float((full - none).abs().mean())
    # the mapping network normalises z; so does the teacher: a rescaled code is the same head
    assert torch.allclose(head_codes.head_batch(3 * z, zm, 0.0).values, full, atol=1e-5)


def test_teacher_views_are_one_3d_head():
    """Depth from two cameras back-projects onto the same surface (the SDF's zero set)."""
    g = torch.Generator().manual_seed(4)
    z, zm = torch.randn(1, 128, generator=g), torch.randn(1, 128, generator=g)
    hb = head_codes.head_batch(z, zm, 0.5)
    from pv3d_core.render.rays import pixel_rays, split_camera

    for yaw in (-math.radians(40), math.radians(25)):
        c = _cam(yaw)
        out = heads.render(hb, c, 48, ssaa=1)
        o, d = pixel_rays(*split_camera(c), 48)
        sel = out["mask"].reshape(-1) == 1
        p = o[0][sel] + d[0][sel] * out["depth"].reshape(-1, 1)[sel]
        s = heads.sdf(p, heads.HeadBatch(hb.values.expand(len(p), -1)))
        assert float(s.abs().quantile(0.95)) < 1e-3
