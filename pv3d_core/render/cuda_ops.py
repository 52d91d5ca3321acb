"""Fused kernels for tri-plane volume rendering, each with its PyTorch reference (gsplat style).

Every public op here has the signature and outputs of a pure-PyTorch reference in ``volume.py``;
it runs a fused backend when one can be used and the reference otherwise. Two backends sit side by
side under these wrappers: for CUDA tensors the kernels of ``cuda/triplane_render.cu`` (this module),
for CPU tensors the one-pass-per-ray renderer of ``cuda/triplane_render_cpu.cpp``
(:mod:`cpu_kernels`, built with the system's C++ compiler at first use):

============================================================  ===========================================
op (this module)                                              reference
============================================================  ===========================================
``query(planes, decoder, coords, dirs, box_warp)``            ``volume.query`` (sample_planes + OSGDecoder)
``march(colors, densities, depths)``                          ``volume.march``
``importance_depths(depths_coarse, weights, n, deterministic)``  ``volume.importance_depths``
``render_rays_fast(planes, decoder, origins, dirs, options,``  ``volume.render_rays``
``deterministic=False)``
============================================================  ===========================================

Selection, per call: the kernels run when the mode allows them (``PV3D_KERNELS`` = ``auto`` (default)
| ``on`` | ``off``, or :func:`set_kernels`), the tensors are all CUDA or all CPU tensors, no gradient
is needed (the kernels are inference only), the inputs are of a supported kind (float32 rays, an
``OSGDecoder``; on CUDA tri-plane channels a multiple of 8 and at most 256 samples per ray, on the CPU
at most 1024) and the kernels compiled and passed their self-check. Otherwise the PyTorch reference runs. ``auto`` falls back
silently (the reason is in :func:`last_path`); ``on`` raises :class:`KernelUnavailable` instead;
``off`` always uses PyTorch.

The backends live beside this wrapper: :mod:`cuda_launch` compiles the CUDA kernels (NVRTC through
CuPy or ctypes, at the first use on a device) and launches them, :mod:`cuda_backend` runs the ops on a
compiled module, :mod:`cpu_kernels` builds and runs the CPU renderer. This module only decides, per
call, which of them (or the reference) runs, and keeps the self-check's verdicts.

Before a compiled module (CUDA or CPU) renders anything, it must pass a self-check against the PyTorch
reference on a small problem of its model size (:mod:`kernel_check`, through :mod:`kernel_verdicts`;
once per device, driver and model size, the verdict kept on disk). A module that disagrees is treated
like one that did not compile: the reference runs, one warning is logged, and the reason is in
:func:`describe` and :func:`last_path`. :func:`describe` gives a one-line status ("CUDA kernels (...)",
"CPU kernels (...)" or "PyTorch (...)") for the viewer's status bar and ``pv3d generate --verbose``;
:func:`last_path` what the latest call ran; :func:`self_check` the details, for ``pv3d doctor``.

``PV3D_KERNELS_HALF=1`` (or ``set_kernels(half_planes=True)``) makes the kernels read a float16 copy
of the tri-planes (half the memory traffic; about 1e-3 relative change in the features); the CPU
backend always reads float32.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from typing import Sequence

import torch

from ..errors import KernelUnavailable
from ..nn import winograd
from ..rules import env_flag, parse_bool
from . import cpu_kernels, cuda_launch, kernel_check, kernel_verdicts, volume
from .kernel_verdicts import check_cpu
from .cuda_backend import (MAX_SAMPLES, importance_depths_kernels, march_kernels, pack_decoder, prepare_planes,
                           query_kernels, render_rays_kernels)
from .cuda_launch import KERNEL_FILE, MAX_CHANNELS, Dims, Launcher, device_identity, driver_version, kernel_source_path
from .decoder import OSGDecoder

# the launch and backend names re-exported here are the ones callers used before the split
__all__ = [
    "KernelUnavailable", "set_kernels", "kernels_mode", "half_planes_enabled", "describe", "last_path",
    "kernel_source_path", "KERNEL_FILE", "query", "march", "importance_depths", "render_rays_fast", "pack_decoder",
    "check_cuda", "check_cpu", "self_check", "driver_version", "device_identity", "Dims",
]

ENV_MODE = "PV3D_KERNELS"
ENV_HALF = "PV3D_KERNELS_HALF"
MODES = ("auto", "on", "off")


# ---------------------------------------------------------------------------------------------- mode
_mode_override: str | None = None
_half_override: bool | None = None
_last = {"path": "none", "reason": "no render yet"}


def set_kernels(mode: str | None = None, *, half_planes: bool | None = None) -> None:
    """Choose ``"auto"``, ``"on"`` or ``"off"`` (None: follow ``$PV3D_KERNELS`` again), and optionally
    whether the kernels read float16 tri-planes (None: follow ``$PV3D_KERNELS_HALF``)."""
    global _mode_override, _half_override
    if mode is not None and mode not in MODES:
        raise ValueError(f"kernel mode must be one of {MODES}, not {mode!r}")
    _mode_override = mode
    _half_override = half_planes
    winograd.set_enabled(False if mode == "off" else None)     # "off" is the PyTorch reference throughout


def kernels_mode() -> str:
    """The mode in force: :func:`set_kernels`'s, else ``$PV3D_KERNELS``, else ``auto``."""
    if _mode_override is not None:
        return _mode_override
    env = os.environ.get(ENV_MODE, "auto").strip().lower() or "auto"
    flag = parse_bool(env)           # yes/no words mean on/off
    env = env if flag is None else ("on" if flag else "off")
    if env not in MODES:
        warnings.warn(f"{ENV_MODE}={env!r} is not one of {MODES}; using 'auto'", stacklevel=2)
        return "auto"
    return env


def half_planes_enabled() -> bool:
    if _half_override is not None:
        return _half_override
    return env_flag(ENV_HALF, False)


def last_path() -> dict:
    """What the latest op of this module ran: ``{"path": "kernels" | "cpu-kernels" | "pytorch", "reason": str}``
    ("kernels" are the CUDA ones)."""
    return dict(_last)


# ---------------------------------------------------------------------------------------------- selection
def _on_cuda(tensors: Sequence[torch.Tensor]) -> bool:
    return all(t.is_cuda for t in tensors)


def _decide(tensors: Sequence[torch.Tensor], problem: str | None, dims: Dims | None,
            modules: Sequence[torch.nn.Module] = ()):
    """(launcher or None, reason). Raises KernelUnavailable in mode 'on' for CUDA inputs that cannot run."""
    mode = kernels_mode()
    if mode == "off":
        return None, f"kernels off ({ENV_MODE}=off or set_kernels('off'))"
    if not _on_cuda(tensors):
        return None, "CPU tensors"
    if problem is None and len({t.device for t in tensors}) > 1:
        problem = "tensors on different devices"
    if problem is None and torch.is_grad_enabled():
        if any(t.requires_grad for t in tensors) or any(p.requires_grad for m in modules for p in m.parameters()):
            problem = "gradients are needed (the kernels are inference only)"
    if problem is None:
        try:
            launcher = cuda_launch.launcher(tensors[0].device, dims) if dims is not None \
                else cuda_launch.any_launcher(tensors[0].device)
        except KernelUnavailable as e:
            problem = str(e)
    if problem is None:
        problem = kernel_verdicts.rejection(check_cuda(launcher))
    if problem is not None:
        if mode == "on":
            raise KernelUnavailable(f"{ENV_MODE}=on but the CUDA kernels cannot run: {problem}")
        return None, problem
    return launcher, launcher.label()


def _record(launcher, reason: str) -> None:
    _last.update(path="kernels" if launcher is not None else "pytorch", reason=reason)


def _on_cpu(tensors: Sequence[torch.Tensor]) -> bool:
    return all(t.device.type == "cpu" for t in tensors)


def _decide_cpu(tensors: Sequence[torch.Tensor], problem: str | None, dims: Dims | None,
                modules: Sequence[torch.nn.Module] = ()):
    """(CPU kernel library or None, reason), as :func:`_decide` for CPU tensors."""
    mode = kernels_mode()
    if mode == "off":
        return None, f"kernels off ({ENV_MODE}=off or set_kernels('off'))"
    if problem is None and torch.is_grad_enabled():
        if any(t.requires_grad for t in tensors) or any(p.requires_grad for m in modules for p in m.parameters()):
            problem = "gradients are needed (the kernels are inference only)"
    lib = None
    if problem is None:
        try:   # "auto" does not wait for a build another thread runs (the viewer's warm-up): PyTorch meanwhile
            lib = cpu_kernels.library(_dims_tuple(dims), wait=mode == "on")
        except cpu_kernels.CpuKernelsUnavailable as e:
            problem = str(e)
    if problem is None:
        problem = kernel_verdicts.rejection(check_cpu(lib))
    if problem is not None:
        if mode == "on":
            raise KernelUnavailable(f"{ENV_MODE}=on but the CPU kernels cannot run: {problem}")
        return None, problem
    return lib, f"CPU kernels ({lib.label()})"


def _dims_tuple(dims: Dims | None) -> tuple[int, int, int]:
    """The CPU library's sizes; ops that do not depend on the model take any library already built."""
    if dims is not None:
        return dims.cin, dims.hidden, dims.cout
    built = cpu_kernels.loaded_dims()
    return built[0] if built else (Dims().cin, Dims().hidden, Dims().cout)


def _select(tensors: Sequence[torch.Tensor], problem: str | None, dims: Dims | None,
            modules: Sequence[torch.nn.Module] = (), cpu_problem: str | None = None, cpu_dims: Dims | None = None):
    """("cuda", launcher) | ("cpu", library) | (None, None), after recording the choice in last_path.
    ``problem``/``dims``: what the CUDA kernels would be given; ``cpu_problem``/``cpu_dims``: the CPU's."""
    if not _on_cuda(tensors) and _on_cpu(tensors):
        lib, reason = _decide_cpu(tensors, cpu_problem, cpu_dims, modules)
        _last.update(path="cpu-kernels" if lib is not None else "pytorch", reason=reason)
        return ("cpu", lib) if lib is not None else (None, None)
    launcher, reason = _decide(tensors, problem, dims, modules)
    _record(launcher, reason)
    return ("cuda", launcher) if launcher is not None else (None, None)


def describe(device: torch.device | str | None = None, decoder=None) -> str:
    """One line for a status bar: "CUDA kernels (CuPy NVRTC, sm_90)", "CPU kernels (g++ 12.2.0, ...)" or
    "PyTorch (<why>)" -- a failed compile, a failed self-check, ...

    With a device, says what an op on that device would run (compiling and self-checking the kernels if
    needed; on the CPU, while another thread compiles, says so without waiting); without one, uses the
    current CUDA device if there is one, else the CPU. With a ``decoder``, for the kernels of its size
    (else the size of the kernels already built, or the released model's).
    """
    if device is None:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    mode = kernels_mode()
    if mode == "off":
        return f"PyTorch (kernels off by {ENV_MODE}/set_kernels)"
    dims = None
    if decoder is not None:
        layout = decoder.kernel_layout() if isinstance(decoder, OSGDecoder) else None
        dims, problem = _decoder_dims(decoder, layout[0] if layout else 0, cuda_sizes=device.type == "cuda")
        if problem is not None:
            return f"PyTorch ({problem})"
    if device.type == "cpu":
        if cpu_kernels.build_state() == "compiling":
            return "PyTorch (CPU kernels compiling)"
        try:
            lib = cpu_kernels.library(_dims_tuple(dims))
        except cpu_kernels.CpuKernelsUnavailable as e:
            return f"PyTorch ({e})"
        problem = kernel_verdicts.rejection(check_cpu(lib))
        if problem is not None:
            return f"PyTorch ({problem})"
        return cpu_kernels.status_line(lib) + (" + Winograd 3x3" if winograd.available() else "")
    if device.type != "cuda":
        return f"PyTorch (no kernels for {device.type} tensors)"
    try:
        launcher = cuda_launch.launcher(device, dims) if dims is not None else cuda_launch.any_launcher(device)
    except KernelUnavailable as e:
        return f"PyTorch (CUDA kernels unavailable: {e})"
    problem = kernel_verdicts.rejection(check_cuda(launcher))
    if problem is not None:
        return f"PyTorch ({problem})"
    half = ", fp16 planes" if half_planes_enabled() else ""
    return f"CUDA kernels ({launcher.label()}{half})"


# ---------------------------------------------------------------------------------------------- self-check
def check_cuda(launcher: Launcher, fresh: bool = False) -> kernel_check.Verdict:
    """The self-check verdict of a compiled CUDA module (run at its first use on this device, driver and
    model size; remembered: see :mod:`kernel_check`) for the tri-planes' precision in force. ``fresh``:
    check again now."""
    return kernel_verdicts.cuda_verdict(launcher, half_planes_enabled(), fresh)


def self_check(device, dims: Dims | tuple = Dims(), fresh: bool = True) -> dict:
    """Compile (or load) the kernels for ``device`` and model size ``dims`` and self-check them (again,
    when ``fresh``), for ``pv3d doctor``: a dict with ``backend`` ("cuda" | "cpu"), ``status`` ("ok" |
    "rejected" | "unavailable"), ``label``, ``reason``, ``max_error``, ``worst``, ``compile_seconds``,
    ``check_seconds``."""
    device = torch.device(device)
    dims = dims if isinstance(dims, Dims) else Dims(*dims)
    out = {"backend": device.type, "dims": [dims.cin, dims.hidden, dims.cout], "label": "", "reason": "",
           "max_error": None, "worst": "", "compile_seconds": None, "check_seconds": None}
    try:
        if device.type == "cpu":
            t0 = time.perf_counter()
            lib = cpu_kernels.library((dims.cin, dims.hidden, dims.cout))
            out["compile_seconds"] = lib.build_seconds if lib.build_seconds else time.perf_counter() - t0
            out["cached_build"] = lib.build_seconds == 0
            out["label"] = f"CPU kernels ({lib.label()})"
            v = check_cpu(lib, fresh)
        else:
            problem = dims.unsupported()
            if problem:
                raise KernelUnavailable(problem)
            launcher = cuda_launch.launcher(device, dims)
            out["compile_seconds"] = launcher.compile_seconds
            out["label"] = f"CUDA kernels ({launcher.label()})"
            v = check_cuda(launcher, fresh)
    except (KernelUnavailable, cpu_kernels.CpuKernelsUnavailable) as e:
        out.update(status="unavailable", reason=str(e))
        return out
    out.update(status="ok" if v.ok else "rejected", reason="" if v.ok else kernel_verdicts.rejection(v),
               max_error=v.max_error if math.isfinite(v.max_error) else None,
               worst=v.worst, check_seconds=v.seconds, verdict_from=v.origin)
    return out


# ---------------------------------------------------------------------------------------------- ops
def _decoder_dims(decoder, plane_channels: int, cuda_sizes: bool = True) -> tuple[Dims | None, str | None]:
    """The decoder's sizes, and why the kernels cannot take it (None if they can). ``cuda_sizes``: also
    apply the CUDA kernels' size limits (the CPU kernels take any size)."""
    if not isinstance(decoder, OSGDecoder):
        return None, f"decoder {type(decoder).__name__} is not an OSGDecoder"
    layout = decoder.kernel_layout()
    if layout is None:
        return None, f"decoder {type(decoder).__name__} is not an OSGDecoder's FC -> softplus -> FC"
    if layout[0] != plane_channels:
        return None, f"decoder takes {layout[0]} channels, the tri-planes have {plane_channels}"
    dims = Dims(*layout)
    return dims, (dims.unsupported() if cuda_sizes else None)


def _render_problem(planes, decoder, origins, dirs, options, max_samples: int = MAX_SAMPLES,
                    cuda_sizes: bool = True) -> tuple[Dims | None, str | None]:
    if options.get("ray_start") == "auto" or options.get("disparity_space_sampling", False) \
            or options.get("clamp_mode", "softplus") != "softplus":
        return None, "options the reference rejects"
    if planes.ndim != 5 or planes.shape[1] != 3 or origins.ndim != 3 or origins.shape[-1] != 3 \
            or dirs.shape != origins.shape or planes.shape[0] != origins.shape[0]:
        return None, "unexpected shapes"
    if origins.dtype != torch.float32 or dirs.dtype != torch.float32:
        return None, "rays are not float32"
    if planes.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return None, f"planes are {planes.dtype}"
    n_c = int(options["depth_resolution"])
    n_f = int(options.get("depth_resolution_importance", 0) or 0)
    if n_c < 2 or n_c > max_samples or n_f > max_samples or (n_f > 0 and n_c < 4):
        return None, f"sample counts {n_c}+{n_f} outside the kernels' range"
    return _decoder_dims(decoder, planes.shape[2], cuda_sizes)


def render_rays_fast(planes, decoder, origins, dirs, options: dict, deterministic: bool = False):
    """:func:`volume.render_rays` on the fused kernels where they can run, else the reference itself.

    Same arguments and outputs: feature colours (N, R, C) in [-1, 1], depth (N, R, 1), accumulated
    weight (N, R, 1). With ``deterministic=False`` the kernels are given the reference's random
    numbers (same calls, same order), so both paths agree for the same RNG state.
    """
    dims, problem = _render_problem(planes, decoder, origins, dirs, options)
    cpu_dims, cpu_problem = _render_problem(planes, decoder, origins, dirs, options, cpu_kernels.MAX_SAMPLES, False)
    kind, backend = _select([planes, origins, dirs], problem, dims, [decoder], cpu_problem, cpu_dims)
    if kind is None:
        return volume.render_rays(planes, decoder, origins, dirs, options, deterministic)
    with torch.no_grad():
        if kind == "cpu":
            return cpu_kernels.render_rays(backend, prepare_planes(planes, False), pack_decoder(decoder, cpu_dims, planes.device),
                                           origins, dirs, options, deterministic)
        return render_rays_kernels(backend, planes, decoder, origins, dirs, options, deterministic,
                                   half_planes_enabled())


def query(planes, decoder, coords, dirs, box_warp: float) -> dict:
    """:func:`volume.query` (tri-plane sampling + decoder at points (N, M, 3)) on kernel (a) or the CPU
    kernels."""
    problem = cpu_problem = None
    dims = cpu_dims = None
    if planes.ndim != 5 or planes.shape[1] != 3 or coords.ndim != 3 or coords.shape[-1] != 3 \
            or planes.shape[0] != coords.shape[0]:
        problem = cpu_problem = "unexpected shapes"
    elif coords.dtype != torch.float32:
        problem = cpu_problem = "points are not float32"
    else:
        dims, problem = _decoder_dims(decoder, planes.shape[2])
        cpu_dims, cpu_problem = _decoder_dims(decoder, planes.shape[2], cuda_sizes=False)
    kind, backend = _select([planes, coords], problem, dims, [decoder], cpu_problem, cpu_dims)
    if kind is None:
        return volume.query(planes, decoder, coords, dirs, box_warp)
    with torch.no_grad():
        if kind == "cpu":
            return cpu_kernels.query(backend, prepare_planes(planes, False), pack_decoder(decoder, cpu_dims, planes.device),
                                     coords, box_warp)
        return query_kernels(backend, planes, decoder, coords, box_warp, half_planes_enabled())


def march(colors, densities, depths):
    """:func:`volume.march` (mid-point compositing of depth-sorted samples) on kernel (b) or the CPU kernels."""
    problem = cpu_problem = None
    if colors.ndim != 4 or densities.shape != colors.shape[:3] + (1,) or depths.shape != densities.shape:
        problem = cpu_problem = "unexpected shapes"
    elif any(t.dtype != torch.float32 for t in (colors, densities, depths)):
        problem = cpu_problem = "inputs are not float32"
    elif colors.shape[2] < 2:
        problem = cpu_problem = "fewer than 2 samples"
    elif colors.shape[3] > MAX_CHANNELS:
        problem = "too many channels"
    kind, backend = _select([colors, densities, depths], problem, None, (), cpu_problem)
    if kind is None:
        return volume.march(colors, densities, depths)
    with torch.no_grad():
        if kind == "cpu":
            return cpu_kernels.march(backend, colors, densities, depths)
        return march_kernels(backend, colors, densities, depths)


def importance_depths(depths_coarse, weights, n: int, deterministic: bool):
    """:func:`volume.importance_depths` (fine depths from coarse weights) on kernel (c).
    Returned in quantile order, like the reference (not sorted)."""
    problem = cpu_problem = None
    if depths_coarse.ndim != 4 or weights.shape != depths_coarse.shape[:2] + (depths_coarse.shape[2] - 1, 1):
        problem = cpu_problem = "unexpected shapes"
    elif depths_coarse.dtype != torch.float32 or weights.dtype != torch.float32:
        problem = cpu_problem = "inputs are not float32"
    elif not 4 <= depths_coarse.shape[2] <= cpu_kernels.MAX_SAMPLES:
        problem = cpu_problem = "sample counts outside the kernels' range"
    elif depths_coarse.shape[2] > MAX_SAMPLES or n > MAX_SAMPLES:
        problem = "sample counts outside the kernels' range"
    # the reference runs under no_grad: its output never needs a gradient, so neither does this
    kind, backend = _select([depths_coarse.detach(), weights.detach()], problem, None, (), cpu_problem)
    if kind is None:
        return volume.importance_depths(depths_coarse, weights, n, deterministic)
    if kind == "cpu":
        return cpu_kernels.importance_depths(backend, depths_coarse, weights, n, deterministic)
    return importance_depths_kernels(backend, depths_coarse, weights, n, deterministic)
