"""Compiling the CUDA kernels of ``cuda/triplane_render.cu`` and launching them on a GPU.

The kernels are compiled at their first use on a device, at run time, with NVRTC through one of two
launchers, tried in order (``PV3D_KERNEL_BACKEND`` = ``cupy`` | ``nvrtc`` picks one):

- :class:`CupyLauncher`: CuPy's ``RawModule`` (the ``gpu`` extra; CuPy also caches the binary on disk);
- :class:`NvrtcLauncher`: libnvrtc and the CUDA driver API through ctypes (no extra package: CUDA builds
  of PyTorch ship libnvrtc).

:func:`launcher` keeps one compiled module per device and model size (:class:`Dims`) and remembers a
failure. Kernels run on PyTorch's current stream. What runs *on* a launcher is :mod:`cuda_backend`;
which backend runs an op is :mod:`cuda_ops`.
"""
from __future__ import annotations

import ctypes
import functools
import glob
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..errors import KernelUnavailable
from ..paths import kernel_file

__all__ = [
    "KERNEL_FILE", "ENV_BACKEND", "ENV_SOURCE", "MAX_CHANNELS", "KERNELS", "LAUNCHERS", "Dims", "Launcher",
    "CupyLauncher", "NvrtcLauncher", "kernel_source_path", "load_nvrtc", "nvrtc_compile", "launcher",
    "any_launcher", "driver_version", "device_identity",
]

ENV_BACKEND = "PV3D_KERNEL_BACKEND"
ENV_SOURCE = "PV3D_CUDA_DIR"
MAX_CHANNELS = 128         # 32 lanes x PV3D_MAX_CPL
KERNEL_FILE = "triplane_render.cu"


def kernel_source_path() -> Path:
    """The kernel source: ``$PV3D_CUDA_DIR``'s copy, else the one inside the installed package
    (``pv3d_core/kernels/``, read with importlib.resources), else the source tree's ``cuda/``."""
    return kernel_file(KERNEL_FILE)


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


class Launcher:
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


def kernel_args(args: Sequence, pointer, int32, real) -> list:
    """The kernels' arguments as a launcher passes them: a tensor as ``pointer(data_ptr)``, an int or a
    bool as ``int32``, any other number as ``real`` (the kernels take double)."""
    return [pointer(a.data_ptr()) if isinstance(a, torch.Tensor) else int32(a) if isinstance(a, (bool, int))
            else real(a) for a in args]


def _read_source() -> str:
    path = kernel_source_path()
    if not path.is_file():
        raise FileNotFoundError(f"kernel source not found at {path} (set ${ENV_SOURCE})")
    return path.read_text()


def _compile_options(dims: Dims) -> list[str]:
    return dims.defines()


class CupyLauncher(Launcher):
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
            self._functions = {k: self._module.get_function(k) for k in KERNELS}
        self._streams: dict[int, object] = {}

    def launch(self, kernel, grid, block, args):
        np = self._np
        conv = kernel_args(args, np.uint64, np.int32, np.float64)
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


class NvrtcLauncher(Launcher):
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
        for k in KERNELS:
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
        keep = kernel_args(args, ctypes.c_void_p, ctypes.c_int32, ctypes.c_double)
        params = (ctypes.c_void_p * len(keep))(*[ctypes.cast(ctypes.byref(k), ctypes.c_void_p) for k in keep])
        stream = torch.cuda.current_stream(self.index).cuda_stream
        self._check(self._cuda.cuLaunchKernel(self._functions[kernel], int(grid), 1, 1, int(block), 1, 1, 0,
                                              stream, ctypes.cast(params, ctypes.c_void_p), None),
                    f"launch {kernel}")


KERNELS = ("pv3d_decode_f32", "pv3d_decode_f16", "pv3d_importance", "pv3d_composite")
LAUNCHERS = {"cupy": CupyLauncher, "nvrtc": NvrtcLauncher}
_cache: dict = {}
_lock = threading.Lock()


def _index(device: torch.device) -> int:
    if device.index is not None:
        return device.index
    return torch.cuda.current_device() if device.type == "cuda" and torch.cuda.is_available() else 0


def launcher(device: torch.device, dims: Dims) -> Launcher:
    """The compiled module for (device, dims); compiled once; a failure is remembered and re-raised."""
    index = _index(device)
    key = (index, dims)
    with _lock:
        hit = _cache.get(key)
        if hit is None:
            wanted = os.environ.get(ENV_BACKEND, "").strip().lower()
            order = [wanted] if wanted in LAUNCHERS else list(LAUNCHERS)
            errors = []
            for name in order:
                t0 = time.perf_counter()
                try:
                    hit = LAUNCHERS[name](torch.device("cuda", index), dims)
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


def any_launcher(device: torch.device) -> Launcher:
    """A module on ``device`` for the ops that do not depend on the model size."""
    index = _index(device)
    for (i, _), v in list(_cache.items()):
        if i == index and not isinstance(v, Exception):
            return v
    return launcher(device, Dims())


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
