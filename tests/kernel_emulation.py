"""Run cuda/triplane_render.cu on the CPU: build it with g++ and tests/cuda_emulation/host_shim.h, and
offer a launcher with the interface of pv3d_core.render.cuda_launch's launchers, so that the very
pipeline code that drives the GPU (cuda_backend.render_rays_kernels etc.) runs on CPU tensors.

This checks the kernels' arithmetic, indexing, bounds checks, grid-stride loops and the Python
orchestration; it does not check what only a GPU shows (NVRTC/driver launches, memory coalescing,
speed, the half-conversion PTX instruction, which the shim replaces by a software conversion).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from pv3d_core.render import cuda_launch, cuda_ops

HERE = Path(__file__).resolve().parent / "cuda_emulation"
_libs: dict = {}


def compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


def build(dims: cuda_launch.Dims = cuda_launch.Dims(), source: Path | None = None) -> ctypes.CDLL:
    """Compile (cached by content) and load the emulated kernels for ``dims``, from ``source`` (default: the
    kernel source cuda_ops compiles)."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++) to build the kernel emulation")
    src = Path(source) if source is not None else cuda_ops.kernel_source_path()
    files = [src, HERE / "host_shim.h", HERE / "harness.cpp"]
    flags = ["-std=c++20", "-O1", "-ffp-contract=off", "-fPIC", "-shared", "-pthread", "-Wall",
             "-Wno-unknown-pragmas", f"-I{HERE}", f'-DPV3D_KERNEL_SOURCE="{src}"', *dims.defines()]
    digest = hashlib.sha256("\0".join([*(f.read_text() for f in files), *flags]).encode()).hexdigest()[:16]
    if digest in _libs:
        return _libs[digest]
    out_dir = Path(tempfile.gettempdir()) / "pv3d-kernel-emulation"
    out_dir.mkdir(exist_ok=True)
    lib_path = out_dir / f"emu-{digest}.so"
    if not lib_path.exists():
        tmp = lib_path.with_suffix(f".{os.getpid()}.tmp")
        proc = subprocess.run([cxx, *flags, str(HERE / "harness.cpp"), "-o", str(tmp)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"building the kernel emulation failed:\n{proc.stderr[-4000:]}")
        os.replace(tmp, lib_path)
    lib = ctypes.CDLL(str(lib_path))
    _libs[digest] = lib
    return lib


class EmulatedLauncher(cuda_launch.Launcher):
    """cuda_ops launcher interface over the CPU build; arguments converted as the CUDA launchers do
    (tensor -> pointer, int -> int32, float -> double)."""

    name = "CPU emulation"
    device = torch.device("cpu")

    def __init__(self, dims: cuda_launch.Dims = cuda_launch.Dims(), num_sms: int = 2, source: Path | None = None):
        self.lib = build(dims, source)
        self.dims = dims
        self.num_sms = num_sms
        self.source = source
        self.launches: list[tuple[str, int, int]] = []

    def identity(self) -> str:
        """Stands in for (GPU, driver): the build (another source is another "device")."""
        return f"{self.name} of {self.source or 'the shipped source'}"

    def launch(self, kernel, grid, block, args):
        conv = [ctypes.c_uint(int(grid)), ctypes.c_uint(int(block))]
        for a in args:
            if isinstance(a, torch.Tensor):
                assert a.device.type == "cpu" and a.is_contiguous(), (kernel, a.shape, a.stride())
                conv.append(ctypes.c_void_p(a.data_ptr()))
            elif isinstance(a, (bool, int)):
                conv.append(ctypes.c_int32(a))
            else:
                conv.append(ctypes.c_double(a))
        self.launches.append((kernel, int(grid), int(block)))
        getattr(self.lib, "emu_" + kernel)(*conv)
