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

Compilation happens at the first use on a device, at run time, with NVRTC through one of two
launchers, tried in order (``PV3D_KERNEL_BACKEND`` = ``cupy`` | ``nvrtc`` picks one):

- ``cupy``: CuPy's ``RawModule`` (the ``gpu`` extra; CuPy also caches the binary on disk);
- ``nvrtc``: libnvrtc and the CUDA driver API through ctypes (no extra package: CUDA builds of
  PyTorch ship libnvrtc).

Compiled modules are cached per device and model size. Kernels run on PyTorch's current stream.

Before a compiled module (CUDA or CPU) renders anything, it must pass a self-check against the PyTorch
reference on a small problem of its model size (:mod:`kernel_check`; once per device, driver and model
size, the verdict kept on disk). A module that disagrees is treated like one that did not compile: the
reference runs, one warning is logged, and the reason is in :func:`describe` and :func:`last_path`.
:func:`describe` gives a one-line status ("CUDA kernels (...)", "CPU kernels (...)" or "PyTorch (...)")
for the viewer's status bar and ``pv3d generate --verbose``; :func:`last_path` what the latest call ran;
:func:`self_check` the details, for ``pv3d doctor``.

``PV3D_KERNELS_HALF=1`` (or ``set_kernels(half_planes=True)``) makes the kernels read a float16 copy
of the tri-planes (half the memory traffic; about 1e-3 relative change in the features); the CPU
backend always reads float32.
"""
from __future__ import annotations

import ctypes
import functools
import glob
import hashlib
import math
import os
import re
import sys
import threading
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..errors import KernelUnavailable
from ..paths import kernel_file
from . import cpu_kernels, kernel_check, volume
from .decoder import OSGDecoder

__all__ = [
    "KernelUnavailable", "set_kernels", "kernels_mode", "half_planes_enabled", "describe", "last_path",
    "kernel_source_path", "KERNEL_FILE", "query", "march", "importance_depths", "render_rays_fast", "pack_decoder",
    "check_cuda", "check_cpu", "self_check", "driver_version", "device_identity",
]

ENV_MODE = "PV3D_KERNELS"
ENV_HALF = "PV3D_KERNELS_HALF"
ENV_BACKEND = "PV3D_KERNEL_BACKEND"
ENV_SOURCE = "PV3D_CUDA_DIR"
MODES = ("auto", "on", "off")
MAX_SAMPLES = 256          # PV3D_MAX_SAMPLES in the kernel source
MAX_CHANNELS = 128         # 32 lanes x PV3D_MAX_CPL
KERNEL_FILE = "triplane_render.cu"


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


def kernels_mode() -> str:
    """The mode in force: :func:`set_kernels`'s, else ``$PV3D_KERNELS``, else ``auto``."""
    if _mode_override is not None:
        return _mode_override
    env = os.environ.get(ENV_MODE, "auto").strip().lower() or "auto"
    aliases = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off"}
    env = aliases.get(env, env)
    if env not in MODES:
        warnings.warn(f"{ENV_MODE}={env!r} is not one of {MODES}; using 'auto'", stacklevel=2)
        return "auto"
    return env


def half_planes_enabled() -> bool:
    if _half_override is not None:
        return _half_override
    return os.environ.get(ENV_HALF, "0").strip().lower() in ("1", "true", "yes", "on")


def last_path() -> dict:
    """What the latest op of this module ran: ``{"path": "kernels" | "cpu-kernels" | "pytorch", "reason": str}``
    ("kernels" are the CUDA ones)."""
    return dict(_last)


def kernel_source_path() -> Path:
    """The kernel source: ``$PV3D_CUDA_DIR``'s copy, else the one inside the installed package
    (``pv3d_core/kernels/``, read with importlib.resources), else the source tree's ``cuda/``."""
    return kernel_file(KERNEL_FILE)


# ---------------------------------------------------------------------------------------------- launchers
@dataclass(frozen=True)
class Dims:
    """Compile-time sizes of a kernel module: tri-plane channels, decoder hidden width, feature outputs."""

    cin: int = 32
    hidden: int = 64
    cout: int = 32

    @property
    def out_pad(self) -> int:
        return (self.cout + 1 + 3) // 4 * 4

    @property
    def n_params(self) -> int:
        return self.hidden * self.cin + self.hidden + self.hidden * self.out_pad + self.out_pad

    def defines(self) -> list[str]:
        return [f"-DPV3D_CIN={self.cin}", f"-DPV3D_HIDDEN={self.hidden}", f"-DPV3D_COUT={self.cout}"]

    def unsupported(self) -> str | None:
        if self.cin % 8:
            return f"tri-plane channels {self.cin} are not a multiple of 8"
        if self.cout % 4:
            return f"decoder features {self.cout} are not a multiple of 4"
        if self.hidden % 4 or self.hidden <= 0:
            return f"decoder hidden width {self.hidden} is not a positive multiple of 4"
        if self.n_params * 4 > 48 * 1024:
            return "decoder parameters exceed 48 KB of shared memory"
        if self.cout > MAX_CHANNELS:
            return f"more than {MAX_CHANNELS} feature channels"
        return None




class _Launcher:
    """A compiled kernel module on one device. ``launch(name, grid, block, args)`` with args made of
    tensors (device pointers), ints (int32) and floats (double), in the kernel's order."""

    name = "?"
    num_sms = 1
    arch = ""
    device = torch.device("cuda")   # where the tensors it takes live
    dims = None                     # the Dims it was compiled for
    compile_seconds = 0.0

    def launch(self, kernel: str, grid: int, block: int, args: Sequence) -> None:  # pragma: no cover
        raise NotImplementedError

    def label(self) -> str:
        return f"{self.name}, {self.arch}" if self.arch else self.name

    def identity(self) -> str:
        """What the self-check's verdict depends on besides the model size: the GPU, its driver, the
        launcher and the code it compiled for."""
        return f"{device_identity(self.device)}, driver {driver_version() or '?'}, {self.label()}"


def _read_source() -> str:
    path = kernel_source_path()
    if not path.is_file():
        raise FileNotFoundError(f"kernel source not found at {path} (set ${ENV_SOURCE})")
    return path.read_text()


def _compile_options(dims: Dims) -> list[str]:
    return dims.defines()


class _CupyLauncher(_Launcher):
    name = "CuPy NVRTC"

    def __init__(self, device: torch.device, dims: Dims):
        import cupy  # noqa: F401  (ImportError -> next launcher)
        import numpy as np

        self._cp, self._np = cupy, np
        self.index = device.index if device.index is not None else torch.cuda.current_device()
        self.device, self.dims = torch.device("cuda", self.index), dims
        major, minor = torch.cuda.get_device_capability(self.index)
        self.arch = f"sm_{major}{minor}"
        self.num_sms = torch.cuda.get_device_properties(self.index).multi_processor_count
        with cupy.cuda.Device(self.index):
            self._module = cupy.RawModule(code=_read_source(), options=tuple(_compile_options(dims)))
            self._functions = {k: self._module.get_function(k) for k in _KERNELS}
        self._streams: dict[int, object] = {}

    def launch(self, kernel, grid, block, args):
        np = self._np
        conv = []
        for a in args:
            if isinstance(a, torch.Tensor):
                conv.append(np.uint64(a.data_ptr()))
            elif isinstance(a, bool) or isinstance(a, int):
                conv.append(np.int32(a))
            else:
                conv.append(np.float64(a))
        ptr = torch.cuda.current_stream(self.index).cuda_stream
        stream = self._streams.get(ptr)
        if stream is None:
            stream = self._streams[ptr] = self._cp.cuda.ExternalStream(ptr, self.index)
        with self._cp.cuda.Device(self.index), stream:
            self._functions[kernel]((int(grid),), (int(block),), tuple(conv))


def _find_nvrtc(stems: Sequence[str], extra_dirs: Sequence[Path]) -> ctypes.CDLL:
    errors = []
    for stem in stems:       # already loaded by PyTorch, or on the loader's path
        try:
            return ctypes.CDLL(stem)
        except OSError as e:
            errors.append(str(e))
    for d in extra_dirs:
        for path in sorted(glob.glob(str(d / "libnvrtc.so*")), reverse=True):
            if "builtins" in Path(path).name or "alt" in Path(path).name:
                continue
            try:
                return ctypes.CDLL(path)
            except OSError as e:
                errors.append(str(e))
    raise OSError("; ".join(errors[-3:]) or f"none of {list(stems)} found")


def load_nvrtc() -> ctypes.CDLL:
    """libnvrtc: PyTorch's (CUDA wheels ship it in nvidia/*/lib), else CUDA_HOME's."""
    version = (torch.version.cuda or "").split(".")[0]
    stems = ([f"libnvrtc.so.{version}"] if version else []) + ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
    dirs = []
    for sp in sys.path:
        dirs += [Path(p) for p in glob.glob(os.path.join(sp, "nvidia", "*", "lib"))]
    for env in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(env):
            dirs += [Path(os.environ[env]) / "lib64", Path(os.environ[env]) / "lib"]
    dirs += [Path("/usr/local/cuda/lib64"), *map(Path, glob.glob("/usr/local/cuda-*/lib64"))]
    return _find_nvrtc(stems, dirs)


def nvrtc_compile(source: str, arch: str, options: Sequence[str] = (), name: str = KERNEL_FILE,
                  lib: ctypes.CDLL | None = None) -> tuple[bytes, str]:
    """Compile CUDA source with NVRTC. ``arch`` "sm_90" gives a CUBIN, "compute_90" PTX.
    Returns (image, log); raises RuntimeError with the log on failure."""
    lib = lib or load_nvrtc()
    prog = ctypes.c_void_p()

    lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    def check(res, what):
        if res != 0:
            msg = lib.nvrtcGetErrorString(res) or b""
            raise RuntimeError(f"{what} failed: {res} {msg.decode(errors='replace')}")

    check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None),
          "nvrtcCreateProgram")
    try:
        opts = [f"--gpu-architecture={arch}", *options]
        c_opts = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        res = lib.nvrtcCompileProgram(prog, len(opts), c_opts)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, buf)
        log = buf.value.decode(errors="replace")
        if res != 0:
            raise RuntimeError(f"NVRTC compilation failed for {arch}:\n{log}")
        cubin = arch.startswith("sm_")
        get_size, get = ((lib.nvrtcGetCUBINSize, lib.nvrtcGetCUBIN) if cubin
                         else (lib.nvrtcGetPTXSize, lib.nvrtcGetPTX))
        check(get_size(prog, ctypes.byref(size)), "nvrtcGet(CUBIN|PTX)Size")
        image = ctypes.create_string_buffer(size.value)
        check(get(prog, image), "nvrtcGet(CUBIN|PTX)")
        return image.raw, log
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


class _NvrtcLauncher(_Launcher):
    """NVRTC + CUDA driver API through ctypes, in PyTorch's primary context and current stream."""

    name = "NVRTC"

    def __init__(self, device: torch.device, dims: Dims):
        self.index = device.index if device.index is not None else torch.cuda.current_device()
        self.device, self.dims = torch.device("cuda", self.index), dims
        major, minor = torch.cuda.get_device_capability(self.index)
        self.num_sms = torch.cuda.get_device_properties(self.index).multi_processor_count
        torch.cuda.init()
        cuda = self._cuda = ctypes.CDLL("libcuda.so.1")
        cuda.cuGetErrorString.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        self._check(cuda.cuInit(0), "cuInit")
        dev = ctypes.c_int()
        self._check(cuda.cuDeviceGet(ctypes.byref(dev), self.index), "cuDeviceGet")
        self._ctx = ctypes.c_void_p()
        self._check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(self._ctx), dev), "cuDevicePrimaryCtxRetain")
        previous = self._make_current()
        try:
            self._load(dims, major, minor)
        finally:
            if previous is not None:
                cuda.cuCtxSetCurrent(previous)
        cuda.cuLaunchKernel.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 7 + [ctypes.c_void_p] * 3

    def _load(self, dims: Dims, major: int, minor: int) -> None:
        cuda = self._cuda
        source = _read_source()
        try:   # a CUBIN for this GPU; PTX (JIT-compiled by the driver) if this NVRTC does not know it
            image, _ = nvrtc_compile(source, f"sm_{major}{minor}", _compile_options(dims))
            self.arch = f"sm_{major}{minor}"
        except RuntimeError:
            image, _ = nvrtc_compile(source, f"compute_{major}{minor}", _compile_options(dims))
            self.arch = f"compute_{major}{minor}"
        self._module = ctypes.c_void_p()
        self._check(cuda.cuModuleLoadData(ctypes.byref(self._module), ctypes.c_char_p(image)), "cuModuleLoadData")
        self._functions = {}
        for k in _KERNELS:
            fn = ctypes.c_void_p()
            self._check(cuda.cuModuleGetFunction(ctypes.byref(fn), self._module, k.encode()), f"cuModuleGetFunction {k}")
            self._functions[k] = fn

    def _check(self, res, what):
        if res != 0:
            s = ctypes.c_char_p()
            self._cuda.cuGetErrorString(res, ctypes.byref(s))
            raise RuntimeError(f"{what}: CUDA error {res} {s.value.decode() if s.value else ''}")

    def _make_current(self) -> ctypes.c_void_p | None:
        """Make the device's primary context current; returns the context to restore, if another."""
        cur = ctypes.c_void_p()
        self._cuda.cuCtxGetCurrent(ctypes.byref(cur))
        if cur.value == self._ctx.value:
            return None
        self._check(self._cuda.cuCtxSetCurrent(self._ctx), "cuCtxSetCurrent")
        return cur

    def launch(self, kernel, grid, block, args):
        previous = self._make_current()
        try:
            self._launch(kernel, grid, block, args)
        finally:
            if previous is not None:   # leave PyTorch's notion of the current device alone
                self._cuda.cuCtxSetCurrent(previous)

    def _launch(self, kernel, grid, block, args):
        keep = []
        for a in args:
            if isinstance(a, torch.Tensor):
                keep.append(ctypes.c_void_p(a.data_ptr()))
            elif isinstance(a, bool) or isinstance(a, int):
                keep.append(ctypes.c_int32(a))
            else:
                keep.append(ctypes.c_double(a))
        params = (ctypes.c_void_p * len(keep))(*[ctypes.cast(ctypes.byref(k), ctypes.c_void_p) for k in keep])
        stream = torch.cuda.current_stream(self.index).cuda_stream
        self._check(self._cuda.cuLaunchKernel(self._functions[kernel], int(grid), 1, 1, int(block), 1, 1, 0,
                                              stream, ctypes.cast(params, ctypes.c_void_p), None),
                    f"launch {kernel}")


_KERNELS = ("pv3d_decode_f32", "pv3d_decode_f16", "pv3d_importance", "pv3d_composite")
_LAUNCHERS = {"cupy": _CupyLauncher, "nvrtc": _NvrtcLauncher}
_cache: dict = {}
_lock = threading.Lock()


def _index(device: torch.device) -> int:
    if device.index is not None:
        return device.index
    return torch.cuda.current_device() if device.type == "cuda" and torch.cuda.is_available() else 0


def _launcher(device: torch.device, dims: Dims) -> _Launcher:
    """The compiled module for (device, dims); compiled once; a failure is remembered and re-raised."""
    index = _index(device)
    key = (index, dims)
    with _lock:
        hit = _cache.get(key)
        if hit is None:
            wanted = os.environ.get(ENV_BACKEND, "").strip().lower()
            order = [wanted] if wanted in _LAUNCHERS else list(_LAUNCHERS)
            errors = []
            for name in order:
                t0 = time.perf_counter()
                try:
                    hit = _LAUNCHERS[name](torch.device("cuda", index), dims)
                    hit.compile_seconds = time.perf_counter() - t0
                    break
                except Exception as e:  # noqa: BLE001 - any failure means "try the next, else PyTorch"
                    errors.append(f"{name}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
            if hit is None:
                hit = KernelUnavailable("kernels did not compile (" + "; ".join(errors) + ")")
            _cache[key] = hit
    if isinstance(hit, Exception):
        raise hit
    return hit


def _any_launcher(device: torch.device) -> _Launcher:
    """A module on ``device`` for the ops that do not depend on the model size."""
    index = _index(device)
    for (i, _), v in list(_cache.items()):
        if i == index and not isinstance(v, Exception):
            return v
    return _launcher(device, Dims())


# ---------------------------------------------------------------------------------------------- devices
@functools.lru_cache(maxsize=1)
def driver_version() -> str | None:
    """The NVIDIA driver's version ("580.159.03" from /proc/driver/nvidia/version), else the CUDA driver
    API's ("CUDA 13.0" from cuDriverGetVersion), else None (no driver)."""
    try:
        with open("/proc/driver/nvidia/version") as f:
            m = re.search(r"Kernel Module(?: for \S+)?\s+([0-9][0-9.]+)", f.read())
            if m:
                return m.group(1)
    except OSError:
        pass
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        v = ctypes.c_int()
        if lib.cuDriverGetVersion(ctypes.byref(v)) == 0 and v.value:
            return f"CUDA {v.value // 1000}.{v.value % 1000 // 10}"
    except OSError:
        pass
    return None


def device_identity(device: torch.device) -> str:
    """A GPU's model and UUID (the self-check's verdicts are per device)."""
    if device.type != "cuda":
        return str(device)
    props = torch.cuda.get_device_properties(_index(device))
    uuid = getattr(props, "uuid", None)
    return f"{props.name} ({uuid})" if uuid else f"{props.name} (cuda:{_index(device)})"


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
            launcher = _launcher(tensors[0].device, dims) if dims is not None else _any_launcher(tensors[0].device)
        except KernelUnavailable as e:
            problem = str(e)
    if problem is None:
        problem = _rejection(check_cuda(launcher))
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
        problem = _rejection(check_cpu(lib))
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
        problem = _rejection(check_cpu(lib))
        if problem is not None:
            return f"PyTorch ({problem})"
        return cpu_kernels.status_line(lib)
    if device.type != "cuda":
        return f"PyTorch (no kernels for {device.type} tensors)"
    try:
        launcher = _launcher(device, dims) if dims is not None else _any_launcher(device)
    except KernelUnavailable as e:
        return f"PyTorch (CUDA kernels unavailable: {e})"
    problem = _rejection(check_cuda(launcher))
    if problem is not None:
        return f"PyTorch ({problem})"
    half = ", fp16 planes" if half_planes_enabled() else ""
    return f"CUDA kernels ({launcher.label()}{half})"


# ---------------------------------------------------------------------------------------------- self-check
class _CudaCheck:
    """The CUDA kernels' ops for :mod:`kernel_check`."""

    def __init__(self, launcher: _Launcher):
        self.launcher, self.device = launcher, launcher.device

    def render(self, planes, decoder, origins, dirs, options, half):
        return {"": render_rays_kernels(self.launcher, planes, decoder, origins, dirs, options, True, half)}

    def query(self, planes, decoder, points, box_warp, half):
        return query_kernels(self.launcher, planes, decoder, points, box_warp, half)

    def march(self, colors, densities, depths):
        return march_kernels(self.launcher, colors, densities, depths)

    def importance(self, depths, weights, n):
        return importance_depths_kernels(self.launcher, depths, weights, n, True)


class _CpuCheck:
    """The CPU kernels' ops for :mod:`kernel_check`; the render is checked with both first-layer paths
    (projected planes and per-point features), whichever one a model's plane size picks."""

    device = torch.device("cpu")

    def __init__(self, lib):
        self.lib = lib
        self.dims = Dims(*lib.dims)

    def _params(self, decoder):
        return pack_decoder(decoder, self.dims, torch.device("cpu"))

    def render(self, planes, decoder, origins, dirs, options, half):
        cl, params = prepare_planes(planes, False), self._params(decoder)
        return {f"({name})": cpu_kernels.render_rays(self.lib, cl, params, origins, dirs, options, True, projection=proj)
                for name, proj in (("projected planes", True), ("per-point features", False))}

    def query(self, planes, decoder, points, box_warp, half):
        return cpu_kernels.query(self.lib, prepare_planes(planes, False), self._params(decoder), points, box_warp)

    def march(self, colors, densities, depths):
        return cpu_kernels.march(self.lib, colors, densities, depths)

    def importance(self, depths, weights, n):
        return cpu_kernels.importance_depths(self.lib, depths, weights, n, True)


@functools.lru_cache(maxsize=8)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def _source_digest(path: Path) -> str:
    try:
        st = path.stat()
        return _digest(str(path), st.st_mtime_ns, st.st_size)
    except OSError:
        return "?"


def _cuda_key(launcher: _Launcher, half: bool) -> str:
    d = launcher.dims or Dims()
    return "|".join(["cuda", launcher.identity(), f"{d.cin}x{d.hidden}x{d.cout}", "fp16" if half else "fp32",
                     f"source {_source_digest(kernel_source_path())}", f"torch {torch.__version__}",
                     f"check {kernel_check.CHECK_VERSION}"])


def _cpu_key(lib) -> str:
    # the library's file name encodes the source, flags, compiler, CPU and sizes
    return "|".join(["cpu", lib.path.name, f"torch {torch.__version__}", f"check {kernel_check.CHECK_VERSION}"])


def _memo(obj, variant, fresh: bool, get) -> kernel_check.Verdict:
    """The verdict kept on the module object itself, so that each op pays an attribute lookup, not a key
    (valid until :func:`kernel_check.forget`)."""
    memo = obj.__dict__.setdefault("_verdicts", {})
    hit = memo.get(variant)
    if hit is not None and not fresh and hit[0] == kernel_check.generation():
        return hit[1]
    v = get()
    memo[variant] = (kernel_check.generation(), v)
    return v


def check_cuda(launcher: _Launcher, fresh: bool = False) -> kernel_check.Verdict:
    """The self-check verdict of a compiled CUDA module (run at its first use on this device, driver and
    model size; remembered: see :mod:`kernel_check`). ``fresh``: check again now."""
    half = half_planes_enabled()

    def get():
        where = f"CUDA ({torch.cuda.get_device_name(launcher.device)}, driver {driver_version() or '?'})" \
            if launcher.device.type == "cuda" else f"CUDA ({launcher.label()})"
        return kernel_check.verdict(_cuda_key(launcher, half), _CudaCheck(launcher), launcher.dims or Dims(), half,
                                    where, fresh)
    return _memo(launcher, half, fresh, get)


def check_cpu(lib, fresh: bool = False) -> kernel_check.Verdict:
    """The self-check verdict of a built CPU kernel library (as :func:`check_cuda`)."""
    return _memo(lib, False, fresh, lambda: kernel_check.verdict(_cpu_key(lib), _CpuCheck(lib), lib.dims, False,
                                                                 f"CPU ({lib.label()})", fresh))


def _rejection(v: kernel_check.Verdict) -> str | None:
    if v.ok:
        return None
    return f"the {v.where or 'fused'} kernels failed their self-check: {v.reason}"


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
            launcher = _launcher(device, dims)
            out["compile_seconds"] = launcher.compile_seconds
            out["label"] = f"CUDA kernels ({launcher.label()})"
            v = check_cuda(launcher, fresh)
    except (KernelUnavailable, cpu_kernels.CpuKernelsUnavailable) as e:
        out.update(status="unavailable", reason=str(e))
        return out
    out.update(status="ok" if v.ok else "rejected", reason="" if v.ok else _rejection(v),
               max_error=v.max_error if math.isfinite(v.max_error) else None,
               worst=v.worst, check_seconds=v.seconds, verdict_from=v.origin)
    return out


# ---------------------------------------------------------------------------------------------- inputs
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


def pack_decoder(decoder, dims: Dims, device: torch.device) -> torch.Tensor:
    """The decoder's gain-applied weights in the kernel's layout (:meth:`OSGDecoder.packed_parameters`)."""
    packed = decoder.packed_parameters(dims.out_pad, device)
    assert packed.numel() == dims.n_params
    return packed


_planes_cache: dict = {}


def prepare_planes(planes: torch.Tensor, half: bool) -> torch.Tensor:
    """Tri-planes (N, 3, C, H, W) -> channels-last (N, 3, H, W, C), float32 or float16, contiguous.
    The copy of the most recent tri-planes is kept while they are unchanged (cached planes re-rendered
    from new cameras convert once)."""
    key = (planes._version, planes.data_ptr(), tuple(planes.shape), planes.dtype, half)
    hit = _planes_cache.get("last")
    if hit is not None and hit[0]() is planes and hit[1] == key:
        return hit[2]
    with torch.no_grad():
        out = planes.detach().permute(0, 1, 3, 4, 2).to(torch.float16 if half else torch.float32).contiguous()
        if out.data_ptr() % 16:   # a view at an odd offset: the kernels read 16-byte vectors
            out = out.clone()
    try:
        _planes_cache["last"] = (weakref.ref(planes), key, out)
    except TypeError:  # pragma: no cover - tensors support weak references
        pass
    return out


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32).contiguous()


# ---------------------------------------------------------------------------------------------- stages
_BLOCK = 128


def _grid(n: int, per_block: int, cap: int) -> int:
    return max(1, min((n + per_block - 1) // per_block, cap))


def _decode(launcher, planes_cl, dims: Dims, params, origins, dirs, depths, depth_ray_stride: int,
            samples: int, rays_per_batch: int, n_rays: int, use_rays: bool, coord_scale: float):
    """Kernel (a). Returns sigma (n_rays * samples,), features (n_rays * samples, cout)."""
    dev = origins.device
    n_pts = n_rays * samples
    sigma = torch.empty(n_pts, dtype=torch.float32, device=dev)
    feat = torch.empty(n_pts, dims.cout, dtype=torch.float32, device=dev)
    if n_pts == 0:
        return sigma, feat
    kernel = "pv3d_decode_f16" if planes_cl.dtype == torch.float16 else "pv3d_decode_f32"
    h, w = planes_cl.shape[2], planes_cl.shape[3]
    launcher.launch(kernel, _grid(n_pts, _BLOCK, launcher.num_sms * 8), _BLOCK,
                    [planes_cl, h, w, params, origins, dirs, depths, depth_ray_stride, samples, rays_per_batch,
                     n_rays, int(use_rays), float(coord_scale), sigma, feat])
    return sigma, feat


def _importance(launcher, depths_c, c_ray_stride: int, values, values_are_weights: bool, u, u_ray_stride: int,
                n_rays: int, n_c: int, n_f: int, sort_output: bool):
    """Kernel (c). Returns fine depths (n_rays, n_f)."""
    out = torch.empty(n_rays, n_f, dtype=torch.float32, device=values.device)
    if n_rays and n_f:
        launcher.launch("pv3d_importance", _grid(n_rays, _BLOCK, 1 << 30), _BLOCK,
                        [depths_c, c_ray_stride, values, int(values_are_weights), u, u_ray_stride, n_rays, n_c, n_f,
                         int(sort_output), out])
    return out


def _composite(launcher, list_a, list_b, bounds, n_rays: int, n_channels: int, want_weights: bool):
    """Kernel (b). list_a = (depths, ray_stride, sigma, feat, n); list_b = (depths, sigma, feat, n) or None.
    Returns rgb (n_rays, C) in [-1, 1], depth (n_rays,), weight sum (n_rays,), weights or None."""
    dev = bounds.device
    da, a_stride, sa, fa, n_a = list_a
    if list_b is None:
        db, sb, fb, n_b = da, sa, fa, 0
    else:
        db, sb, fb, n_b = list_b
    rgb = torch.empty(n_rays, n_channels, dtype=torch.float32, device=dev)
    depth = torch.empty(n_rays, dtype=torch.float32, device=dev)
    wsum = torch.empty(n_rays, dtype=torch.float32, device=dev)
    weights = torch.empty(n_rays, max(n_a + n_b - 1, 0) if want_weights else 1, dtype=torch.float32, device=dev)
    if n_rays:
        launcher.launch("pv3d_composite", _grid(n_rays, _BLOCK // 32, launcher.num_sms * 64), _BLOCK,
                        [da, a_stride, sa, fa, n_a, db, sb, fb, n_b, bounds, n_rays, n_channels, rgb, depth, wsum,
                         weights, int(want_weights)])
    return rgb, depth, wsum, (weights if want_weights else None)


def _bounds(depths: torch.Tensor) -> torch.Tensor:
    """[min, max] of all depths, as the reference's clamp uses."""
    return torch.stack(torch.aminmax(depths)).contiguous()


# ---------------------------------------------------------------------------------------------- render
def render_rays_kernels(launcher, planes, decoder, origins, dirs, options: dict, deterministic: bool,
                        half_planes: bool = False, mark: Callable[[str], None] | None = None):
    """The kernel pipeline of :func:`render_rays_fast`, on a given launcher (no selection).

    ``mark(stage)`` is called after each stage ("prepare", "coarse", "importance", "fine", "composite")
    for the benchmarks' timers.
    """
    mark = mark or (lambda _s: None)
    b, r, _ = origins.shape
    dev = origins.device
    n_rays = b * r
    dims = Dims(*decoder.kernel_layout())
    params = pack_decoder(decoder, dims, dev)
    planes_cl = prepare_planes(planes, half_planes)
    o = _f32(origins).reshape(n_rays, 3)
    d = _f32(dirs).reshape(n_rays, 3)
    scale = 2.0 / options["box_warp"]
    n_c = int(options["depth_resolution"])
    n_f = int(options.get("depth_resolution_importance", 0) or 0)
    if deterministic:   # the reference's values exactly (same linspace), shared by all rays
        depths_c = torch.linspace(options["ray_start"], options["ray_end"], n_c, device=dev)
        c_stride = 0
    else:               # the reference's call, so that the same random numbers come out
        depths_c = volume.coarse_depths(b, r, options["ray_start"], options["ray_end"], n_c, False, dev)
        depths_c = depths_c.reshape(n_rays, n_c).contiguous()
        c_stride = n_c
    mark("prepare")
    sigma_c, feat_c = _decode(launcher, planes_cl, dims, params, o, d, depths_c, c_stride, n_c, r, n_rays, True, scale)
    mark("coarse")
    bounds = _bounds(depths_c)
    if n_f > 0:
        if deterministic:
            u, u_stride = torch.linspace(0, 1, n_f, device=dev), 0
        else:
            u, u_stride = torch.rand(n_rays, n_f, device=dev), n_f
        depths_f = _importance(launcher, depths_c, c_stride, sigma_c, False, u, u_stride, n_rays, n_c, n_f, True)
        mark("importance")
        sigma_f, feat_f = _decode(launcher, planes_cl, dims, params, o, d, depths_f, n_f, n_f, r, n_rays, True, scale)
        mark("fine")
        list_b = (depths_f, sigma_f, feat_f, n_f)
    else:
        list_b = None
    rgb, depth, wsum, _ = _composite(launcher, (depths_c, c_stride, sigma_c, feat_c, n_c), list_b, bounds, n_rays,
                                     dims.cout, False)
    mark("composite")
    return rgb.reshape(b, r, dims.cout), depth.reshape(b, r, 1), wsum.reshape(b, r, 1)


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


# ---------------------------------------------------------------------------------------------- single ops
def query_kernels(launcher, planes, decoder, coords, box_warp: float, half_planes: bool = False) -> dict:
    n, m, _ = coords.shape
    dims = Dims(*decoder.kernel_layout())
    params = pack_decoder(decoder, dims, coords.device)
    pts = _f32(coords).reshape(n * m, 3)
    sigma, feat = _decode(launcher, prepare_planes(planes, half_planes), dims, params, pts, pts, pts, 0, 1, m,
                          n * m, False, 2.0 / box_warp)
    return {"rgb": feat.reshape(n, m, dims.cout), "sigma": sigma.reshape(n, m, 1)}


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


def march_kernels(launcher, colors, densities, depths):
    b, r, s, c = colors.shape
    n_rays = b * r
    dz = _f32(depths).reshape(n_rays, s)
    rgb, depth, _, weights = _composite(launcher, (dz, s, _f32(densities).reshape(n_rays, s),
                                                   _f32(colors).reshape(n_rays, s, c), s),
                                        None, _bounds(dz), n_rays, c, True)
    return rgb.reshape(b, r, c), depth.reshape(b, r, 1), weights.reshape(b, r, s - 1, 1)


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


def importance_depths_kernels(launcher, depths_coarse, weights, n: int, deterministic: bool):
    b, r, s, _ = depths_coarse.shape
    n_rays = b * r
    if deterministic:
        u, u_stride = torch.linspace(0, 1, n, device=depths_coarse.device), 0
    else:
        u, u_stride = torch.rand(n_rays, n, device=depths_coarse.device), n
    out = _importance(launcher, _f32(depths_coarse).reshape(n_rays, s), s, _f32(weights).reshape(n_rays, s - 1), True,
                      u, u_stride, n_rays, s, n, False)
    return out.reshape(b, r, n, 1)


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
