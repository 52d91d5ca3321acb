"""Winograd F(4x4, 3x3) convolutions for inference on the CPU (``cuda/winograd_cpu.cpp``).

A 3x3, stride-1, padding-1 convolution of NHWC float32 activations as Winograd F(4x4, 3x3): 36
multiply-adds per 4x4 outputs and channel pair instead of 144. One C++ call per convolution transforms
a block of tiles, multiplies and transforms back in each thread's cache-sized scratch; the weight's
transform ``G w G^T`` (also C++) is made once per weight tensor. oneDNN's direct convolution already runs
at 150-210 GFLOP/s on these 2 cores, the fp32 floor of a direct convolution; this does a quarter of the
work. A 2x upsampling layer (``nn.ops.conv2d_resample(up=2)``: transposed convolution, then the FIR) runs
as one such convolution of its four output phases, each a 3x3 kernel on the input grid, interleaved as
they are written. Per layer shape alone (``benchmarks/bench_winograd.py``, 2 threads): the tiny preset's
picked layers 1.2-2.9x faster than the direct path, the released config's 1.3-2.5x.

Where it runs (:func:`usable`): CPU float32 NHWC activations, no gradient recorded, 3x3 weight, stride 1,
padding 1, one group, sides of at least :data:`MIN_SIDE`, and for more than :data:`WIDE` channel pairs
images of at least :data:`MIN_WIDE_PIXELS` pixels (the transformed weight, 36 x in x out floats, is read
once per block of tiles). Everything else, training included, runs the direct convolution.

Accuracy: the transforms' constants (up to 8 and 1/24) cost some bits; against a float64 convolution
the relative error measured 4e-6 to 1.6e-5 of the output's range, against 2e-7 to 1.9e-6 for oneDNN, and
a whole tiny frame moves by 2-3e-6 (the project's same-pixels rule is 1e-4). The choice depends only on
shapes and the switch, never on what ran before, and each output is summed in a fixed order by one
thread, so the same call gives the same bits every time, for any thread count.

Switch: :func:`set_enabled` (``cuda_ops.set_kernels("off")`` turns it off with the renderer's kernels), else
``$PV3D_WINOGRAD`` (``0``/``off`` disables), else off where ``$PV3D_KERNELS`` is off, else on. Without a
C++ compiler it is off and :func:`describe` says why; while another thread compiles it (the viewer's
warm-up), renders use the direct convolutions. The built library checks itself once per process (an odd
sized convolution against PyTorch's in float64) and is refused, with the figure, if it disagrees.

A transformed weight is kept per weight tensor (while the tensor lives and is unchanged), so the
prepared blocks of one appearance pay for it once, and motion layers, which keep their weight
(:func:`pv3d_core.nn.prepared.run_input_modulated`), once for all. A new appearance every frame (a seed
blend dragged) makes new weights every frame: each is transformed (0.14 ms at 128 x 128 channels) into the
memory of the last one that died.
Each OpenMP thread keeps its scratch (36 x block x (in + out) floats: 0.3 MB for the tiny preset, up to
19 MB for 512-channel layers) for the process's life.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os
import threading
import weakref

import torch

from .. import native
from ..rules import env_flag, parse_bool

logger = logging.getLogger(__name__)

SOURCE_FILE = "winograd_cpu.cpp"
ENV = "PV3D_WINOGRAD"
ENV_KERNELS = "PV3D_KERNELS"     # the kernels' switch (pv3d_core.render.cuda_ops) turns these off too
MIN_SIDE = 16                # 128 channels alone: 4² measured 0.64x of oneDNN, 8² 1.20x, 16² 2.40x
WIDE = 256 * 256             # more channel pairs than this (512 x 512): 16² measured 1.05x, 32² 1.65x
MIN_WIDE_PIXELS = 32 * 32
WIDE_UP = 128 * 256          # 2x upsampling layers, in x 4 out channels (the four phases make 4x the work of
                             # the transposed convolution, Winograd takes 4x off): 128 -> 64 at 32² measured
                             # 1.19x of the transposed convolution and FIR, 64 -> 32 at 64² 1.25x, 32 -> 256 at
                             # 128² 1.28x; 128 -> 128 at 16² 0.62x, 512 -> 512 at 32² 0.64x
TILES_PER_BLOCK = 0          # 0: the kernel's choice by sizes (benchmarks may set it)

# F(4x4, 3x3): the weight transform G (the input and output transforms are written out in the source)
_G = torch.tensor([[1 / 4, 0, 0],
                   [-1 / 6, -1 / 6, -1 / 6],
                   [-1 / 6, 1 / 6, -1 / 6],
                   [1 / 24, 1 / 12, 1 / 6],
                   [1 / 24, -1 / 12, 1 / 6],
                   [0, 0, 1]], dtype=torch.float64)
_K = torch.kron(_G, _G).t().to(torch.float32).contiguous()     # (9, 36): vec(G w G^T) = kron(G, G) vec(w)

_enabled: bool | None = None
_lib = None                  # native.Built, or the NativeUnavailable that says why not
_lock = threading.Lock()
_weights: dict = {}          # (id(weight), tag) -> (weakref, version, transformed)
_spare: dict = {}            # shape -> transformed tensors of weights that died, to be written again
_MAX_SPARE = 4               # per shape
_stats = {"convs": 0, "transforms": 0}


def set_enabled(flag: bool | None) -> None:
    """On (True), off (False), or back to ``$PV3D_WINOGRAD`` (None)."""
    global _enabled
    _enabled = None if flag is None else bool(flag)


def enabled() -> bool:
    """Whether the switch is on (the library may still be unavailable): :func:`set_enabled`'s choice,
    else ``$PV3D_WINOGRAD``, else off when ``$PV3D_KERNELS`` turns the kernels off, else on."""
    if _enabled is not None:
        return _enabled
    return env_flag(ENV, default=parse_bool(os.environ.get(ENV_KERNELS, "auto")) is not False)


def _check(cdll) -> None:
    if cdll.pv3d_wino_version() != 5:
        raise native.NativeUnavailable("winograd_cpu.cpp version mismatch")


def library(wait: bool = True) -> native.Built:
    """The built convolution (compiled at first use, then from the disk cache); raises
    :class:`native.NativeUnavailable` with the reason, remembered for the process. ``wait=False``: while
    another thread builds it, raise at once (not remembered), so that a render thread uses the direct
    convolutions meanwhile instead of waiting for the compiler (the viewer builds in a warm-up thread)."""
    global _lib
    if _lib is None:
        if not _lock.acquire(blocking=wait):
            raise native.NativeUnavailable("Winograd convolutions compiling in another thread")
        try:
            if _lib is None:
                try:
                    built = native.build(SOURCE_FILE, "winograd_cpu", what="Winograd convolutions", check=_check)
                    p, i32 = ctypes.c_void_p, ctypes.c_int
                    built.cdll.pv3d_wino_conv.argtypes = [p, i32, i32, i32, i32, p, p, i32, i32, p, i32, i32]
                    built.cdll.pv3d_wino_conv.restype = i32
                    i64 = ctypes.c_int64
                    built.cdll.pv3d_wino_weight.argtypes = [p, i32, i32, i64, i64, i64, p, i32]
                    built.cdll.pv3d_wino_weight.restype = i32
                    _self_check(built)
                    _lib = built
                except native.NativeUnavailable as e:
                    logger.info("Winograd convolutions unavailable: %s", e)
                    _lib = e
                except Exception as e:  # noqa: BLE001 - anything else also means "direct convolutions", with the reason
                    _lib = native.NativeUnavailable(f"{type(e).__name__}: {e}")
        finally:
            _lock.release()
    if isinstance(_lib, Exception):
        raise _lib
    return _lib


SELF_CHECK_TOLERANCE = 1e-4      # of the output's range; F(4x4, 3x3) measures 4e-6 to 1.6e-5
_check_error: float | None = None


def _self_check(built: native.Built) -> None:
    """Once per process, before first use: a convolution of odd sizes (edges, partial tiles and channel
    blocks) against PyTorch's in float64, and the C++ weight transform against PyTorch's; a build that
    disagrees (a miscompile) is refused with the figure, and the direct convolutions run instead. (The
    upsampling layers' phase interleaving is held by tests/test_winograd.py, not here.)"""
    global _check_error
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 40, 19, 22, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(24, 40, 3, 3, generator=g) / 19
    b = torch.randn(24, generator=g)
    u = _transform_torch(w).contiguous()
    y = torch.empty((2, 24, 19, 22), memory_format=torch.channels_last)
    rc = built.cdll.pv3d_wino_conv(x.data_ptr(), 2, 19, 22, 40, u.data_ptr(), b.data_ptr(), 24, 1, y.data_ptr(),
                                   max(1, min(2, torch.get_num_threads())), 0)
    u2 = torch.empty(36, 40, 24)
    rc2 = built.cdll.pv3d_wino_weight(w.data_ptr(), 24, 40, 360, 9, 1, u2.data_ptr(), 1)
    if rc != 0 or rc2 != 0:
        raise native.NativeUnavailable(f"the Winograd self-check could not run (codes {rc}, {rc2})")
    ref = torch.nn.functional.conv2d(x.double(), w.double(), b.double(), padding=1)
    err = max(((y.double() - ref).abs().max() / ref.abs().max()).item(), (u2 - u).abs().max().item())
    _check_error = err
    if not err <= SELF_CHECK_TOLERANCE:
        raise native.NativeUnavailable(f"the Winograd convolutions failed their self-check (error {err:.1e})")


def self_check_error() -> float | None:
    """The built library's self-check error (None before a build)."""
    return _check_error


def available(wait: bool = True) -> bool:
    """Switched on and built (``wait=False``: and not being built by another thread right now)."""
    if not enabled():
        return False
    try:
        library(wait)
    except native.NativeUnavailable:
        return False
    return True


def describe() -> str:
    """A status-bar fragment: "Winograd 3x3 convolutions" or why they do not run."""
    if not enabled():
        return f"direct 3x3 convolutions (${ENV} off)"
    try:
        library()
    except native.NativeUnavailable as e:
        return f"direct 3x3 convolutions ({e})"
    return "Winograd 3x3 convolutions"


def stats(reset: bool = False) -> dict:
    """Convolutions run and weights transformed since the last reset."""
    out = dict(_stats)
    if reset:
        _stats.update(convs=0, transforms=0)
    return out


def _shape_ok(h: int, w: int, cin: int, cout: int, up: int) -> bool:
    if up == 2:
        return min(h, w) >= MIN_SIDE and cin * cout * 4 <= WIDE_UP
    return min(h, w) >= MIN_SIDE and (cin * cout <= WIDE or h * w >= MIN_WIDE_PIXELS)


def usable(x: torch.Tensor, w: torch.Tensor, bias, stride, padding, groups: int, transpose: bool,
           up: int = 1) -> bool:
    """Whether :func:`conv3x3` may run this convolution (see the module's docstring); ``up=2``: a 2x
    upsampling layer's, as its four phases on the input grid (stride and padding are then those)."""
    if transpose or groups != 1 or stride not in (1, [1, 1], (1, 1)) or padding not in (1, [1, 1], (1, 1)):
        return False
    if x.device.type != "cpu" or x.dtype != torch.float32 or w.dtype != torch.float32 or x.ndim != 4:
        return False
    if tuple(w.shape[2:]) != (3, 3) or w.shape[1] != x.shape[1] or not _shape_ok(x.shape[2], x.shape[3], w.shape[1], w.shape[0], up):
        return False
    if not x.is_contiguous(memory_format=torch.channels_last) or x.is_contiguous():
        return False
    if bias is not None and (bias.dtype != torch.float32 or bias.shape != (w.shape[0],)):
        return False
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, w, bias)):
        return False
    return available(wait=False)


def _transform_torch(w: torch.Tensor) -> torch.Tensor:
    """The weight transform in PyTorch: one product with kron(G, G) (9, 36) -> (36, in, out)."""
    o, i = w.shape[:2]
    return torch.mm(_K.t(), w.to(torch.float32).permute(2, 3, 1, 0).reshape(9, i * o)).view(36, i, o)


def _new_transformed(i: int, o: int) -> torch.Tensor:
    """A (36, i, o) tensor to write a transform into: a dead weight's when there is one. Weights made new
    every frame (a new appearance each frame) would otherwise cost fresh megabytes, whose page faults
    measured as much as the transform."""
    spare = _spare.get((i, o))
    return spare.pop() if spare else torch.empty(36, i, o)


def _recycle(u: torch.Tensor) -> None:
    spare = _spare.setdefault((u.shape[1], u.shape[2]), [])
    if len(spare) < _MAX_SPARE:
        spare.append(u)


def _forget(key, _ref) -> None:
    """A weight died: drop its transform (kept for the next weight of its shape)."""
    hit = _weights.get(key)
    if hit is not None and hit[0] is _ref:
        del _weights[key]
        _recycle(hit[2])


def transform_weight(w: torch.Tensor, derive=None, tag=None) -> torch.Tensor:
    """(out, in, 3, 3) cross-correlation weight -> (36, in, out) = G w G^T per (in, out) pair, by the C++
    transform (PyTorch's :func:`_transform_torch` for strides it does not take). ``derive(w)`` first makes the 3x3 weight actually convolved (a 2x
    upsampling layer's four phases, ``tag`` naming the derivation). Kept for the tensor while it lives
    and its version is unchanged."""
    key = (id(w), tag)
    hit = _weights.get(key)
    if hit is not None and hit[0]() is w and hit[1] == w._version:
        return hit[2]
    with torch.no_grad():
        v = w.detach() if derive is None else derive(w)
        o, i = v.shape[:2]
        so, si, sky, skx = v.stride()
        if v.dtype == torch.float32 and v.device.type == "cpu" and sky == 3 * skx:
            u = _new_transformed(i, o)
            if library().cdll.pv3d_wino_weight(v.data_ptr(), o, i, so, si, skx, u.data_ptr(),
                                               torch.get_num_threads()) != 0:
                raise ValueError(f"Winograd weight transform refused {tuple(v.shape)}")
        else:
            u = _transform_torch(v)
    _stats["transforms"] += 1
    old = _weights.get(key)
    if old is not None:
        _recycle(old[2])                  # the same tensor changed in place (or its id was reused)
    _weights[key] = (weakref.ref(w, functools.partial(_forget, key)), w._version, u)
    return u


def conv3x3(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, up: int = 1, derive=None,
            tag=None) -> torch.Tensor:
    """F.conv2d(x, w, bias, padding=1) for what :func:`usable` accepts; NHWC (channels-last) result.

    ``up=2``: a 2x upsampling convolution given as ``derive(w)``, the (4 out, in, 3, 3) kernels of its
    output phases (py, px) on the input grid, phase-major; the phases are interleaved into the (2H, 2W)
    result as they are written (``tag`` names the derivation for the weight cache)."""
    if up not in (1, 2) or (up == 2) != (derive is not None):
        raise ValueError("conv3x3: up=2 needs the phases' derivation, up=1 none")
    lib = library().cdll
    n, c, h, wd = x.shape
    u = transform_weight(w, derive, tag)
    o = u.shape[2] // (up * up)
    b = None if bias is None else bias.detach().contiguous()
    y = torch.empty((n, o, h * up, wd * up), memory_format=torch.channels_last)
    rc = lib.pv3d_wino_conv(x.data_ptr(), n, h, wd, c, u.data_ptr(), None if b is None else b.data_ptr(), o, up,
                            y.data_ptr(), torch.get_num_threads(), TILES_PER_BLOCK)
    _stats["convs"] += 1
    if rc != 0:
        raise MemoryError(f"Winograd convolution of {tuple(x.shape)} -> {o} channels failed (code {rc})")
    return y
