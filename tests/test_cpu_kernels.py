"""The fused CPU renderer (cuda/triplane_render_cpu.cpp via pv3d_core.render.cpu_kernels) against the
PyTorch references, and its selection under the public wrappers of cuda_ops.

Deterministic sampling compares within 1e-5 (the reference's summation order differs; the issue's
bar is 1e-4); random sampling draws the reference's random numbers, so it compares the same way.
"""
from __future__ import annotations

import pytest
import torch

from pv3d_core import native
from pv3d_core.render import cameras, cpu_kernels, cuda_backend, cuda_ops, volume
from test_cuda_kernels import assert_close, make_decoder, make_planes, make_rays, max_err, options

pytestmark = pytest.mark.skipif(native.compiler() is None, reason="no C++ compiler for the CPU kernels")


@pytest.fixture(autouse=True)
def _defaults():
    cuda_ops.set_kernels(None)
    cpu_kernels.set_skip_budget(None)
    yield
    cuda_ops.set_kernels(None)
    cpu_kernels.set_skip_budget(None)
    cpu_kernels.set_projection(None)


def lib_for(dec, channels=32):
    dims, problem = cuda_ops._decoder_dims(dec, channels, cuda_sizes=False)
    assert problem is None
    return cpu_kernels.library((dims.cin, dims.hidden, dims.cout)), dims


def run(dec, planes, o, d, opts, det):
    lib, dims = lib_for(dec, planes.shape[2])
    params = cuda_backend.pack_decoder(dec, dims, torch.device("cpu"))
    return cpu_kernels.render_rays(lib, cuda_backend.prepare_planes(planes, False), params, o, d, opts, det)


# ---------------------------------------------------------------------------------------------- ops
@pytest.mark.parametrize("projection", [True, False])
@pytest.mark.parametrize("n_coarse,n_fine", [(24, 24), (48, 48), (12, 0), (7, 33)])
def test_render_matches_reference(n_coarse, n_fine, projection):
    """Both first-layer paths: projected planes (planes . W1^T sampled) and per-point features."""
    cpu_kernels.set_projection(projection)
    dec, planes = make_decoder(), make_planes()
    o, d = make_rays(res=12)
    opts = options(n_coarse, n_fine)
    for det in (True, False):
        torch.manual_seed(11)
        with torch.no_grad():
            ref = volume.render_rays(planes, dec, o, d, opts, det)
        torch.manual_seed(11)
        got = run(dec, planes, o, d, opts, det)
        for g, e, n in zip(got, ref, ("rgb", "depth", "weight sum")):
            assert_close(g, e, 1e-5, f"{n} deterministic={det}")


def test_render_other_model_sizes():
    """The CPU kernels take any decoder size (compiled per size): 12 channels, hidden 24."""
    from pv3d_core.generator import OSGDecoder

    torch.manual_seed(3)
    dec = OSGDecoder(12, hidden_dim=24, output_dim=12).eval().requires_grad_(False)
    with torch.no_grad():
        dec.net[2].bias.normal_(0, 0.5)
        dec.net[2].bias[0] += 2
    planes = make_planes(channels=12)
    o, d = make_rays(res=8)
    with torch.no_grad():
        ref = volume.render_rays(planes, dec, o, d, options(16, 16), True)
    for projection in (True, False):
        cpu_kernels.set_projection(projection)
        got = run(dec, planes, o, d, options(16, 16), True)
        for g, e in zip(got, ref):
            assert_close(g, e, 1e-5)


def test_feature_skipping_is_bounded():
    """Skipping the feature decode of negligible samples: error <= 2.004 x budget, densities exact."""
    dec, planes = make_decoder(density_shift=40.0), make_planes()   # dense: opaque early, much to skip
    o, d = make_rays(res=12)
    opts = options(24, 24)
    with torch.no_grad():
        ref = volume.render_rays(planes, dec, o, d, opts, True)
    for budget in (0.0, 1e-6, 1e-3):
        cpu_kernels.set_skip_budget(budget)
        cpu_kernels.stats(reset=True)
        got = run(dec, planes, o, d, opts, True)
        st = cpu_kernels.stats()
        assert max_err(got[0], ref[0]) <= 2.004 * budget + 1e-5, budget
        assert_close(got[1], ref[1], 1e-5, "depth")
        assert_close(got[2], ref[2], 1e-5, "weight sum")
        if budget == 1e-3:
            assert st["skipped"] > 0.2 * st["samples"], st
    with pytest.raises(ValueError):
        cpu_kernels.set_skip_budget(-1)


@pytest.mark.parametrize("projection", [True, False])
def test_threads_give_the_same_frame(projection):
    cpu_kernels.set_projection(projection)
    dec, planes = make_decoder(), make_planes()
    o, d = make_rays(res=16)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = run(dec, planes, o, d, options(), True)
        torch.set_num_threads(2)
        b = run(dec, planes, o, d, options(), True)
    finally:
        torch.set_num_threads(old)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_query_march_importance_match_reference():
    dec, planes = make_decoder(), make_planes()
    lib, dims = lib_for(dec)
    params = cuda_backend.pack_decoder(dec, dims, torch.device("cpu"))
    pts = torch.rand(2, 701, 3) * 1.4 - 0.7     # some outside the box: zeros padding
    pts[0, :4] = torch.tensor([[0.5, 0.5, 0.5], [1e6, 0, 0], [float("nan"), 0, 0], [0, 0, 0]])
    with torch.no_grad():
        ref = volume.query(planes, dec, pts, pts, 1.0)
    got = cpu_kernels.query(lib, cuda_backend.prepare_planes(planes, False), params, pts, 1.0)
    ok = ~torch.isnan(ref["sigma"][..., 0])
    assert_close(got["sigma"][ok], ref["sigma"][ok], 1e-5, "sigma")
    assert_close(got["rgb"][ok], ref["rgb"][ok], 1e-5, "rgb")
    only = cpu_kernels.query(lib, cuda_backend.prepare_planes(planes, False), params, pts, 1.0, sigma_only=True)
    assert only["rgb"] is None and torch.equal(only["sigma"], got["sigma"])

    b, r, s, c = 2, 9, 17, 40
    depths = torch.sort(torch.rand(b, r, s, 1) * 1.05 + 2.25, dim=2).values
    sig = torch.randn(b, r, s, 1) * 3
    sig[1, 3] = -100.0                                   # empty ray: depth NaN -> +inf -> clamped to max
    col = torch.rand(b, r, s, c)
    for g, e, n in zip(cpu_kernels.march(lib, col, sig, depths), volume.march(col, sig, depths),
                       ("rgb", "depth", "weights")):
        assert_close(g, e, 1e-5, n)
    w = torch.rand(b, r, s - 1, 1) ** 4
    for det in (True, False):
        torch.manual_seed(2)
        e = volume.importance_depths(depths, w, 20, det)
        torch.manual_seed(2)
        assert_close(cpu_kernels.importance_depths(lib, depths, w, 20, det), e, 1e-5, f"importance {det}")


# ---------------------------------------------------------------------------------------------- selection
def test_wrapper_selects_cpu_kernels():
    dec, planes = make_decoder(), make_planes()
    o, d = make_rays()
    opts = options(12, 12)
    with torch.no_grad():
        ref = volume.render_rays(planes, dec, o, d, opts, True)
        got = cuda_ops.render_rays_fast(planes, dec, o, d, opts, True)
    assert cuda_ops.last_path()["path"] == "cpu-kernels", cuda_ops.last_path()
    for g, e in zip(got, ref):
        assert_close(g, e, 1e-5)
    pts = torch.rand(2, 10, 3) - 0.5
    with torch.no_grad():
        assert_close(cuda_ops.query(planes, dec, pts, pts, 1.0)["rgb"], volume.query(planes, dec, pts, pts, 1.0)["rgb"],
                     1e-5)
    assert cuda_ops.last_path()["path"] == "cpu-kernels"
    depths = torch.sort(torch.rand(1, 3, 8, 1) + 2, dim=2).values
    sig, col = torch.randn(1, 3, 8, 1), torch.rand(1, 3, 8, 32)
    for g, e in zip(cuda_ops.march(col, sig, depths), volume.march(col, sig, depths)):
        assert_close(g, e, 1e-5)
    assert cuda_ops.last_path()["path"] == "cpu-kernels"
    w = torch.rand(1, 3, 7, 1)
    assert_close(cuda_ops.importance_depths(depths, w, 6, True), volume.importance_depths(depths, w, 6, True), 1e-5)
    assert cuda_ops.last_path()["path"] == "cpu-kernels"
    assert cuda_ops.describe("cpu").startswith("CPU kernels (")


def test_wrapper_falls_back_with_reason():
    dec, planes = make_decoder(), make_planes()
    o, d = make_rays()
    opts = options(12, 12)
    dec.requires_grad_(True)                              # training: the autograd path
    out = cuda_ops.render_rays_fast(planes, dec, o, d, opts, False)
    assert out[0].requires_grad
    assert cuda_ops.last_path()["path"] == "pytorch" and "gradients" in cuda_ops.last_path()["reason"]
    cuda_ops.set_kernels("on")
    with pytest.raises(cuda_ops.KernelUnavailable, match="CPU kernels cannot run: gradients"):
        cuda_ops.render_rays_fast(planes, dec, o, d, opts, False)
    dec.requires_grad_(False)
    cuda_ops.set_kernels("auto")
    with torch.no_grad():
        cuda_ops.render_rays_fast(planes, dec, o, d, options(1100, 12), True)
    assert "range" in cuda_ops.last_path()["reason"]
    with torch.no_grad():
        cuda_ops.render_rays_fast(planes, dec, o.double(), d.double(), opts, True)
    assert "float32" in cuda_ops.last_path()["reason"]


def test_no_compiler_runs_pytorch_and_says_why(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_kernels, "_libs", {})
    monkeypatch.setattr(native, "compiler", lambda: None)
    dec, planes = make_decoder(), make_planes()
    o, d = make_rays()
    with torch.no_grad():
        ref = volume.render_rays(planes, dec, o, d, options(12, 12), True)
        got = cuda_ops.render_rays_fast(planes, dec, o, d, options(12, 12), True)
    assert all(torch.equal(a, b) for a, b in zip(got, ref))
    assert cuda_ops.last_path()["path"] == "pytorch"
    assert "no C++ compiler" in cuda_ops.last_path()["reason"]
    assert cuda_ops.describe("cpu").startswith("PyTorch (no C++ compiler")
    assert cpu_kernels.build_state().startswith("failed")


def test_build_is_cached_on_disk(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(native.ENV_CACHE, str(tmp_path))
    monkeypatch.setattr(cpu_kernels, "_libs", {})
    with caplog.at_level("INFO", logger=native.__name__):
        first = cpu_kernels.library((16, 8, 4))
    assert first.build_seconds > 0 and first.path.parent == tmp_path
    assert any("Compiling the CPU volume renderer" in r.message for r in caplog.records)
    assert cpu_kernels.build_state() == "ready"
    monkeypatch.setattr(cpu_kernels, "_libs", {})
    second = cpu_kernels.library((16, 8, 4))          # a new process: loaded from the cache, not rebuilt
    assert second.build_seconds == 0 and second.path == first.path


def test_generator_frame_same_pixels(tiny_generator):
    """A whole tiny frame (render + raw RGB + super-resolution): CPU kernels vs the reference."""
    G = tiny_generator
    torch.manual_seed(0)
    z, zm = torch.randn(1, G.z_dim), torch.randn(1, G.motion_dim)
    c = torch.from_numpy(cameras.OrbitCamera(yaw=0.3).c()).float()[None]
    with torch.no_grad():
        ws = G.mapping(z, c)
        planes = G.planes(ws, zm, torch.tensor([0.5]), noise_mode="const")
        fast = G.render_planes(planes, ws, c, 64)
        assert cuda_ops.last_path()["path"] == "cpu-kernels"
        cuda_ops.set_kernels("off")
        ref = G.render_planes(planes, ws, c, 64)
    for k in ("image", "image_raw", "image_depth", "image_alpha"):
        assert_close(fast[k], ref[k], 1e-4, k)


def test_default_choice_is_the_same_whatever_was_rendered_before():
    """The default projects planes up to PROJECTION_MAX_BYTES and no larger ones, by size alone: a set of
    planes gives the same pixels at its first render as at its later ones, and after other planes (the two
    ways round differ in the last bits, and a frame must not depend on the renders before it)."""
    cpu_kernels.set_projection(None)
    cpu_kernels._proj_cache.clear()
    dec, o, d, opts = make_decoder(), *make_rays(res=8), options(16, 16)
    lib, dims = lib_for(dec)
    params = cuda_backend.pack_decoder(dec, dims, torch.device("cpu"))
    raw = make_planes()
    with torch.no_grad():
        planes = cuda_backend.prepare_planes(raw, False).clone()
        other = cuda_backend.prepare_planes(make_planes(seed=7), False).clone()
        ref = volume.render_rays(raw, dec, o, d, opts, True)

    def render(p):
        got = cpu_kernels.render_rays(lib, p, params, o, d, opts, True)
        hit = cpu_kernels._proj_cache.get("last")       # the projection made for these planes, if any
        return got, hit is not None and hit[0] == cpu_kernels._planes_key(p, params)

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a, b))

    first, projected = render(planes)
    assert projected                                    # small planes: projected from the first render
    for g, e in zip(first, ref):
        assert_close(g, e, 1e-5)
    assert same(render(planes)[0], first)
    render(other)
    assert same(render(planes)[0], first)
    orig = cpu_kernels.PROJECTION_MAX_BYTES
    try:
        cpu_kernels.PROJECTION_MAX_BYTES = 0
        cpu_kernels._proj_cache.clear()
        big, projected = render(planes)
        assert not projected
        for g, e in zip(big, ref):
            assert_close(g, e, 1e-5)
        assert same(render(planes)[0], big) and not render(planes)[1]
        assert not same(big, first)     # the two ways round do differ, so the checks above can fail
    finally:
        cpu_kernels.PROJECTION_MAX_BYTES = orig
