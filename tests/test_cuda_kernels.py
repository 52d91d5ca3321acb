"""The fused CUDA kernels (cuda/triplane_render.cu) against their PyTorch references.

Three layers, so that every machine checks what it can:
1. compile: nvcc builds the source for sm_90 and sm_75 (and NVRTC, when libnvrtc is present);
2. CPU: the kernels' own source built with g++ and a small CUDA shim (tests/cuda_emulation) runs the
   real pipeline code of cuda_ops on CPU tensors, compared with volume.render_rays & co; the selection
   logic (modes, environment variable, fallbacks) is checked with CPU tensors and with the emulated
   kernels standing in for a GPU;
3. GPU: the compiled kernels against the references on CUDA tensors (skipped without CUDA).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pv3d_core.config import preset
from pv3d_core.render.decoder import OSGDecoder
from pv3d_core.render import cameras, cuda_backend, cuda_launch, cuda_ops, volume
from pv3d_core.render.rays import pixel_rays, split_camera
from pv3d_core.render.triplane import project_onto_planes

SRC = cuda_ops.kernel_source_path()
NVCC = shutil.which("nvcc") or (shutil.which("/usr/local/cuda/bin/nvcc"))
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (GPU parity of the kernels)")


# ---------------------------------------------------------------------------------------------- data
def make_decoder(channels: int = 32, seed: int = 0, density_shift: float = 2.0) -> OSGDecoder:
    torch.manual_seed(seed)
    dec = OSGDecoder(channels).eval().requires_grad_(False)
    with torch.no_grad():   # random init has near-zero biases; make density and every bias matter
        dec.net[0].bias.normal_(0, 0.5)
        dec.net[2].bias.normal_(0, 0.5)
        dec.net[2].bias[0] += density_shift
    return dec


def make_planes(batch: int = 2, channels: int = 32, res: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(batch * 3, channels, max(res // 8, 2), max(res // 8, 2), generator=g) * 4
    return F.interpolate(low, size=(res, res), mode="bilinear", align_corners=False).reshape(
        batch, 3, channels, res, res).contiguous()


def make_rays(batch: int = 2, res: int = 8):
    yaws = [0.0, 0.45, -0.3, 0.2][:batch]
    c = torch.stack([torch.from_numpy(cameras.OrbitCamera(yaw=y, pitch=0.1 * i).c()) for i, y in enumerate(yaws)])
    return pixel_rays(*split_camera(c.float()), res)


def options(n_coarse: int = 24, n_fine: int = 24) -> dict:
    rk = dict(preset("tiny").generator.rendering_kwargs)
    rk.update(depth_resolution=n_coarse, depth_resolution_importance=n_fine)
    return rk


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def assert_close(got, ref, tol: float, what: str = ""):
    """max |got - ref| <= tol * max(1, max |ref|) (an absolute bound for values of order 1)."""
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    scale = max(1.0, ref.abs().max().item())
    err = max_err(got, ref)
    assert err <= tol * scale, f"{what}: max abs error {err:.3g} > {tol:.1g} x {scale:.3g}"


@pytest.fixture(autouse=True)
def _reset_mode():
    cuda_ops.set_kernels(None)
    yield
    cuda_ops.set_kernels(None)


# ---------------------------------------------------------------------------------------------- 1. compile
def _nvcc(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    if NVCC is None:
        pytest.skip("nvcc is not installed (the CUDA toolkit is needed only to check that the kernels compile)")
    return subprocess.run([NVCC, *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)


@pytest.mark.parametrize("arch", ["sm_90", "sm_75"])
def test_nvcc_compiles(arch, tmp_path):
    """ptxas runs too (-cubin), so register/shared-memory limits are checked; warnings are errors."""
    r = _nvcc(["-cubin", f"-arch={arch}", "-Werror", "all-warnings", "-Xptxas", "-v", "-o", str(tmp_path / "k.cubin"),
               str(SRC)], tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    log = r.stdout + r.stderr
    for kernel in cuda_launch.KERNELS:
        assert f"Compiling entry function '{kernel}'" in log
    # The decoder kernel is register-bound: report spills (a performance regression, not an error).
    spills = re.findall(r"Function properties for (\w+)\n\s+(\d+) bytes stack frame, (\d+) bytes spill stores", log)
    print({k: int(s) for k, _, s in spills})


def test_nvcc_compiles_other_model_sizes(tmp_path):
    r = _nvcc(["--ptx", "-arch=sm_90", "-DPV3D_CIN=16", "-DPV3D_COUT=8", "-DPV3D_HIDDEN=32", "-o",
               str(tmp_path / "k.ptx"), str(SRC)], tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]


def test_source_needs_no_headers():
    """NVRTC gets no include path from us: the source must be self-contained."""
    text = SRC.read_text()
    assert not re.search(r"^\s*#\s*include", text, re.M)


def test_nvrtc_compiles():
    """The run-time compile path (NVRTC, with the options cuda_ops passes), when libnvrtc is present."""
    try:
        lib = cuda_launch.load_nvrtc()
    except OSError as e:
        pytest.skip(f"libnvrtc not found ({e}); it ships with CUDA builds of PyTorch")
    image, _ = cuda_launch.nvrtc_compile(SRC.read_text(), "sm_90", cuda_launch.Dims().defines(), lib=lib)
    assert image[:4] == b"\x7fELF"
    ptx, _ = cuda_launch.nvrtc_compile(SRC.read_text(), "compute_75", cuda_launch.Dims(16, 32, 8).defines(), lib=lib)
    assert b".entry pv3d_decode_f32" in ptx and b".entry pv3d_composite" in ptx


# ---------------------------------------------------------------------------------------------- 2a. maths (CPU)
def test_projection_formula_matches_reference():
    """The kernel hard-codes the plane projections (x, y), (x, z), (z, x); the reference uses matrices."""
    pts = torch.randn(2, 50, 3)
    proj = project_onto_planes(pts).reshape(2, 3, 50, 2)
    x, y, z = pts.unbind(-1)
    expect = torch.stack([torch.stack([x, y], -1), torch.stack([x, z], -1), torch.stack([z, x], -1)], 1)
    assert torch.equal(proj, expect)


@pytest.fixture(scope="module")
def emu():
    kernel_emulation = pytest.importorskip("kernel_emulation")
    if kernel_emulation.compiler() is None:
        pytest.skip("no g++ to build the CPU emulation of the kernels")
    return kernel_emulation.EmulatedLauncher()


def test_emulated_query_matches_reference(emu):
    """Kernel (a): tri-plane sampling + decoder at points, including points outside the box."""
    dec, planes = make_decoder(), make_planes()
    pts = torch.rand(2, 700, 3) * 1.4 - 0.7          # some outside [-0.5, 0.5]^3: zero padding
    pts[0, :5] = torch.tensor([[0.5, 0.5, 0.5], [-0.5, -0.5, -0.5], [1e6, 0, 0], [0.2, -3.0, 0.1], [0.0, 0.0, 0.0]])
    with torch.no_grad():
        ref = volume.query(planes, dec, pts, pts, 1.0)
        got = cuda_backend.query_kernels(emu, planes, dec, pts, 1.0)
    assert_close(got["sigma"], ref["sigma"], 1e-5, "sigma")
    assert_close(got["rgb"], ref["rgb"], 1e-5, "rgb")


def test_emulated_query_half_planes(emu):
    """float16 plane reads equal the reference on float16-rounded planes (the conversion is exact)."""
    dec, planes = make_decoder(), make_planes()
    pts = torch.rand(2, 300, 3) - 0.5
    with torch.no_grad():
        ref = volume.query(planes.half().float(), dec, pts, pts, 1.0)
        got = cuda_backend.query_kernels(emu, planes, dec, pts, 1.0, half_planes=True)
    assert_close(got["sigma"], ref["sigma"], 1e-5, "sigma")
    assert_close(got["rgb"], ref["rgb"], 1e-5, "rgb")


def test_emulated_march_matches_reference(emu):
    """Kernel (b) alone: 40 channels (two per lane for some lanes), an empty ray (depth -> global max)."""
    b, r, s, c = 2, 9, 17, 40
    depths = torch.sort(torch.rand(b, r, s, 1) * 1.05 + 2.25, dim=2).values
    sig = torch.randn(b, r, s, 1) * 3
    sig[1, 3] = -100.0                                  # no density: weights 0, depth NaN -> clamped
    col = torch.rand(b, r, s, c)
    ref = volume.march(col, sig, depths)
    got = cuda_backend.march_kernels(emu, col, sig, depths)
    for g, e, n in zip(got, ref, ("rgb", "depth", "weights")):
        assert_close(g, e, 1e-5, n)
    assert got[1][1, 3, 0].item() == depths.max().item()


@pytest.mark.parametrize("deterministic", [True, False])
def test_emulated_importance_matches_reference(emu, deterministic):
    """Kernel (c) alone, in the reference's (unsorted) quantile order; random quantiles: same RNG draws."""
    b, r, s = 2, 10, 24
    depths = torch.linspace(2.25, 3.3, s).reshape(1, 1, s, 1).repeat(b, r, 1, 1)
    depths = depths + torch.rand_like(depths) * 0.01
    w = torch.rand(b, r, s - 1, 1) ** 4
    torch.manual_seed(3)
    ref = volume.importance_depths(depths, w, 20, deterministic)
    torch.manual_seed(3)
    got = cuda_backend.importance_depths_kernels(emu, depths, w, 20, deterministic)
    assert_close(got, ref, 1e-5, "fine depths")


@pytest.mark.parametrize("n_coarse,n_fine,deterministic", [(24, 24, True), (48, 48, True), (24, 24, False),
                                                           (16, 0, True)])
def test_emulated_render_rays_matches_reference(emu, n_coarse, n_fine, deterministic):
    """The whole kernel pipeline (cuda_backend.render_rays_kernels, the code that drives the GPU)."""
    dec, planes = make_decoder(), make_planes()
    o, d = make_rays()
    opts = options(n_coarse, n_fine)
    with torch.no_grad():
        torch.manual_seed(11)
        ref = volume.render_rays(planes, dec, o, d, opts, deterministic)
        torch.manual_seed(11)
        got = cuda_backend.render_rays_kernels(emu, planes, dec, o, d, opts, deterministic)
    assert ref[2].mean() > 0.3, "test scene too empty to be a meaningful check"
    for g, e, n in zip(got, ref, ("rgb", "depth", "weight sum")):
        assert_close(g, e, 1e-5, n)


def test_emulated_render_rays_256_planes_half(emu):
    """Released plane size (256^2): fp32 within 1e-5; fp16 planes within 1e-5 of the reference on
    fp16-rounded planes (and near the fp32 reference)."""
    dec, planes = make_decoder(), make_planes(batch=1, res=256)
    o, d = make_rays(batch=1)
    opts = options(48, 48)
    with torch.no_grad():
        ref = volume.render_rays(planes, dec, o, d, opts, True)
        got = cuda_backend.render_rays_kernels(emu, planes, dec, o, d, opts, True)
        ref_h = volume.render_rays(planes.half().float(), dec, o, d, opts, True)
        got_h = cuda_backend.render_rays_kernels(emu, planes, dec, o, d, opts, True, half_planes=True)
    for i, n in enumerate(("rgb", "depth", "weight sum")):
        assert_close(got[i], ref[i], 1e-5, n)
        assert_close(got_h[i], ref_h[i], 1e-5, n + " (fp16 planes)")
        assert_close(got_h[i], ref[i], 1e-3, n + " (fp16 vs fp32)")


def test_emulated_generator_frame(emu, tiny_generator):
    """A tiny generator's own planes and decoder: kernel pipeline == render_rays."""
    G = tiny_generator
    torch.manual_seed(0)
    z, zm = torch.randn(1, G.z_dim), torch.randn(1, G.motion_dim)
    c = torch.from_numpy(cameras.OrbitCamera(yaw=0.3).c()).float()[None]
    with torch.no_grad():
        ws = G.mapping(z, c)
        planes = G.planes(ws, zm, torch.tensor([0.5]), noise_mode="const")
        o, d = pixel_rays(*split_camera(c), 8)
        ref = volume.render_rays(planes, G.decoder, o, d, G.rendering_kwargs, True)
        got = cuda_backend.render_rays_kernels(emu, planes, G.decoder, o, d, G.rendering_kwargs, True)
    for g, e, n in zip(got, ref, ("rgb", "depth", "weight sum")):
        assert_close(g, e, 1e-5, n)


# ---------------------------------------------------------------------------------------------- 2b. selection
def test_mode_from_env_and_function(monkeypatch):
    monkeypatch.delenv(cuda_ops.ENV_MODE, raising=False)
    assert cuda_ops.kernels_mode() == "auto"
    for value, mode in [("off", "off"), ("ON", "on"), ("auto", "auto"), ("0", "off"), ("1", "on")]:
        monkeypatch.setenv(cuda_ops.ENV_MODE, value)
        assert cuda_ops.kernels_mode() == mode
    monkeypatch.setenv(cuda_ops.ENV_MODE, "bogus")
    with pytest.warns(UserWarning):
        assert cuda_ops.kernels_mode() == "auto"
    monkeypatch.setenv(cuda_ops.ENV_MODE, "off")
    cuda_ops.set_kernels("on")
    assert cuda_ops.kernels_mode() == "on"          # the function wins over the environment
    cuda_ops.set_kernels(None)
    assert cuda_ops.kernels_mode() == "off"
    with pytest.raises(ValueError):
        cuda_ops.set_kernels("fast")
    monkeypatch.setenv(cuda_ops.ENV_HALF, "1")
    assert cuda_ops.half_planes_enabled()
    cuda_ops.set_kernels(None, half_planes=False)
    assert not cuda_ops.half_planes_enabled()


@pytest.mark.parametrize("mode", ["off"])
def test_cpu_tensors_use_pytorch(mode, monkeypatch):
    """With the kernels off, CPU tensors take the reference, bit for bit (the CPU kernels' own selection
    tests are in test_cpu_kernels.py)."""
    monkeypatch.setenv(cuda_ops.ENV_MODE, mode)
    dec, planes = make_decoder(), make_planes()
    o, d = make_rays()
    opts = options(12, 12)
    with torch.no_grad():
        ref = volume.render_rays(planes, dec, o, d, opts, True)
        got = cuda_ops.render_rays_fast(planes, dec, o, d, opts, True)
    assert all(torch.equal(a, b) for a, b in zip(got, ref))
    assert cuda_ops.last_path()["path"] == "pytorch"
    reason = cuda_ops.last_path()["reason"]
    assert reason == "CPU tensors" if mode != "off" else "off" in reason
    pts = torch.rand(2, 10, 3) - 0.5
    with torch.no_grad():
        q, q_ref = cuda_ops.query(planes, dec, pts, pts, 1.0), volume.query(planes, dec, pts, pts, 1.0)
    assert torch.equal(q["sigma"], q_ref["sigma"]) and torch.equal(q["rgb"], q_ref["rgb"])
    assert cuda_ops.describe("cpu").startswith("PyTorch")
    if not torch.cuda.is_available():
        assert cuda_ops.describe().startswith("PyTorch")


@pytest.fixture
def fake_gpu(emu, monkeypatch):
    """CPU tensors count as CUDA and the emulated kernels stand in for the compiled ones."""
    monkeypatch.setattr(cuda_ops, "_on_cuda", lambda tensors: True)
    monkeypatch.setattr(cuda_launch, "launcher", lambda device, dims: emu)
    monkeypatch.setattr(cuda_launch, "any_launcher", lambda device: emu)
    return emu


def test_selection_takes_kernels_when_possible(fake_gpu):
    dec, planes = make_decoder(), make_planes()
    o, d = make_rays()
    opts = options(12, 12)
    with torch.no_grad():
        ref = volume.render_rays(planes, dec, o, d, opts, True)
        n0 = len(fake_gpu.launches)
        got = cuda_ops.render_rays_fast(planes, dec, o, d, opts, True)
    assert cuda_ops.last_path() == {"path": "kernels", "reason": "CPU emulation"}
    assert len(fake_gpu.launches) > n0
    for g, e in zip(got, ref):
        assert_close(g, e, 1e-5)
    pts = torch.rand(2, 10, 3) - 0.5
    with torch.no_grad():
        assert_close(cuda_ops.query(planes, dec, pts, pts, 1.0)["sigma"], volume.query(planes, dec, pts, pts, 1.0)["sigma"], 1e-5)
    assert cuda_ops.last_path()["path"] == "kernels"
    depths = torch.sort(torch.rand(1, 3, 8, 1) + 2, dim=2).values
    sig, col = torch.randn(1, 3, 8, 1), torch.rand(1, 3, 8, 32)
    for g, e in zip(cuda_ops.march(col, sig, depths), volume.march(col, sig, depths)):
        assert_close(g, e, 1e-5)
    w = torch.rand(1, 3, 7, 1)
    assert_close(cuda_ops.importance_depths(depths, w, 6, True), volume.importance_depths(depths, w, 6, True), 1e-5)
    assert cuda_ops.describe("cuda").startswith("CUDA kernels (CPU emulation")


def test_selection_falls_back(fake_gpu):
    """auto: off mode, gradients, unsupported decoders or sizes -> the reference, with the reason."""
    dec, planes = make_decoder(), make_planes()
    o, d = make_rays()
    opts = options(12, 12)
    cuda_ops.set_kernels("off")
    with torch.no_grad():
        cuda_ops.render_rays_fast(planes, dec, o, d, opts, True)
    assert cuda_ops.last_path()["path"] == "pytorch" and "off" in cuda_ops.last_path()["reason"]
    assert cuda_ops.describe("cuda").startswith("PyTorch")
    cuda_ops.set_kernels("auto")
    dec.requires_grad_(True)                               # training: needs the autograd path
    cuda_ops.render_rays_fast(planes, dec, o, d, opts, False)
    assert "gradients" in cuda_ops.last_path()["reason"]
    dec.requires_grad_(False)

    class MyDecoder(OSGDecoder):
        def forward(self, x, d=None):
            return super().forward(x, d)
    with torch.no_grad():
        cuda_ops.render_rays_fast(planes, MyDecoder(32).eval(), o, d, opts, True)
    assert "not an OSGDecoder" in cuda_ops.last_path()["reason"]
    with torch.no_grad():
        cuda_ops.render_rays_fast(make_planes(channels=12), make_decoder(12), o, d, opts, True)
    assert "multiple of 8" in cuda_ops.last_path()["reason"]
    with torch.no_grad():
        cuda_ops.render_rays_fast(planes, dec, o, d, options(300, 24), True)
    assert "range" in cuda_ops.last_path()["reason"]


def test_mode_on_raises_instead_of_falling_back(fake_gpu, monkeypatch):
    dec, planes = make_decoder(), make_planes()
    o, d = make_rays()
    cuda_ops.set_kernels("on")
    dec.requires_grad_(True)
    with pytest.raises(cuda_ops.KernelUnavailable):
        cuda_ops.render_rays_fast(planes, dec, o, d, options(12, 12), False)

    def broken(device, dims):
        raise cuda_ops.KernelUnavailable("kernels did not compile (test)")
    monkeypatch.setattr(cuda_launch, "launcher", broken)
    dec.requires_grad_(False)
    with torch.no_grad(), pytest.raises(cuda_ops.KernelUnavailable, match="did not compile"):
        cuda_ops.render_rays_fast(planes, dec, o, d, options(12, 12), True)
    cuda_ops.set_kernels("auto")
    with torch.no_grad():
        out = cuda_ops.render_rays_fast(planes, dec, o, d, options(12, 12), True)
    assert cuda_ops.last_path()["path"] == "pytorch" and "did not compile" in cuda_ops.last_path()["reason"]
    assert out[0].shape == (2, 64, 32)


def test_compile_failure_is_cached_and_reported(monkeypatch):
    """A launcher that fails to build is tried once per (device, sizes); the error names each launcher."""
    calls = []

    class Broken(cuda_launch.Launcher):
        def __init__(self, device, dims):
            calls.append(dims)
            raise RuntimeError("no GPU here")

    monkeypatch.setattr(cuda_launch, "LAUNCHERS", {"a": Broken, "b": Broken})
    monkeypatch.setattr(cuda_launch, "_cache", {})
    dev = torch.device("cuda", 0)
    for _ in range(2):
        with pytest.raises(cuda_ops.KernelUnavailable, match="a: RuntimeError: no GPU here; b: RuntimeError"):
            cuda_launch.launcher(dev, cuda_launch.Dims())
    assert len(calls) == 2        # both launchers tried once, then the failure is remembered


def test_decoder_pack_layout():
    dec = make_decoder()
    dims = cuda_launch.Dims()
    p = cuda_backend.pack_decoder(dec, dims, torch.device("cpu"))
    assert p.numel() == dims.n_params
    fc1, fc2 = dec.net[0], dec.net[2]
    w1 = p[: 64 * 32].reshape(64, 32)
    assert torch.equal(w1, fc1.weight * fc1.weight_gain)
    off = 64 * 32 + 64
    w2t = p[off: off + 64 * dims.out_pad].reshape(64, dims.out_pad)
    assert torch.equal(w2t[:, :33], (fc2.weight * fc2.weight_gain).t()) and not w2t[:, 33:].any()
    assert cuda_backend.pack_decoder(dec, dims, torch.device("cpu")) is p          # cached
    with torch.no_grad():
        fc2.bias.add_(1.0)
    assert cuda_backend.pack_decoder(dec, dims, torch.device("cpu")) is not p      # parameters changed


# ---------------------------------------------------------------------------------------------- 3. GPU
def _gpu_launchers():
    names = ["nvrtc"]
    try:
        import cupy  # noqa: F401
        names.insert(0, "cupy")
    except Exception:  # noqa: BLE001
        pass
    return names


@pytest.fixture
def strict_fp32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False   # the reference's matmuls in true fp32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@needs_cuda
@pytest.mark.parametrize("launcher_name", _gpu_launchers())
def test_gpu_kernels_match_reference(launcher_name, strict_fp32):
    dev = torch.device("cuda")
    launcher = cuda_launch.LAUNCHERS[launcher_name](dev, cuda_launch.Dims())
    dec = make_decoder().to(dev)
    planes = make_planes(batch=2, res=256).to(dev)
    o, d = (t.to(dev) for t in make_rays(batch=2, res=32))
    opts = options(48, 48)
    with torch.no_grad():
        pts = (torch.rand(2, 5000, 3, device=dev) * 1.4 - 0.7)
        ref, got = volume.query(planes, dec, pts, pts, 1.0), cuda_backend.query_kernels(launcher, planes, dec, pts, 1.0)
        assert_close(got["sigma"], ref["sigma"], 1e-5, "query sigma")
        assert_close(got["rgb"], ref["rgb"], 1e-5, "query rgb")
        for det in (True, False):
            torch.manual_seed(7)
            ref = volume.render_rays(planes, dec, o, d, opts, det)
            torch.manual_seed(7)
            got = cuda_backend.render_rays_kernels(launcher, planes, dec, o, d, opts, det)
            for g, e, n in zip(got, ref, ("rgb", "depth", "weight sum")):
                assert_close(g, e, 1e-5, f"render {n} deterministic={det}")
        ref_h = volume.render_rays(planes.half().float(), dec, o, d, opts, True)
        got_h = cuda_backend.render_rays_kernels(launcher, planes, dec, o, d, opts, True, half_planes=True)
        for g, e, n in zip(got_h, ref_h, ("rgb", "depth", "weight sum")):
            assert_close(g, e, 1e-5, f"render {n} fp16 planes")
        depths = torch.sort(torch.rand(2, 300, 40, 1, device=dev) + 2.25, dim=2).values
        sig, col = torch.randn(2, 300, 40, 1, device=dev) * 3, torch.rand(2, 300, 40, 32, device=dev)
        for g, e, n in zip(cuda_backend.march_kernels(launcher, col, sig, depths), volume.march(col, sig, depths),
                           ("rgb", "depth", "weights")):
            assert_close(g, e, 1e-5, f"march {n}")
        w = torch.rand(2, 300, 39, 1, device=dev) ** 4
        assert_close(cuda_backend.importance_depths_kernels(launcher, depths, w, 32, True),
                     volume.importance_depths(depths, w, 32, True), 1e-5, "importance depths")


@needs_cuda
def test_gpu_public_ops_select_kernels(strict_fp32, tiny_generator):
    """Through the public wrappers with automatic selection, on a tiny generator's planes."""
    dev = torch.device("cuda")
    G = tiny_generator.to(dev)
    try:
        cuda_ops.set_kernels("on")
        assert cuda_ops.describe(dev).startswith("CUDA kernels"), cuda_ops.describe(dev)
        torch.manual_seed(0)
        z, zm = torch.randn(1, G.z_dim, device=dev), torch.randn(1, G.motion_dim, device=dev)
        c = torch.from_numpy(cameras.OrbitCamera(yaw=0.3).c()).float()[None].to(dev)
        with torch.no_grad():
            ws = G.mapping(z, c)
            planes = G.planes(ws, zm, torch.tensor([0.5], device=dev), noise_mode="const")
            o, d = pixel_rays(*split_camera(c), 64)
            ref = volume.render_rays(planes, G.decoder, o, d, G.rendering_kwargs, True)
            got = cuda_ops.render_rays_fast(planes, G.decoder, o, d, G.rendering_kwargs, True)
        assert cuda_ops.last_path()["path"] == "kernels"
        for g, e, n in zip(got, ref, ("rgb", "depth", "weight sum")):
            assert_close(g, e, 1e-5, n)
    finally:
        G.to("cpu")


def test_launch_arguments_are_wrapped_by_kind():
    """Both launchers pass a tensor as its address, an int or bool as int32 and other numbers as double."""
    import ctypes

    t = torch.zeros(3)
    wrapped = cuda_launch.kernel_args([t, 7, True, 0.25], ctypes.c_void_p, ctypes.c_int32, ctypes.c_double)
    assert [type(w) for w in wrapped] == [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_double]
    assert wrapped[0].value == t.data_ptr() and wrapped[1].value == 7 and wrapped[2].value == 1
    assert wrapped[3].value == 0.25
