"""`pv3d doctor` on this machine (CPU only: it must finish in under a minute and say what it skipped and
why), and how it reports what goes wrong elsewhere (a rejected kernel, no GL context)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import types

import pytest
import torch

from pv3d_core.cli import doctor, main


def test_doctor_on_this_machine(tmp_path):
    """The whole command as a user runs it, in its own process (the JSON form; the text form is the same
    report through format_report, checked below on the same data)."""
    env = dict(os.environ)
    threads = os.environ.get("PV3D_TEST_THREADS")
    args = ["--threads", threads] if threads else []
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pv3d_core.cli", "doctor", "--json", *args], capture_output=True,
                       text=True, timeout=300, env=env, cwd=tmp_path)
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    v = rep["versions"]
    assert v["python"] and v["torch"] == torch.__version__ and "C++ compiler" in v
    assert rep["devices"][0]["device"] == "cpu" and rep["devices"][0]["cores"] >= 1
    cpu = [k for k in rep["kernels"] if k["device"] == "cpu"]
    assert cpu and all(k["status"] == "ok" and k["max_error"] <= 1e-5 for k in cpu), cpu
    assert {m for k in cpu for m in k["models"]} == {"tiny", "pv3d-vox512"}
    conv = rep["convolutions"]
    assert conv["cpu"] == "Winograd 3x3 convolutions" and conv["self_check_error"] < 1e-4, conv
    t = {x["model"]: x for x in rep["timings"]}
    assert t["tiny"]["resolution"] == 128 and t["pv3d-vox512"]["resolution"] == 512
    for x in t.values():
        assert all(x[s] > 0 for s in ("mapping", "backbone", "render", "sr", "frame", "cached"))
        assert x["volume_rendering"].startswith(("CPU kernels", "CUDA kernels", "PyTorch ("))
    skipped = {s["what"]: s["why"] for s in rep["skipped"]}
    if not torch.cuda.is_available():
        assert wall < 60, f"pv3d doctor took {wall:.0f} s on a CPU-only machine"
        assert "no CUDA device" in skipped["CUDA kernels (compile + self-check)"]
        assert "no CUDA device" in skipped["GPU timings"]
        assert not [k for k in rep["kernels"] if k["device"].startswith("cuda")]
    if rep["display"]["status"] == "ok":
        assert rep["display"]["host"]["readback_matches"] is True
        if not torch.cuda.is_available():
            assert "no CUDA device" in skipped["CUDA-GL interop display"]
    else:
        assert any(w.startswith("display") for w in skipped), skipped      # and it says why
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" and not torch.cuda.is_available():
        assert rep["host_memory"] == "in force"
    text = doctor.format_report(rep)
    assert "host memory for CPU rendering: keep freed large blocks: " in text
    for section in ("versions", "devices", "kernels (self-check", "display", "timings on", "fallbacks", "skipped"):
        assert f"\n{section}" in text, section
    assert "tiny 128²" in text and "pv3d-vox512 512²" in text
    assert "cpu, 3x3 convolutions: Winograd 3x3 convolutions (self-check error " in text


def test_a_rejected_kernel_and_a_missing_gl_context_are_reported_with_their_reasons(monkeypatch, capsys):
    from pv3d_core.render import cuda_ops

    def rejected(device, dims, fresh=True):
        return {"backend": "cpu", "dims": list(dims), "label": "CPU kernels (g++)", "status": "rejected",
                "reason": "the CPU (g++) kernels failed their self-check: render rgb off by 2.0e-05 (> 1e-05)",
                "max_error": 2e-5, "worst": "render rgb", "compile_seconds": 1.0, "check_seconds": 0.1}

    monkeypatch.setattr(cuda_ops, "self_check", rejected)
    no_context = types.SimpleNamespace(returncode=3, stderr="", stdout=json.dumps(
        {"context": {"error": "glfw: no display server; egl: EGL lists no device"}}))
    monkeypatch.setattr(doctor.subprocess, "run", lambda *a, **k: no_context)
    rc = main(["doctor", "--no-timings"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "REJECTED: the CPU (g++) kernels failed their self-check: render rgb off by 2.0e-05" in out
    assert "volume rendering on cpu (tiny, pv3d-vox512): PyTorch: the CPU (g++) kernels failed" in out
    assert "display (host upload, CUDA-GL interop): no OpenGL context: glfw: no display server; egl: EGL lists" in out
    assert "timings: --no-timings" in out


def test_doctor_user_errors(capsys):
    assert main(["doctor", "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
    assert main(["doctor", "--device", "warp-drive"]) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only wording")
def test_no_cuda_reason_names_the_cpu_build():
    assert doctor.no_cuda_reason() == f"no CUDA device: torch {torch.__version__} is a CPU build" \
        if not torch.version.cuda else doctor.no_cuda_reason().startswith("no CUDA device visible")


def test_host_memory_that_is_not_kept_is_a_fallback(monkeypatch):
    from pv3d_core import host_memory

    monkeypatch.setattr(host_memory, "_state", {"done": True, "applied": False, "reason": "off by PV3D_KEEP_FREED_MEMORY"})
    report = {"fallbacks": []}
    assert doctor.check_host_memory(torch.device("cpu"), report) == "off by PV3D_KEEP_FREED_MEMORY"
    assert report["fallbacks"][0]["what"] == "host memory for CPU rendering"
    assert "off by PV3D_KEEP_FREED_MEMORY" in report["fallbacks"][0]["reason"]
    monkeypatch.setattr(host_memory, "_state", {"done": True, "applied": True, "reason": "in force"})
    report = {"fallbacks": []}
    assert doctor.check_host_memory(torch.device("cpu"), report) == "in force" and report["fallbacks"] == []
