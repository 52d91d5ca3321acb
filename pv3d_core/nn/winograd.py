"""Winograd F(4x4, 3x3) convolutions for inference on the CPU (``cuda/winograd_cpu.cpp``).

A 3x3, stride-1, padding-1 convolution of NHWC float32 activations as Winograd F(4x4, 3x3): 36
multiply-adds per 4x4 outputs and channel pair instead of 144. One C++ call per convolution transforms
a block of tiles, multiplies and transforms back in each thread's cache-sized scratch; the weight's
transform ``G w G^T`` is made here once per weight tensor. oneDNN's direct convolution already runs at
150-210 GFLOP/s on these 2 cores, the fp32 floor of a direct convolution; this does a quarter of the
work. Per layer shape alone (``benchmarks/bench_winograd.py``, 2 threads): the tiny preset's picked
layers 1.85-2.87x faster than oneDNN (9.2 -> 4.0 ms a frame), the released config's 1.64-2.47x (1136 ->
553 ms a 512² frame).

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
warm-up), renders use the direct convolutions. A transformed weight is kept per weight tensor (while the
tensor lives and is unchanged), so the prepared blocks of one appearance pay for it once; a motion
layer's weight is new every frame and transformed every frame (0.1-0.2 ms at 128 channels).
"""
from __future__ import annotations

import ctypes
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
MIN_SIDE = 16                # 128 channels alone: 8² measured 0.81x of oneDNN, 16² 1.85x
WIDE = 256 * 256             # more channel pairs than this (512 x 512): 16² measured 0.89x, 32² 1.64x
MIN_WIDE_PIXELS = 32 * 32

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
_weights: dict = {}          # id(weight) -> (weakref, version, transformed)
_MAX_WEIGHTS = 512
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
    if cdll.pv3d_wino_version() != 2:
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
                    built.cdll.pv3d_wino_conv.argtypes = [p, i32, i32, i32, i32, p, p, i32, p, i32]
                    built.cdll.pv3d_wino_conv.restype = i32
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


def _shape_ok(h: int, w: int, cin: int, cout: int) -> bool:
    return min(h, w) >= MIN_SIDE and (cin * cout <= WIDE or h * w >= MIN_WIDE_PIXELS)


def usable(x: torch.Tensor, w: torch.Tensor, bias, stride, padding, groups: int, transpose: bool) -> bool:
    """Whether :func:`conv3x3` may run this convolution (see the module's docstring)."""
    if transpose or groups != 1 or stride not in (1, [1, 1], (1, 1)) or padding not in (1, [1, 1], (1, 1)):
        return False
    if x.device.type != "cpu" or x.dtype != torch.float32 or w.dtype != torch.float32 or x.ndim != 4:
        return False
    if tuple(w.shape[2:]) != (3, 3) or w.shape[1] != x.shape[1] or not _shape_ok(x.shape[2], x.shape[3], w.shape[1], w.shape[0]):
        return False
    if not x.is_contiguous(memory_format=torch.channels_last) or x.is_contiguous():
        return False
    if bias is not None and (bias.dtype != torch.float32 or bias.shape != (w.shape[0],)):
        return False
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, w, bias)):
        return False
    return available(wait=False)


def transform_weight(w: torch.Tensor) -> torch.Tensor:
    """(out, in, 3, 3) cross-correlation weight -> (36, out, in) = G w G^T per (out, in) pair: one
    product with kron(G, G) (9, 36), reading a channels-last weight row by row (the products take it
    transposed, which measured as fast). Kept for the tensor while it lives and its version is unchanged."""
    key = id(w)
    hit = _weights.get(key)
    if hit is not None and hit[0]() is w and hit[1] == w._version:
        return hit[2]
    with torch.no_grad():
        o, i = w.shape[:2]
        u = torch.mm(_K.t(), w.detach().permute(2, 3, 1, 0).reshape(9, i * o)).view(36, i, o)
    _stats["transforms"] += 1
    if len(_weights) >= _MAX_WEIGHTS:
        for k in [k for k, v in _weights.items() if v[0]() is None][: _MAX_WEIGHTS // 2] or list(_weights)[:1]:
            _weights.pop(k, None)
    _weights[key] = (weakref.ref(w), w._version, u)
    return u


def conv3x3(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.conv2d(x, w, bias, padding=1) for what :func:`usable` accepts; NHWC (channels-last) result."""
    lib = library().cdll
    n, c, h, wd = x.shape
    u = transform_weight(w)
    o = u.shape[2]
    b = None if bias is None else bias.detach().contiguous()
    y = torch.empty((n, o, h, wd), memory_format=torch.channels_last)
    rc = lib.pv3d_wino_conv(x.data_ptr(), n, h, wd, c, u.data_ptr(), None if b is None else b.data_ptr(), o,
                            y.data_ptr(), torch.get_num_threads())
    _stats["convs"] += 1
    if rc != 0:
        raise MemoryError(f"Winograd convolution of {tuple(x.shape)} -> {o} channels failed (code {rc})")
    return y
