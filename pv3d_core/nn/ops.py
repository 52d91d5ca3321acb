"""StyleGAN2 low-level operations in plain PyTorch.

These reproduce the semantics of the official custom ops (bias_act, upfirdn2d, conv2d_resample) with
standard PyTorch calls, so the same weights give the same numbers on any device without compiling
anything. Filters are 2-D tensors prepared by :func:`setup_filter`.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from . import winograd

SQRT2 = float(np.sqrt(2))

_shortcuts = {"on": True}


def set_inference_shortcuts(enabled: bool) -> None:
    """Turn the inference shortcuts (the synthesis layers' one-image path, the skip images' bilinear
    upsampling) off or on; on by default. Off, inference runs the general path: benchmarks compare the
    two side by side."""
    _shortcuts["on"] = bool(enabled)


def inference_shortcuts() -> bool:
    return _shortcuts["on"]


def needs_grad(*tensors) -> bool:
    """Whether autograd records an op on these tensors (None entries ignored). When it does not, a fresh
    result may be overwritten in place."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# name -> (function, default alpha, default gain)
ACTIVATIONS = {
    "linear": (lambda x, a: x, 0.0, 1.0),
    "relu": (lambda x, a: F.relu(x), 0.0, SQRT2),
    "lrelu": (lambda x, a: F.leaky_relu(x, a), 0.2, SQRT2),
    "tanh": (lambda x, a: torch.tanh(x), 0.0, 1.0),
    "sigmoid": (lambda x, a: torch.sigmoid(x), 0.0, 1.0),
    "softplus": (lambda x, a: F.softplus(x), 0.0, 1.0),
}


def default_gain(act: str) -> float:
    return ACTIVATIONS[act][2]


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, act: str = "linear", gain: float | None = None,
             clamp: float | None = None, dim: int = 1, inplace: bool = False) -> torch.Tensor:
    """Bias, activation, gain and clamp, in that order.

    ``inplace=True`` lets inference overwrite ``x`` (callers pass it for fresh convolution outputs).
    """
    func, alpha, def_gain = ACTIVATIONS[act]
    gain = def_gain if gain is None else float(gain)
    if not needs_grad(x, b):
        # Inference: the same operations in the same order, in place (one buffer instead of four).
        if b is not None:
            bb = b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
            x = x.add_(bb) if inplace else x + bb
        elif not inplace and (act != "linear" or gain != 1 or clamp is not None):
            x = x.clone()
        if act == "lrelu":
            F.leaky_relu_(x, alpha)
        elif act == "relu":
            F.relu_(x)
        elif act != "linear":
            x = func(x, alpha)
        if gain != 1:
            x.mul_(gain)
        if clamp is not None and clamp >= 0:
            x.clamp_(-clamp, clamp)
        return x
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def setup_filter(f=(1, 3, 3, 1), normalize: bool = True) -> torch.Tensor:
    """A 1-D tap list -> the normalised 2-D (outer product) filter stored as ``resample_filter``."""
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim == 1:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    return f


# the filter that _bilinear_up2 reproduces, built once (upfirdn2d compares it on every 2x upsampling)
_BILINEAR_FILTER = setup_filter([1, 3, 3, 1])


def _pad4(padding) -> list[int]:
    if isinstance(padding, int):
        return [padding] * 4
    if len(padding) == 2:
        px, py = padding
        return [px, px, py, py]
    return list(padding)


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1, padding=0,
              flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter, downsample (pixel dropping)."""
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    n, c, h, w = x.shape
    px0, px1, py0, py1 = _pad4(padding)
    if (up == 2 and down == 1 and f.ndim == 2 and tuple(f.shape) == (4, 4) and [px0, px1, py0, py1] == [2, 1, 2, 1]
            and torch.equal(f, f.flip([0, 1]))):
        # upsample2d's case (zero insertion, pad (2, 1), symmetric 4x4 filter) is one depthwise transposed
        # convolution: no zero-inserted, padded copy (4-5x faster for the skip images).
        if (gain == 4 and _shortcuts["on"] and not needs_grad(x)
                and torch.equal(f, _BILINEAR_FILTER.to(f.device, f.dtype))):
            return _bilinear_up2(x)
        k = (f * (gain ** (f.ndim / 2))).to(x.dtype)[None, None].expand(c, 1, 4, 4)
        if is_nhwc(x):
            k = k.contiguous(memory_format=torch.channels_last)
        return F.conv_transpose2d(x, k, stride=2, padding=1, groups=c)
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    conv_pad = 0
    if px0 == px1 == py0 == py1 and px0 >= 0 and f.ndim == 2:
        conv_pad = px0   # let the convolution pad: no separate padded copy of a large tensor
    else:
        if any(p != 0 for p in (px0, px1, py0, py1)):
            x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
        x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        k = f[None, None].expand(c, 1, *f.shape)
        if is_nhwc(x):   # an NCHW filter would make oneDNN run the NHWC activations through NCHW (3x slower)
            k = k.contiguous(memory_format=torch.channels_last)
        x = F.conv2d(x, k, padding=conv_pad, groups=c)
    else:
        x = F.conv2d(x, f[None, None, None, :].expand(c, 1, 1, -1), groups=c)
        x = F.conv2d(x, f[None, None, :, None].expand(c, 1, -1, 1), groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def _bilinear_up2(x: torch.Tensor) -> torch.Tensor:
    """2x upsampling with the [1, 3, 3, 1] filter (gain 4), as bilinear interpolation (3-4x faster).

    Inside, each output pixel is 3/4 of its nearest input pixel plus 1/4 of the next, per axis: that
    is bilinear interpolation (half-pixel centres). At the border, upfirdn2d's zero padding gives 3/4 of
    the edge pixel where bilinear interpolation repeats it, so the first and last rows and columns are
    scaled by 3/4 (the corners twice). Equal up to rounding (about 5e-7)."""
    y = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    for edge in (y[:, :, 0], y[:, :, -1], y[:, :, :, 0], y[:, :, :, -1]):
        edge.mul_(0.75)
    return y


def upsample2d(x, f, up: int = 2, padding=0, gain: float = 1.0):
    fw = f.shape[-1]
    px0, px1, py0, py1 = _pad4(padding)
    p = [px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2, py0 + (fw + up - 1) // 2, py1 + (fw - up) // 2]
    return upfirdn2d(x, f, up=up, padding=p, gain=gain * up * up)


def is_nhwc(x: torch.Tensor) -> bool:
    """Channels-last activations (NHWC in memory; a tensor that is both counts as NCHW)."""
    return x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _conv(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True, bias=None):
    if not flip_weight and (w.shape[2] > 1 or w.shape[3] > 1):
        w = w.flip([2, 3])
    if is_nhwc(x):
        if (w.shape[2] == 1 and w.shape[3] == 1 and groups == 1 and not transpose and stride == 1
                and padding in (0, [0, 0])):
            # A 1x1 convolution on NHWC activations is a matrix product over channels; oneDNN would
            # first convert the whole tensor (the ToRGB layers at 256² and 512²). Flattened to 2-D
            # here: matmul folds a 4-D input into one product only when its batch stride is the
            # contiguous one, which a reshaped batch of 1 need not have (it ran one product per row).
            n, c, h, wd = x.shape
            y = F.linear(x.permute(0, 2, 3, 1).reshape(n * h * wd, c), w[:, :, 0, 0], bias)
            return y.view(n, h, wd, -1).permute(0, 3, 1, 2)
        if winograd.usable(x, w, bias, stride, padding, groups, transpose):
            return winograd.conv3x3(x, w, bias)      # 3x3 inference on the CPU: 4x fewer multiply-adds
        w = w.contiguous(memory_format=torch.channels_last)  # keep oneDNN/cuDNN on the NHWC path
    if transpose:
        return _add_bias(F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups), bias)
    return F.conv2d(x, w, bias, stride=stride, padding=padding, groups=groups)


def _add_bias(x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x`` plus a per-channel bias; in place when nothing needs a gradient (a fresh output)."""
    if bias is None:
        return x
    b = bias.reshape(1, -1, 1, 1)
    if needs_grad(x, bias):
        return x + b
    return x.add_(b)


@functools.lru_cache(maxsize=8)
def _polyphase_mixing(f_taps: tuple, f_shape: tuple, flip_weight: bool, flip_filter: bool) -> torch.Tensor | None:
    """A 3x3 weight's 2x upsampling convolution (``conv2d_resample(up=2, padding=1)``: transposed
    convolution, then the FIR) as four 3x3 convolutions on the input grid, one per output phase: M (9, 36),
    vec(phase kernels (py, px, ky, kx)) = vec(w) @ M. Read off the operation itself, one unit weight at a
    time, applied to an impulse; None if a phase's footprint is larger than 3x3 (another filter)."""
    f = torch.tensor(f_taps, dtype=torch.float64).reshape(f_shape)
    n = i0 = 9
    x = torch.zeros(1, 1, 2 * n, 2 * n, dtype=torch.float64)
    x[0, 0, i0, i0] = 1
    m = torch.zeros(3, 3, 2, 2, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        for a in range(3):
            for b in range(3):
                w = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
                w[0, 0, a, b] = 1
                y = conv2d_resample(x, w, f=f, up=2, padding=1, flip_weight=flip_weight, flip_filter=flip_filter)[0, 0]
                seen = torch.zeros_like(y)
                for py in range(2):
                    for px in range(2):
                        for ky in range(3):
                            for kx in range(3):
                                yy, xx = 2 * (i0 + 1 - ky) + py, 2 * (i0 + 1 - kx) + px
                                m[a, b, py, px, ky, kx] = seen[yy, xx] = y[yy, xx]
                if not torch.equal(seen, y):
                    return None
    return m.reshape(9, 36).to(torch.float32)


def _filter_key(f: torch.Tensor, flip_weight: bool, flip_filter: bool) -> tuple:
    return tuple(f.detach().cpu().double().flatten().tolist()), tuple(f.shape), bool(flip_weight), bool(flip_filter)


def polyphase_weight(w: torch.Tensor, key: tuple) -> torch.Tensor:
    """(out, in, 3, 3) weight of a 2x upsampling layer -> (4 out, in, 3, 3): output phase (py, px)'s 3x3
    kernel on the input grid, phase-major (see :func:`_polyphase_mixing`)."""
    o, i = w.shape[:2]
    p = torch.mm(w.detach().reshape(o * i, 9).to(torch.float32), _polyphase_mixing(*key))
    return p.view(o, i, 2, 2, 3, 3).permute(2, 3, 0, 1, 4, 5).reshape(4 * o, i, 3, 3)


def _winograd_up2(x, w, f, padding, groups, flip_weight, flip_filter, bias) -> torch.Tensor | None:
    """The 2x upsampling convolution as one Winograd convolution of its four phases, where it runs
    (:func:`winograd.usable`), else None. It replaces the transposed convolution and the FIR pass."""
    if (f is None or groups != 1 or tuple(w.shape[2:]) != (3, 3) or _pad4(padding) != [1, 1, 1, 1]
            or not winograd.usable(x, w, bias, 1, 1, 1, False, up=2)):
        return None
    key = _filter_key(f, flip_weight, flip_filter)
    if _polyphase_mixing(*key) is None:
        return None
    return winograd.conv3x3(x, w, bias, up=2, derive=functools.partial(polyphase_weight, key=key), tag=key)


def conv2d_resample(x, w, f=None, up: int = 1, down: int = 1, padding=0, groups: int = 1,
                    flip_weight: bool = True, flip_filter: bool = False, bias=None) -> torch.Tensor:
    """2-D convolution with optional FIR up/downsampling, padding applied once at the start.

    ``bias`` (per output channel) is added to the result: inside the convolution where a convolution
    gives the result (one pass less over the activations), else after the resampling."""
    if up == 2 and down == 1 and is_nhwc(x):
        y = _winograd_up2(x, w, f, padding, groups, flip_weight, flip_filter, bias)
        if y is not None:
            return y
    if bias is not None:
        px0, px1, py0, py1 = _pad4(padding)
        if up == 1 and down == 1 and px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
            return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight, bias=bias)
        return _add_bias(_resample_direct(x, w, f, up, down, padding, groups, flip_weight, flip_filter), bias)
    return _resample_direct(x, w, f, up, down, padding, groups, flip_weight, flip_filter)


def _resample_direct(x, w, f, up, down, padding, groups, flip_weight, flip_filter) -> torch.Tensor:
    """:func:`conv2d_resample` without a bias, as direct (or transposed) convolutions and FIR passes."""
    out_ch, in_per_group, kh, kw = w.shape
    fw = f.shape[-1] if f is not None else 1
    px0, px1, py0, py1 = _pad4(padding)
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fw + up - 1) // 2
        py1 += (fw - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fw - down + 1) // 2
        py1 += (fw - down) // 2

    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter)
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)
    if up > 1:
        # Transposed convolution, then the FIR filter.
        if groups == 1:
            w = w.transpose(0, 1)
        else:
            w = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
            w = w.reshape(groups * in_per_group, out_ch // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=not flip_weight)
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up ** 2, flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)
    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter)
    x = _conv(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x


def modulated_conv2d(x, weight, styles, noise=None, up: int = 1, down: int = 1, padding: int = 0,
                     resample_filter=None, demodulate: bool = True, flip_weight: bool = True,
                     fused_modconv: bool = True) -> torch.Tensor:
    """StyleGAN2 modulated convolution (modulate, convolve, demodulate, add noise)."""
    batch = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:  # pre-normalise to avoid fp16 overflow
        weight = weight * (1 / math.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    w = dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    if demodulate and fused_modconv:
        w = w * dcoefs.reshape(batch, -1, 1, 1, 1)

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                            flip_weight=flip_weight)
        if demodulate and noise is not None:
            x = torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(batch, -1, 1, 1))
        elif demodulate:
            x = x * dcoefs.to(x.dtype).reshape(batch, -1, 1, 1)
        elif noise is not None:
            x = x + noise.to(x.dtype)
        return x

    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_ch, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                        groups=batch, flip_weight=flip_weight)
    x = x.reshape(batch, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise
    return x
