"""The self-check's verdicts for the two compiled backends (see :mod:`kernel_check`).

Each backend is wrapped in the four ops :mod:`kernel_check` runs against the PyTorch reference; the
verdict's key names what it depends on (the GPU, its driver and the kernel source, or the CPU library's
build, and the model size), and each compiled module keeps its verdict on itself, so that an op pays an
attribute lookup, not a key. :mod:`cuda_ops` asks for them before it lets a module render.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import torch

from . import cpu_kernels, kernel_check
from .cuda_backend import (importance_depths_kernels, march_kernels, pack_decoder, prepare_planes, query_kernels,
                           render_rays_kernels)
from .cuda_launch import Dims, Launcher, driver_version, kernel_source_path

__all__ = ["cuda_verdict", "check_cpu", "cuda_key", "rejection"]


class _CudaCheck:
    """The CUDA kernels' ops for :mod:`kernel_check`."""

    def __init__(self, launcher: Launcher):
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


def cuda_key(launcher: Launcher, half: bool) -> str:
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


def cuda_verdict(launcher: Launcher, half: bool, fresh: bool = False) -> kernel_check.Verdict:
    """The self-check verdict of a compiled CUDA module reading float16 (``half``) or float32 tri-planes
    (run at its first use on this device, driver and model size; remembered). ``fresh``: check again now."""
    def get():
        where = f"CUDA ({torch.cuda.get_device_name(launcher.device)}, driver {driver_version() or '?'})" \
            if launcher.device.type == "cuda" else f"CUDA ({launcher.label()})"
        return kernel_check.verdict(cuda_key(launcher, half), _CudaCheck(launcher), launcher.dims or Dims(), half,
                                    where, fresh)
    return _memo(launcher, half, fresh, get)


def check_cpu(lib, fresh: bool = False) -> kernel_check.Verdict:
    """The self-check verdict of a built CPU kernel library (as :func:`cuda_verdict`)."""
    return _memo(lib, False, fresh, lambda: kernel_check.verdict(_cpu_key(lib), _CpuCheck(lib), lib.dims, False,
                                                                 f"CPU ({lib.label()})", fresh))


def rejection(v: kernel_check.Verdict) -> str | None:
    if v.ok:
        return None
    return f"the {v.where or 'fused'} kernels failed their self-check: {v.reason}"
