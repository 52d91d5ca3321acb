"""The kernels' self-check (pv3d_core.render.kernel_check): a compiled module renders only after it has
matched the PyTorch reference on this machine, once per (device, driver, model size).

No GPU here, so the CUDA side runs the kernels' own source built for the CPU (tests/cuda_emulation)
through cuda_ops' real selection code (``_launcher`` compiles through ``_LAUNCHERS``); a deliberately
wrong kernel is the same source with one constant changed. The CPU kernels are checked the same way,
with a wrong build made from an edited copy of their source.
"""
from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from pv3d_core import native
from pv3d_core.render import cpu_kernels, cuda_launch, cuda_ops, kernel_check, kernel_verdicts, volume
from test_cuda_kernels import make_decoder, make_planes, make_rays, options

kernel_emulation = pytest.importorskip("kernel_emulation")
pytestmark = pytest.mark.skipif(kernel_emulation.compiler() is None, reason="no g++ to build the kernels for the CPU")

CUDA_SOURCE = cuda_ops.kernel_source_path()
# One constant changed in each: far below what a person would see in a frame, far above the tolerance.
CUDA_MUTATIONS = {
    "feature offset 0.001 -> 0.00101": ("1.002f), 0.001f)", "1.002f), 0.00101f)"),
    "importance pdf floor 0.01 -> 0.0101": ("__fadd_rn(a, 0.01f)", "__fadd_rn(a, 0.0101f)"),
}


def mutated(tmp_path, source, old, new):
    text = source.read_text()
    assert text.count(old) >= 1, f"mutation target {old!r} not in {source.name}"
    out = tmp_path / source.name
    out.write_text(text.replace(old, new))
    return out


@pytest.fixture
def fresh_state(monkeypatch, tmp_path):
    """No compiled module, no remembered verdict; the verdict file is this test's own."""
    monkeypatch.setattr(cuda_launch, "_cache", {})
    monkeypatch.setenv(kernel_check.ENV_VERDICTS, str(tmp_path / "verdicts.json"))
    monkeypatch.delenv(kernel_check.ENV_CHECK, raising=False)
    kernel_check.forget()
    cuda_ops.set_kernels(None)
    yield tmp_path / "verdicts.json"
    kernel_check.forget()
    cuda_ops.set_kernels(None)


@pytest.fixture
def emulated_gpu(monkeypatch, fresh_state):
    """CPU tensors count as CUDA ones; "compiling" builds the emulated kernels from ``source[0]``."""
    source = [None]
    built = []

    def factory(device, dims):
        launcher = kernel_emulation.EmulatedLauncher(dims, source=source[0])
        built.append(launcher)
        return launcher

    monkeypatch.setattr(cuda_ops, "_on_cuda", lambda tensors: True)
    monkeypatch.setattr(cuda_launch, "LAUNCHERS", {"emulation": factory})
    return source, built


def new_process(monkeypatch):
    """What a new process has: no module in memory, no verdict in memory (the file stays)."""
    monkeypatch.setattr(cuda_launch, "_cache", {})
    kernel_check.forget()


def scene():
    dec, planes = make_decoder(), make_planes()
    o, d = make_rays()
    return dec, planes, o, d, options(12, 12)


def render(dec, planes, o, d, opts):
    with torch.no_grad():
        return cuda_ops.render_rays_fast(planes, dec, o, d, opts, True)


def rejections(caplog):
    return [r for r in caplog.records if r.name == kernel_check.__name__ and "self-check" in r.getMessage()]


# ---------------------------------------------------------------------------------------------- the problem
def test_problem_is_deterministic_meaningful_and_leaves_the_rng_alone():
    state = torch.random.get_rng_state()
    a, b = kernel_check.make_problem((32, 64, 32)), kernel_check.make_problem((32, 64, 32))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a["planes"], b["planes"]) and torch.equal(a["decoder"].net[0].weight, b["decoder"].net[0].weight)
    with torch.no_grad():
        _, _, wsum = volume.render_rays(a["planes"], a["decoder"], a["origins"], a["dirs"], a["options"], True)
    assert 0.3 < wsum.mean() < 0.999, "the check's scene must be neither empty nor opaque everywhere"
    assert (a["points"].abs() > 0.5).any(-1).any(), "some query points must lie outside the box"
    assert a["options"]["depth_resolution"] == 48 and a["options"]["depth_resolution_importance"] == 48


# ---------------------------------------------------------------------------------------------- CUDA (emulated)
def test_correct_kernels_pass_once_and_the_verdict_is_kept_on_disk(emulated_gpu, fresh_state, monkeypatch, caplog):
    source, built = emulated_gpu
    dec, planes, o, d, opts = scene()
    with torch.no_grad():
        ref = volume.render_rays(planes, dec, o, d, opts, True)
    got = render(dec, planes, o, d, opts)
    assert cuda_ops.last_path() == {"path": "kernels", "reason": "CPU emulation"}
    assert all(torch.allclose(g, r, atol=1e-5) for g, r in zip(got, ref))
    assert cuda_ops.describe("cuda").startswith("CUDA kernels (CPU emulation")
    first = len(built[0].launches)
    render(dec, planes, o, d, opts)
    per_render = len(built[0].launches) - first
    entries = json.loads(fresh_state.read_text())
    (key, entry), = entries.items()
    assert key.startswith("cuda|CPU emulation of the shipped source|32x64x32|fp32|source ")
    assert entry["ok"] and entry["max_error"] <= kernel_check.TOLERANCE
    assert not rejections(caplog)

    new_process(monkeypatch)               # the verdict comes from the file: no check launches this time
    render(dec, planes, o, d, opts)
    assert len(built) == 2 and len(built[1].launches) == per_render
    assert cuda_ops.last_path()["path"] == "kernels"


@pytest.mark.parametrize("mutation", sorted(CUDA_MUTATIONS))
def test_a_wrong_kernel_is_rejected_with_the_reason(mutation, emulated_gpu, fresh_state, monkeypatch, caplog, tmp_path):
    source, built = emulated_gpu
    source[0] = mutated(tmp_path, CUDA_SOURCE, *CUDA_MUTATIONS[mutation])
    dec, planes, o, d, opts = scene()
    with torch.no_grad():
        ref = volume.render_rays(planes, dec, o, d, opts, True)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            got = render(dec, planes, o, d, opts)
            assert all(torch.equal(g, r) for g, r in zip(got, ref))          # the reference itself ran
            reason = cuda_ops.last_path()["reason"]
            assert cuda_ops.last_path()["path"] == "pytorch"
            assert "failed their self-check" in reason and "against the PyTorch reference" in reason, reason
    assert len(rejections(caplog)) == 1                                     # warned once
    described = cuda_ops.describe("cuda")
    assert described.startswith("PyTorch (the CUDA (CPU emulation) kernels failed their self-check: "), described
    # the other wrappers do not use it either
    pts = torch.rand(2, 10, 3) - 0.5
    with torch.no_grad():
        cuda_ops.query(planes, dec, pts, pts, 1.0)
    assert cuda_ops.last_path()["path"] == "pytorch"
    # PV3D_KERNELS=on refuses instead of falling back, with the same reason
    cuda_ops.set_kernels("on")
    with pytest.raises(cuda_ops.KernelUnavailable, match="failed their self-check"):
        render(dec, planes, o, d, opts)
    cuda_ops.set_kernels(None)
    entry, = json.loads(fresh_state.read_text()).values()
    assert entry["ok"] is False and entry["max_error"] > kernel_check.TOLERANCE

    # a new process: rejected from the file without launching anything, and warned once again
    new_process(monkeypatch)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        render(dec, planes, o, d, opts)
        render(dec, planes, o, d, opts)
    assert cuda_ops.last_path()["path"] == "pytorch"
    assert built[-1].launches == [] and len(rejections(caplog)) == 1


def test_check_modes_off_and_fresh(emulated_gpu, fresh_state, monkeypatch, tmp_path):
    source, built = emulated_gpu
    source[0] = mutated(tmp_path, CUDA_SOURCE, *CUDA_MUTATIONS["feature offset 0.001 -> 0.00101"])
    dec, planes, o, d, opts = scene()
    monkeypatch.setenv(kernel_check.ENV_CHECK, "off")     # trust the kernels: the wrong one renders
    render(dec, planes, o, d, opts)
    assert cuda_ops.last_path()["path"] == "kernels"
    assert not fresh_state.exists()
    new_process(monkeypatch)
    monkeypatch.setenv(kernel_check.ENV_CHECK, "auto")
    render(dec, planes, o, d, opts)
    assert cuda_ops.last_path()["path"] == "pytorch"
    # a stale "ok" in the file is believed in auto mode, and checked again in fresh mode
    data = json.loads(fresh_state.read_text())
    for entry in data.values():
        entry.update(ok=True, reason="")
    fresh_state.write_text(json.dumps(data))
    new_process(monkeypatch)
    render(dec, planes, o, d, opts)
    assert cuda_ops.last_path()["path"] == "kernels"
    new_process(monkeypatch)
    monkeypatch.setenv(kernel_check.ENV_CHECK, "fresh")
    render(dec, planes, o, d, opts)
    assert cuda_ops.last_path()["path"] == "pytorch"
    assert not any(e["ok"] for e in json.loads(fresh_state.read_text()).values())


def test_a_check_that_crashes_rejects_for_this_process_only(emulated_gpu, fresh_state, monkeypatch):
    dec, planes, o, d, opts = scene()

    def boom(*a, **k):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(kernel_check, "run_check", boom)
    render(dec, planes, o, d, opts)
    assert cuda_ops.last_path()["path"] == "pytorch"
    assert "the self-check failed: RuntimeError: CUDA error" in cuda_ops.last_path()["reason"]
    assert not fresh_state.exists()                      # not written: it may pass next time
    monkeypatch.undo()


def test_verdicts_are_per_device_driver_and_size(monkeypatch):
    class Fake(cuda_launch.Launcher):
        name, arch = "NVRTC", "sm_90"

        def __init__(self, dims):
            self.dims, self.device = dims, torch.device("cuda", 0)

    monkeypatch.setattr(cuda_launch, "device_identity", lambda device: "NVIDIA H200 (GPU-1234)")
    monkeypatch.setattr(cuda_launch, "driver_version", lambda: "580.159.03")
    key = kernel_verdicts.cuda_key(Fake(cuda_launch.Dims(32, 64, 32)), half=False)
    assert "NVIDIA H200 (GPU-1234), driver 580.159.03, NVRTC, sm_90" in key and "32x64x32" in key
    assert key != kernel_verdicts.cuda_key(Fake(cuda_launch.Dims(16, 64, 32)), half=False)
    assert key != kernel_verdicts.cuda_key(Fake(cuda_launch.Dims(32, 64, 32)), half=True)
    monkeypatch.setattr(cuda_launch, "driver_version", lambda: "590.1")
    assert key != kernel_verdicts.cuda_key(Fake(cuda_launch.Dims(32, 64, 32)), half=False)


# ---------------------------------------------------------------------------------------------- CPU kernels
@pytest.fixture
def cpu_build(monkeypatch, tmp_path, fresh_state):
    """CPU kernels built from a copy of their source in a folder of this test (then edited by the test)."""
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    shutil.copy(cpu_kernels.source_path(), src_dir / cpu_kernels.SOURCE_FILE)
    monkeypatch.setenv("PV3D_CUDA_DIR", str(src_dir))
    monkeypatch.setenv(native.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setattr(cpu_kernels, "_libs", {})
    return src_dir / cpu_kernels.SOURCE_FILE


def test_cpu_kernels_are_checked_and_a_wrong_build_is_rejected(cpu_build, fresh_state, monkeypatch, caplog):
    dec, planes, o, d, opts = scene()
    with torch.no_grad():
        ref = volume.render_rays(planes, dec, o, d, opts, True)
    render(dec, planes, o, d, opts)
    assert cuda_ops.last_path()["path"] == "cpu-kernels"
    (key, entry), = json.loads(fresh_state.read_text()).items()
    assert key.startswith("cpu|triplane_cpu-32-64-32-") and entry["ok"]

    text = cpu_build.read_text()
    assert text.count("* 1.002f - 0.001f") == 2
    cpu_build.write_text(text.replace("* 1.002f - 0.001f", "* 1.002f - 0.00101f"))
    monkeypatch.setattr(cpu_kernels, "_libs", {})        # a new process, with the edited source
    kernel_check.forget()
    with caplog.at_level(logging.WARNING):
        got = render(dec, planes, o, d, opts)
        render(dec, planes, o, d, opts)
    assert all(torch.equal(g, r) for g, r in zip(got, ref))
    assert cuda_ops.last_path()["path"] == "pytorch"
    assert "the CPU (g++" in cuda_ops.last_path()["reason"] and "failed their self-check" in cuda_ops.last_path()["reason"]
    assert cuda_ops.describe("cpu").startswith("PyTorch (the CPU (")
    assert len(rejections(caplog)) == 1
    assert sorted(e["ok"] for e in json.loads(fresh_state.read_text()).values()) == [False, True]


def test_self_check_report_for_the_doctor(cpu_build, fresh_state):
    out = cuda_ops.self_check("cpu", (32, 64, 32))
    assert out["status"] == "ok" and out["backend"] == "cpu" and out["max_error"] <= kernel_check.TOLERANCE
    assert out["label"].startswith("CPU kernels (") and out["check_seconds"] > 0 and out["verdict_from"] == "checked"
    bad = cuda_ops.self_check("cuda", (12, 64, 32))
    assert bad["status"] == "unavailable" and "multiple of 8" in bad["reason"]


def test_the_generator_reports_a_rejection(cpu_build, tiny_generator):
    """What the viewer's status bar shows (PV3DGenerator.volume_rendering_backend)."""
    assert tiny_generator.volume_rendering_backend().startswith("CPU kernels (")
    cpu_build.write_text(cpu_build.read_text().replace("* 1.002f - 0.001f", "* 1.002f - 0.00101f"))
    cpu_kernels._libs.clear()
    kernel_check.forget()
    line = tiny_generator.volume_rendering_backend()
    assert line.startswith("PyTorch (the CPU (") and "failed their self-check: render rgb" in line, line
