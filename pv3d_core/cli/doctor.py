"""`pv3d doctor`: does this machine do what the README promises?

One command that says, for this machine: the versions that matter (Python, torch and the CUDA it was
built for, the NVIDIA driver, cuda-python and CuPy when present, the C++ compiler of the CPU kernels,
the viewer's GL packages), each device, whether the fused kernels compile and pass their self-check
against the PyTorch reference (CPU kernels, and CUDA kernels on every GPU; run afresh, the verdict
updated), whether the viewer's CUDA-GL interop display works (in a hidden glfw window or a headless EGL
context, as a separate program: ``python -m pv3d_viewer.display_check``), the time per stage of the tiny
preset at 128² and of the released configuration at 512² with random weights, and every fallback and
skipped check with its reason. ``--json`` prints the same as one JSON object.

On a CPU-only machine it takes well under a minute: the 512² model is timed once, without warm-up.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

from ..errors import UsageError
from .common import THREADS, add_device

#: models timed (preset, why): the CPU-trainable default and the released configuration
MODELS = (("tiny", "the default model's size"), ("pv3d-vox512", "the released configuration"))
DISPLAY_TIMEOUT_S = 120


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="check this machine: versions, devices, kernels, display, timings")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_device(p)
    p.add_argument("--threads", type=THREADS.flag, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-timings", action="store_true", help="skip the model timings")
    p.add_argument("--no-display", action="store_true", help="skip the display check")
    p.set_defaults(func=run_doctor)


def run_doctor(args) -> int:
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    report = diagnose(args.device, threads=args.threads, timings=not args.no_timings, display=not args.no_display)
    print(json.dumps(report, indent=1, default=str) if args.json else format_report(report))
    return 0


# ---------------------------------------------------------------------------------------------- facts
def _dist_version(*names: str) -> str | None:
    from importlib import metadata

    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _cupy_version() -> str | None:
    """CuPy's version from its distribution (cupy-cuda12x, cupy-cuda13x, ...), without importing it."""
    from importlib import metadata

    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower()
        if name == "cupy" or name.startswith("cupy-"):
            return f"{dist.version} ({name})"
    return None


def versions() -> dict:
    import torch

    from .. import native
    from ..render import cuda_ops

    cxx = native.compiler()
    cxx_version = None
    if cxx:
        try:
            cxx_version = subprocess.run([cxx, "--version"], capture_output=True, text=True,
                                         timeout=30).stdout.splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            cxx_version = cxx
    return {
        "python": platform.python_version(), "platform": platform.platform(),
        "pv3d-studio": _dist_version("pv3d-studio") or "source tree",
        "torch": torch.__version__, "torch CUDA": torch.version.cuda,
        "cuDNN": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "NVIDIA driver": cuda_ops.driver_version(),
        "cuda-python": _dist_version("cuda-python", "cuda-bindings"), "CuPy": _cupy_version(),
        "numpy": _dist_version("numpy"), "C++ compiler": cxx_version,
        "PyOpenGL": _dist_version("PyOpenGL"), "glfw": _dist_version("glfw"), "imgui-bundle": _dist_version("imgui-bundle"),
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def no_cuda_reason() -> str | None:
    """Why torch sees no GPU, or None when it sees one."""
    import torch

    if torch.cuda.is_available():
        return None
    if not torch.version.cuda:
        return f"no CUDA device: torch {torch.__version__} is a CPU build"
    return f"no CUDA device visible to torch {torch.__version__} (CUDA {torch.version.cuda}; driver: " \
           f"{_driver_or_none()})"


def _driver_or_none() -> str:
    from ..render import cuda_ops

    return cuda_ops.driver_version() or "none found"


def devices() -> list[dict]:
    import torch

    out = [{"device": "cpu", "name": _cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.append({"device": f"cuda:{i}", "name": p.name, "capability": f"sm_{p.major}{p.minor}",
                        "memory_gib": round(p.total_memory / 2**30, 1), "multiprocessors": p.multi_processor_count,
                        "uuid": str(getattr(p, "uuid", "") or "")})
    return out


# ---------------------------------------------------------------------------------------------- checks
def model_sizes() -> dict:
    """Decoder sizes (channels, hidden, features) -> the presets that have them, from the configs."""
    from ..config import preset
    from ..render.decoder import OSGDecoder

    sizes: dict = {}
    for name, _ in MODELS:
        g = preset(name).generator
        layout = OSGDecoder(g.plane_channels, output_dim=g.plane_channels).kernel_layout()
        sizes.setdefault(tuple(layout), []).append(name)
    return sizes


def check_kernels(report: dict) -> list[dict]:
    import torch

    from ..render import cuda_ops

    out = []
    targets = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    for dims, names in model_sizes().items():
        for dev in targets:
            r = cuda_ops.self_check(dev, dims, fresh=True)
            r.update(device=dev, models=names)
            out.append(r)
            if r["status"] != "ok":
                report["fallbacks"].append({"what": f"volume rendering on {dev} ({', '.join(names)})",
                                            "reason": f"PyTorch: {r['reason']}"})
    why = no_cuda_reason()
    if why:
        report["skipped"].append({"what": "CUDA kernels (compile + self-check)", "why": why})
    elif _cupy_version() is None:
        report["fallbacks"].append({"what": "CUDA kernel launcher",
                                    "reason": "CuPy is not installed: the kernels compile with libnvrtc through ctypes "
                                              "(works as well; CuPy also caches the binaries on disk)"})
    from ..nn import winograd
    conv = winograd.describe()
    report["convolutions"] = {"cpu": conv, "self_check_error": winograd.self_check_error()}
    if not conv.startswith("Winograd"):
        report["fallbacks"].append({"what": "3x3 convolutions on the CPU", "reason": conv})
    mode = cuda_ops.kernels_mode()
    if mode == "off":
        report["fallbacks"].append({"what": "volume rendering", "reason": f"PyTorch everywhere: {cuda_ops.ENV_MODE}=off"})
    return out


def check_display(report: dict) -> dict:
    """The viewer's display check, as a separate program (the library never imports the viewer)."""
    from importlib.util import find_spec

    if find_spec("pv3d_viewer") is None:
        report["skipped"].append({"what": "display (host upload, CUDA-GL interop)",
                                  "why": "the viewer is not installed (pip install '.[viewer]')"})
        return {"status": "skipped"}
    cmd = [sys.executable, "-m", "pv3d_viewer.display_check", "--json"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=DISPLAY_TIMEOUT_S)
        out = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
    except subprocess.TimeoutExpired:
        out, r = {"error": f"did not finish in {DISPLAY_TIMEOUT_S} s"}, None
    except ValueError:
        out = {"error": f"unreadable output: {r.stdout[-300:]!r}"}
    if r is not None and not out:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        out = {"error": f"exit status {r.returncode}: {tail}"}
    ctx_error = out.get("context", {}).get("error") if isinstance(out.get("context"), dict) else None
    if "error" in out or ctx_error:
        why = ctx_error and f"no OpenGL context: {ctx_error}" or out.get("error")
        report["skipped"].append({"what": "display (host upload, CUDA-GL interop)", "why": why})
        out["status"] = "skipped"
        return out
    out["status"] = "ok"
    interop = out.get("interop", {})
    if interop.get("status") == "skipped":
        report["skipped"].append({"what": "CUDA-GL interop display", "why": interop.get("reason", "?")})
    elif interop.get("status") == "fallback":
        report["fallbacks"].append({"what": "display", "reason": f"host upload: {interop.get('reason', '?')}"})
    return out


def time_models(device, report: dict) -> list[dict]:
    import torch

    from ..config import preset
    from ..io import build_generator
    from ..timing import time_stages

    out = []
    gpu = device.type == "cuda"
    for name, why in MODELS:
        torch.manual_seed(0)
        G = build_generator(preset(name)).to(device).eval().requires_grad_(False)
        if gpu:
            runs, warmup = 20, 3
        elif name == "tiny":
            runs, warmup = 3, 1
        else:   # seconds a frame on a CPU: one run keeps the doctor under a minute
            runs, warmup = 1, 0
        r = time_stages(G, runs=runs, warmup=warmup)
        r.update(model=name, why=why, device=str(device))
        out.append(r)
        del G
        if gpu:
            torch.cuda.empty_cache()
    if not gpu:
        report["skipped"].append({"what": "GPU timings", "why": no_cuda_reason() or f"--device {device}"})
    return out


def diagnose(device_name: str = "auto", threads: int | None = None, timings: bool = True,
             display: bool = True) -> dict:
    """Everything `pv3d doctor` reports, as a dict (see the module doc)."""
    import torch

    from ..device import pick_device

    t0 = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    device = pick_device(device_name)
    report: dict = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "fallbacks": [], "skipped": []}
    report["versions"] = versions()
    report["devices"] = devices()
    report["kernels"] = check_kernels(report)
    if display:
        report["display"] = check_display(report)
    else:
        report["display"] = {"status": "skipped"}
        report["skipped"].append({"what": "display", "why": "--no-display"})
    if timings:
        report["timings"] = time_models(device, report)
    else:
        report["timings"] = []
        report["skipped"].append({"what": "timings", "why": "--no-timings"})
    report["host_memory"] = check_host_memory(device, report)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def check_host_memory(device, report: dict) -> str:
    """Whether CPU rendering keeps freed large blocks for reuse (:mod:`pv3d_core.host_memory`; what a CPU
    FrameRenderer asks for, so this asks too); a fallback when it cannot."""
    from .. import host_memory

    if device.type != "cpu":
        return "not needed (GPU rendering)"
    if not host_memory.keep_freed_memory():
        report["fallbacks"].append({"what": "host memory for CPU rendering",
                                    "reason": f"freed large blocks go back to the system ({host_memory.status()}); "
                                              "512² frames fault in fresh pages"})
    return host_memory.status()


# ---------------------------------------------------------------------------------------------- text
def _ms(v: float) -> str:
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def format_report(r: dict) -> str:
    v = r["versions"]
    na = "not installed"
    lines = [f"pv3d doctor ({r['when']}, {r['seconds']} s)", "", "versions"]
    lines.append(f"  Python {v['python']} on {v['platform']}; pv3d-studio {v['pv3d-studio']}")
    lines.append(f"  torch {v['torch']} ({'CUDA ' + v['torch CUDA'] if v['torch CUDA'] else 'CPU build'})"
                 + (f", cuDNN {v['cuDNN']}" if v["cuDNN"] and v["torch CUDA"] else "")
                 + f"; NVIDIA driver {v['NVIDIA driver'] or 'none found'}")
    lines.append(f"  cuda-python {v['cuda-python'] or na}; CuPy {v['CuPy'] or na}; numpy {v['numpy']}")
    lines.append(f"  C++ compiler {v['C++ compiler'] or 'none (the CPU kernels need one)'}")
    lines.append(f"  PyOpenGL {v['PyOpenGL'] or na}; glfw {v['glfw'] or na}; imgui-bundle {v['imgui-bundle'] or na}")
    lines += ["", "devices"]
    for d in r["devices"]:
        if d["device"] == "cpu":
            n = d["torch_threads"]
            lines.append(f"  cpu: {d['name']}, {d['cores']} cores (torch uses {n} thread{'s' if n != 1 else ''})")
        else:
            lines.append(f"  {d['device']}: {d['name']}, {d['capability']}, {d['memory_gib']} GiB, "
                         f"{d['multiprocessors']} SMs {d['uuid']}")
    if len(r["devices"]) == 1:
        lines.append(f"  cuda: none ({no_cuda_reason() or '?'})")
    if "host_memory" in r:
        lines.append(f"  host memory for CPU rendering: keep freed large blocks: {r['host_memory']}")
    lines += ["", "kernels (self-check against the PyTorch reference, tolerance 1e-5)"]
    for k in r["kernels"]:
        size = "x".join(map(str, k["dims"]))
        head = f"  {k['device']}, model size {size} ({', '.join(k['models'])}): "
        if k["status"] == "ok":
            built = "loaded from the cache" if k.get("cached_build") else f"compiled in {k['compile_seconds']:.1f} s"
            lines.append(head + f"match, max error {k['max_error']:.1e}; {k['label']}, {built}, "
                                f"checked in {k['check_seconds']:.2f} s")
        else:
            lines.append(head + f"{k['status'].upper()}: {k['reason']}")
    if "convolutions" in r:
        c = r["convolutions"]
        err = c.get("self_check_error")
        lines.append(f"  cpu, 3x3 convolutions: {c['cpu']}" + (f" (self-check error {err:.1e})" if err is not None else ""))
    lines += ["", "display"]
    disp = r["display"]
    if disp.get("status") == "ok":
        lines.append(f"  context: {disp['context']['kind']}; {disp['context']['renderer']}, OpenGL {disp['context']['version']}")
        h = disp["host"]
        lines.append(f"  host upload: {'reads back as uploaded' if h['readback_matches'] else 'READS BACK WRONG'}; "
                     f"{h['ms']:.2f} ms per {disp['size']}² frame")
        i = disp.get("interop", {})
        if i.get("status") == "ok":
            lines.append(f"  CUDA-GL interop: works ({i['reason']}); {i['ms']:.2f} ms per frame vs "
                         f"{i['host_ms_for_cuda_frame']:.2f} ms through the host")
        elif i.get("status") == "fallback":
            lines.append(f"  CUDA-GL interop: NOT USED, host path instead: {i['reason']} "
                         f"({i.get('host_ms_for_cuda_frame', 0):.2f} ms per frame through the host)")
        else:
            lines.append(f"  CUDA-GL interop: skipped ({i.get('reason', '?')})")
    else:
        lines.append("  skipped (see below)")
    if r["timings"]:
        lines += ["", f"timings on {r['timings'][0]['device']}, random weights, ms (median of the runs)"]
        for t in r["timings"]:
            stages = "  ".join(f"{k} {_ms(t[k])}" for k in ("mapping", "backbone", "render", "sr"))
            runs = f"{t['runs']} runs" if t["runs"] > 1 else "1 run" + (", no warm-up" if not t["warmup"] else "")
            lines.append(f"  {t['model']} {t['resolution']}² (neural {t['neural_resolution']}²), {runs}: {stages} | "
                         f"frame {_ms(t['frame'])} ({1e3 / t['frame']:.1f} fps), cached planes {_ms(t['cached'])} "
                         f"({1e3 / t['cached']:.1f} fps)")
        for backend in dict.fromkeys(t["volume_rendering"] for t in r["timings"]):
            models = ", ".join(t["model"] for t in r["timings"] if t["volume_rendering"] == backend)
            lines.append(f"  volume rendering ({models}): {backend}")
    for title, key, fmt in (("fallbacks", "fallbacks", lambda x: f"{x['what']}: {x['reason']}"),
                            ("skipped", "skipped", lambda x: f"{x['what']}: {x['why']}")):
        lines += ["", title]
        lines += [f"  - {fmt(x)}" for x in r[key]] or ["  none"]
    return "\n".join(lines)
