"""The fused CPU backend of the tri-plane renderer: ``cuda/triplane_render_cpu.cpp`` built at first use.

The CUDA kernels' sibling for CPU tensors (selection lives in :mod:`cuda_ops`, the public wrapper of
both). One pass per ray samples the three planes, runs the decoder, composites, places the importance
samples and composites again, in per-thread scratch: no (rays x samples x channels) tensor is made.

Build: :func:`pv3d_core.native.build` compiles the C++ source at the first render (``-O3 -march=native
-fopenmp``) into a shared library loaded with ctypes and cached on disk (keyed by the source, flags,
compiler and CPU); a compile logs one warning-level line so that the pause is explained. Without a
compiler, or when the build fails, the wrapper runs the PyTorch reference and :func:`describe` says why.
Each call uses ``torch.get_num_threads()`` threads, with dynamic scheduling (a busy
core delays only its last chunk, not half the frame).

Feature skipping (:func:`set_skip_budget`): the decoder's output layer (2/3 of the work) is skipped for
samples whose compositing weight is negligible -- empty space in front of the head and everything
behind it -- while the sum of the skipped weights on a ray stays within the budget; the features lie
in [-0.001, 1.001], so the ray's feature error is at most 2.004 x budget. Densities, depth and opacity
are always exact.
"""
from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path

import torch

from .. import native
from ..paths import kernel_file
from . import volume

__all__ = ["CpuKernelsUnavailable", "SOURCE_FILE", "MAX_SAMPLES", "source_path",
           "library", "loaded_dims", "build_state", "describe", "set_skip_budget", "skip_budget", "render_rays", "query",
           "march", "importance_depths", "stats"]

logger = logging.getLogger(__name__)

SOURCE_FILE = "triplane_render_cpu.cpp"
MAX_SAMPLES = 1024                 # per list (coarse or fine): MAX_SAMPLES in the source
DEFAULT_SKIP_BUDGET = 1e-6         # feature error <= 2e-6 per ray, below the float summation-order noise


class CpuKernelsUnavailable(RuntimeError):
    """The CPU kernels cannot be built or loaded here (the message says why)."""


# ---------------------------------------------------------------------------------------------- build
def source_path() -> Path:
    return kernel_file(SOURCE_FILE)


class Library:
    """The built kernels for one decoder size (cin, hidden, cout)."""

    def __init__(self, built: native.Built, dims: tuple[int, int, int]):
        self.path, self.dims, self.flags = built.path, dims, built.flags
        self.compiler_version, self.build_seconds = built.compiler_version, built.seconds  # 0: from the cache
        self.built = built
        lib = built.cdll
        p, i32, i64, f64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_double
        lib.pv3d_cpu_dims.argtypes = [ctypes.POINTER(i32)] * 3
        lib.pv3d_cpu_render.argtypes = [p, p, i32, i32, p, p, p, i64, i64, p, i32, i32, p, i32, i32, f64, p, f64, p, p,
                                        p, p, i32]
        lib.pv3d_cpu_query.argtypes = [p, i32, i32, p, p, i64, i64, f64, p, p, i32, i32]
        lib.pv3d_cpu_march.argtypes = [p, p, p, i64, i32, i32, p, p, p, p, i32]
        lib.pv3d_cpu_importance.argtypes = [p, p, i64, i32, p, i32, i32, p, i32]
        for fn in (lib.pv3d_cpu_dims, lib.pv3d_cpu_render, lib.pv3d_cpu_query, lib.pv3d_cpu_march,
                   lib.pv3d_cpu_importance):
            fn.restype = i32
        got = [i32(), i32(), i32()]
        self.n_params = lib.pv3d_cpu_dims(*[ctypes.byref(g) for g in got])
        if tuple(g.value for g in got) != tuple(dims):
            raise CpuKernelsUnavailable(f"{self.path} was built for {tuple(g.value for g in got)}, not {dims}")
        self.lib = lib
        self.openmp = built.openmp
        self.native = built.native

    def label(self) -> str:
        return self.built.label()


_libs: dict = {}
_lock = threading.Lock()
_building: set = set()


def _build(dims: tuple[int, int, int]) -> Library:
    defines = [f"-DPV3D_CIN={dims[0]}", f"-DPV3D_HIDDEN={dims[1]}", f"-DPV3D_COUT={dims[2]}"]
    try:
        built = native.build(SOURCE_FILE, f"triplane_cpu-{dims[0]}-{dims[1]}-{dims[2]}", defines,
                             what="CPU volume renderer")
    except native.NativeUnavailable as e:
        raise CpuKernelsUnavailable(str(e)) from None
    return Library(built, dims)


def library(dims, wait: bool = True) -> Library:
    """The kernels for decoder sizes ``dims`` (cin, hidden, cout), built or loaded once per process;
    a failure is remembered and re-raised as :class:`CpuKernelsUnavailable`.

    ``wait=False``: while another thread is building, raise :class:`CpuKernelsUnavailable` ("compiling")
    at once instead of waiting for it (not remembered: the next call uses the finished build). The
    viewer builds in a warm-up thread and its first frames render with PyTorch meanwhile."""
    key = tuple(int(x) for x in dims)
    hit = _libs.get(key)
    if hit is None:
        if not _lock.acquire(blocking=wait):
            raise CpuKernelsUnavailable("CPU kernels compiling in another thread (first use on this machine)")
        try:
            hit = _libs.get(key)
            if hit is None:
                _building.add(key)
                try:
                    hit = _build(key)
                except CpuKernelsUnavailable as e:
                    hit = e
                except Exception as e:  # noqa: BLE001 - anything else also means "use PyTorch", with the reason
                    hit = CpuKernelsUnavailable(f"{type(e).__name__}: {e}")
                finally:
                    _building.discard(key)
                _libs[key] = hit
        finally:
            _lock.release()
    if isinstance(hit, Exception):
        raise hit
    return hit


def loaded_dims() -> list[tuple[int, int, int]]:
    """The decoder sizes whose library is loaded in this process."""
    return [k for k, v in list(_libs.items()) if isinstance(v, Library)]


def build_state() -> str:
    """``"compiling"`` while a build runs, ``"ready"`` once one library is loaded, ``"failed: why"`` if
    every attempt failed, else ``"not built"`` (no render on the CPU yet). Never blocks."""
    if _building:
        return "compiling"
    libs = list(_libs.values())
    if any(isinstance(v, Library) for v in libs):
        return "ready"
    if libs:
        return f"failed: {libs[-1]}"
    return "not built"


def describe(dims=(32, 64, 32)) -> str:
    """A status-bar line: ``"CPU kernels (g++ 12.2.0, -march=native, OpenMP; 2 threads)"`` or
    ``"PyTorch (<why the kernels cannot run>)"``. Builds the kernels for ``dims`` if needed, unless a
    build is running (then says so without waiting)."""
    if _building:
        return "PyTorch (CPU kernels compiling)"
    try:
        lib = library(dims)
    except CpuKernelsUnavailable as e:
        return f"PyTorch ({e})"
    return status_line(lib)


def status_line(lib) -> str:
    """"CPU kernels (<compiler and flags>; N threads)", N the calling thread's own count."""
    n = torch.get_num_threads()
    return f"CPU kernels ({lib.label()}; {n} thread{'' if n == 1 else 's'})"


# ---------------------------------------------------------------------------------------------- options
_skip_budget = DEFAULT_SKIP_BUDGET
_stats = {"skipped": 0, "samples": 0}


def set_skip_budget(budget: float | None) -> None:
    """Per-ray budget of the feature skipping (None: the default, 0: skip only exactly-zero weights)."""
    global _skip_budget
    if budget is not None and not budget >= 0:
        raise ValueError("the skip budget must be >= 0")
    _skip_budget = DEFAULT_SKIP_BUDGET if budget is None else float(budget)


def skip_budget() -> float:
    return _skip_budget


def stats(reset: bool = False) -> dict:
    """Feature decodes skipped / samples, summed over renders since the last reset."""
    out = dict(_stats)
    if reset:
        _stats.update(skipped=0, samples=0)
    return out


# ---------------------------------------------------------------------------------------------- ops
def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32).contiguous()


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise ValueError(f"CPU kernel {what} refused its arguments (code {rc})")


# Projected planes are used while they stay this small: measured side by side (1 thread), they made the
# tiny preset's render 1.4x faster (3 MB) and the released config's 1.15x slower (50 MB: cache misses).
PROJECTION_MAX_BYTES = 16 << 20
_project: bool | None = None
_proj_cache: dict = {}


def set_projection(enabled: bool | None) -> None:
    """Render from projected tri-planes (True), sample the planes and run the first layer per point
    (False), or choose by size (None, the default: projected planes up to PROJECTION_MAX_BYTES)."""
    global _project
    _project = None if enabled is None else bool(enabled)


def _planes_key(planes_cl: torch.Tensor, params: torch.Tensor) -> tuple:
    return (planes_cl.data_ptr(), planes_cl._version, tuple(planes_cl.shape), params.data_ptr(), params._version)


def _use_projection(planes_cl: torch.Tensor, dims) -> bool:
    """The default choice, by the planes' size alone. The two ways round differ in the last bits (about
    1e-6), so the choice must not depend on what was rendered before: choosing by history (project only
    at a set of planes' second render; it seemed to save a scrub 1.8 ms of 35, and 0.06 ms in a repeat) made a frame's pixels depend on
    whether the same planes had been rendered already, and a live preview and the render after it differ."""
    if _project is not None:
        return _project
    return planes_cl.numel() // dims[0] * dims[1] * 4 <= PROJECTION_MAX_BYTES


def project_planes(planes_cl: torch.Tensor, params: torch.Tensor, dims) -> torch.Tensor:
    """Channels-last planes (N, 3, H, W, C) -> (N, 3, H, W, hidden) = planes . W1^T / 3: bilinear sampling
    and the decoder's first layer are both linear, so sampling these gives the first layer's output (less
    its bias) for the mean of the three planes. One matrix product per set of planes (kept for the latest
    planes and decoder), then a ray sample costs 3 x 4 taps of ``hidden`` channels instead of the taps
    plus a C x hidden product."""
    key = _planes_key(planes_cl, params)
    hit = _proj_cache.get("last")
    if hit is not None and hit[0] == key:
        return hit[1]
    cin, hidden, _ = dims
    w1 = params[: hidden * cin].reshape(hidden, cin)
    with torch.no_grad():
        proj = torch.matmul(planes_cl, w1.t() * (1.0 / 3.0)).contiguous()
    # the tensors in the key stay alive with the cache entry (so their addresses are not reused)
    _proj_cache["last"] = (key, proj, planes_cl, params)
    return proj


def render_rays(lib: Library, planes_cl: torch.Tensor, params: torch.Tensor, origins, dirs, options: dict,
                deterministic: bool, projection: bool | None = None):
    """:func:`volume.render_rays` on channels-last planes (N, 3, H, W, C) and packed decoder ``params``.

    Random sampling draws the reference's random numbers with the same calls in the same order.
    ``projection``: render from projected planes (True) or not (False); None: :func:`set_projection`'s choice.
    Returns features (N, R, C) in [-1, 1], depth (N, R, 1), accumulated weight (N, R, 1).
    """
    b, r, _ = origins.shape
    n_rays = b * r
    cout = lib.dims[2]
    o = _f32(origins).reshape(n_rays, 3)
    d = _f32(dirs).reshape(n_rays, 3)
    n_c = int(options["depth_resolution"])
    n_f = int(options.get("depth_resolution_importance", 0) or 0)
    if deterministic:   # the reference's values exactly (same linspace), shared by all rays
        depths_c = torch.linspace(options["ray_start"], options["ray_end"], n_c)
        c_stride = 0
    else:               # the reference's call, so that the same random numbers come out
        depths_c = volume.coarse_depths(b, r, options["ray_start"], options["ray_end"], n_c, False, "cpu")
        depths_c = depths_c.reshape(n_rays, n_c).contiguous()
        c_stride = n_c
    bounds = torch.stack(torch.aminmax(depths_c)).contiguous()
    if n_f > 0:
        if deterministic:
            u, u_stride = torch.linspace(0, 1, n_f), 0
        else:
            u, u_stride = torch.rand(n_rays, n_f), n_f
    else:
        u, u_stride = torch.zeros(1), 0
    rgb = torch.empty(n_rays, cout)
    depth = torch.empty(n_rays)
    wsum = torch.empty(n_rays)
    st = (ctypes.c_int64 * 2)(0, 0)
    if n_rays:
        use = _use_projection(planes_cl, lib.dims) if projection is None else projection
        proj = project_planes(planes_cl, params, lib.dims) if use else None
        _check(lib.lib.pv3d_cpu_render(_ptr(planes_cl), proj.data_ptr() if proj is not None else None,
                                       planes_cl.shape[2], planes_cl.shape[3], _ptr(params), _ptr(o),
                                       _ptr(d), n_rays, r, _ptr(depths_c), c_stride, n_c, _ptr(u), u_stride, n_f,
                                       2.0 / options["box_warp"], _ptr(bounds), _skip_budget, _ptr(rgb), _ptr(depth),
                                       _ptr(wsum), st, torch.get_num_threads()), "render")
    _stats["skipped"] += st[0]
    _stats["samples"] += st[1]
    return rgb.reshape(b, r, cout), depth.reshape(b, r, 1), wsum.reshape(b, r, 1)


def query(lib: Library, planes_cl: torch.Tensor, params: torch.Tensor, coords, box_warp: float,
          sigma_only: bool = False) -> dict:
    """:func:`volume.query` at points (N, M, 3): dict(sigma (N, M, 1), rgb (N, M, C)); with
    ``sigma_only`` the features are not computed and ``rgb`` is None."""
    n, m, _ = coords.shape
    cout = lib.dims[2]
    pts = _f32(coords).reshape(n * m, 3)
    sigma = torch.empty(n * m)
    feat = torch.empty(0 if sigma_only else n * m, cout)
    if n * m:
        _check(lib.lib.pv3d_cpu_query(_ptr(planes_cl), planes_cl.shape[2], planes_cl.shape[3], _ptr(params), _ptr(pts),
                                      n * m, m, 2.0 / box_warp, _ptr(sigma), _ptr(feat), int(sigma_only),
                                      torch.get_num_threads()), "query")
    return {"sigma": sigma.reshape(n, m, 1), "rgb": None if sigma_only else feat.reshape(n, m, cout)}


def march(lib: Library, colors, densities, depths):
    """:func:`volume.march`: rgb (N, R, C) in [-1, 1], depth (N, R, 1), weights (N, R, S-1, 1)."""
    b, r, s, c = colors.shape
    n_rays = b * r
    col, sig, dz = _f32(colors), _f32(densities), _f32(depths)
    bounds = torch.stack(torch.aminmax(dz)).contiguous()
    rgb = torch.empty(n_rays, c)
    depth = torch.empty(n_rays)
    weights = torch.empty(n_rays, s - 1)
    if n_rays:
        _check(lib.lib.pv3d_cpu_march(_ptr(col), _ptr(sig), _ptr(dz), n_rays, s, c, _ptr(bounds), _ptr(rgb),
                                      _ptr(depth), _ptr(weights), torch.get_num_threads()), "march")
    return rgb.reshape(b, r, c), depth.reshape(b, r, 1), weights.reshape(b, r, s - 1, 1)


def importance_depths(lib: Library, depths_coarse, weights, n: int, deterministic: bool):
    """:func:`volume.importance_depths`: fine depths (N, R, n, 1) in quantile order (not sorted)."""
    b, r, s, _ = depths_coarse.shape
    n_rays = b * r
    if deterministic:
        u, u_stride = torch.linspace(0, 1, n), 0
    else:
        u, u_stride = torch.rand(n_rays, n), n
    dz, w = _f32(depths_coarse), _f32(weights)
    out = torch.empty(n_rays, n)
    if n_rays and n:
        _check(lib.lib.pv3d_cpu_importance(_ptr(dz), _ptr(w), n_rays, s, _ptr(u),
                                           u_stride, n, _ptr(out), torch.get_num_threads()), "importance")
    return out.reshape(b, r, n, 1)
