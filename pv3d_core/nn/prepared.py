"""Synthesis blocks prepared for one appearance: what stays the same from frame to frame, made once.

A scrub renders one appearance at a new timestamp every frame, an orbit the same planes from new cameras.
Only the motion layers see a new style; every other layer's modulated weight, its bias and noise times the
activation gain, every ToRGB layer's weight and the constant input are the same each time, in the
tri-plane synthesis network and in the super-resolution network alike. :class:`PreparedBlocks` holds them
and runs the blocks as their convolutions, motion layers and skip images, without the per-layer style,
memo and bookkeeping work around them (the tiny preset: backbone 15.9 -> 14.2 ms, 17.4 -> 15.4 and 20.4 ->
18.3 in three runs alternating frame by frame; super-resolution 9.6 -> 8.4 ms; 2 threads). It makes the
same calls on the same values as the layers' one-image path, so its output is that path's to the bit; the
layers use the functions below for that path too.

The pieces are plain objects, not modules: they hold tensors made from a module's parameters and are
valid while those are unchanged (:class:`KeepsPrepared` checks that).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .ops import bias_act, conv2d_resample, upsample2d


# ------------------------------------------------------------------ the one-image inference path's steps
def modulated_weight(weight: torch.Tensor, styles: torch.Tensor, gain: float, nhwc: bool, up: int) -> torch.Tensor:
    """A synthesis layer's modulated, demodulated weight times ``gain`` for one style (1, in_channels).

    For NHWC activations it is laid out as the NHWC convolution reads it (for an upsampling layer, the
    transposed convolution's weight is the transpose), so that no call copies it again. Without
    upsampling it is made in that layout from the start: the style then scales the innermost dimension
    (a 128-channel weight in 0.06 ms instead of 0.19; pass ``weight`` channels-last to save the first copy
    too). Motion layers, whose style is new every call, do not make one: :func:`run_input_modulated`."""
    if nhwc and up == 1:
        weight = weight.contiguous(memory_format=torch.channels_last)
    w = weight * styles.reshape(1, -1, 1, 1)
    d = (w.square().sum(dim=[1, 2, 3]) + 1e-8).rsqrt()
    w = w * (d * gain).reshape(-1, 1, 1, 1)
    if nhwc and up == 1:
        w = w.contiguous(memory_format=torch.channels_last)     # already so: elementwise ops keep the layout
    elif nhwc:
        w = w.transpose(0, 1).contiguous(memory_format=torch.channels_last).transpose(0, 1)
    return w


def run_input_modulated(x: torch.Tensor, weight: torch.Tensor, weight_sq: torch.Tensor, styles: torch.Tensor,
                        gain: float, bias: torch.Tensor, noise: torch.Tensor | None, *, resample_filter: torch.Tensor,
                        padding: int, activation: str, clamp: float | None) -> torch.Tensor:
    """A synthesis layer without upsampling for one image whose style is new at every call (a motion
    layer): the same layer as :func:`modulated_weight` then :func:`run_modulated`, with the style
    scaling the input's channels and the demodulation the output's instead of the weight. The weight
    itself, laid out once, never changes, so a convolution that keeps something per weight (a Winograd
    transform) keeps it across frames; each frame costs a 1 x in by in x out product for the
    demodulation and two passes over the activations, not a new weight (128 channels, 2 threads,
    ``benchmarks/bench_motion_layer.py``: 0.53 -> 0.18 ms at 16², 1.09 -> 0.74 ms at 32²; a tiny-preset
    scrub frame 1.02-1.03x, alternating frame by frame). ``weight_sq`` is :func:`weight_squares` of the
    weight; bias and noise are already times the gain. Only the rounding differs (about 1e-7 relative)."""
    s = styles.reshape(1, -1).to(x.dtype)
    d = (torch.mm(s.square(), weight_sq.t()) + 1e-8).rsqrt_().mul_(gain)
    y = conv2d_resample(x * s.reshape(1, -1, 1, 1), weight, f=resample_filter, up=1, padding=padding,
                        flip_weight=True)
    y = torch.addcmul(bias.reshape(1, -1, 1, 1), y, d.reshape(1, -1, 1, 1), out=y)
    if noise is not None:
        y.add_(noise)
    return bias_act(y, None, act=activation, gain=1.0, clamp=clamp, inplace=True)


def weight_squares(weight: torch.Tensor) -> torch.Tensor:
    """(out, in): each kernel's sum of squares, from which :func:`run_input_modulated` demodulates."""
    return weight.square().sum(dim=[2, 3])


def run_modulated(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, noise: torch.Tensor | None, *,
                  resample_filter: torch.Tensor, up: int, padding: int, activation: str,
                  clamp: float | None) -> torch.Tensor:
    """A synthesis layer for one image with its weight, bias and noise already times the gain: the
    convolution with the bias inside, the noise added in place, then the activation and the clamp."""
    x = conv2d_resample(x, weight, f=resample_filter, up=up, padding=padding, flip_weight=(up == 1), bias=bias)
    if noise is not None:
        x.add_(noise)
    return bias_act(x, None, act=activation, gain=1.0, clamp=clamp, inplace=True)


def linear_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str) -> torch.Tensor:
    """A fully connected layer with its weight (out, in) and bias already scaled by their gains."""
    if activation == "linear" and bias is not None:
        return torch.addmm(bias.unsqueeze(0), x, weight.t())
    return bias_act(x.matmul(weight.t()), bias, act=activation, inplace=True)


def upsampled_skip(img: torch.Tensor | None, upsample: bool, resample_filter: torch.Tensor,
                   fmt: torch.memory_format) -> tuple[torch.Tensor | None, bool]:
    """A block's skip image before its ToRGB output is added: upsampled 2x when the block upsamples, in
    the block's memory format; and whether it is the block's own tensor (else the caller's, not to be
    changed in place)."""
    own = False
    if img is not None and upsample:
        img, own = upsample2d(img, resample_filter), True
    if img is not None and not img.is_contiguous(memory_format=fmt):
        img, own = img.contiguous(memory_format=fmt), True
    return img, own


# ------------------------------------------------------------------------------------- prepared parts
@dataclass(frozen=True)
class Dense:
    """A fully connected layer, weight and bias scaled."""
    weight: torch.Tensor
    bias: torch.Tensor | None
    activation: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return linear_act(x, self.weight, self.bias, self.activation)


@dataclass(frozen=True)
class Conv:
    """A synthesis layer, its style fixed: weight, bias and noise times the gain."""
    weight: torch.Tensor
    bias: torch.Tensor
    noise: torch.Tensor | None
    resample_filter: torch.Tensor
    up: int
    padding: int
    activation: str
    clamp: float | None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return run_modulated(x, self.weight, self.bias, self.noise, resample_filter=self.resample_filter,
                             up=self.up, padding=self.padding, activation=self.activation, clamp=self.clamp)


@dataclass(frozen=True)
class MotionConv:
    """A motion layer: its style from (motion code x timestamp) through ``mlp`` at each call, then the
    convolution of ``conv``'s weight modulated by it, added to its input."""
    mlp: tuple
    gain: float
    weight_sq: torch.Tensor     # weight_squares of conv's weight
    conv: Conv          # its weight unmodulated (no upsampling); bias, noise and settings times the gain

    def __call__(self, x: torch.Tensor, z_motion: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        m = z_motion * t.reshape(-1, 1).to(z_motion.dtype)
        for layer in self.mlp:
            m = layer(m)
        c = self.conv
        return x + run_input_modulated(x, c.weight, self.weight_sq, m, self.gain, c.bias, c.noise,
                                       resample_filter=c.resample_filter, padding=c.padding,
                                       activation=c.activation, clamp=c.clamp)


@dataclass(frozen=True)
class ToRGB:
    """A ToRGB layer, its style fixed: the modulated 1x1 weight (out, in, 1, 1), bias and clamp."""
    weight: torch.Tensor
    bias: torch.Tensor
    clamp: float | None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return bias_act(conv2d_resample(x, self.weight.to(x.dtype)), self.bias.to(x.dtype), clamp=self.clamp,
                        inplace=True)


@dataclass(frozen=True)
class Block:
    """One resolution: the constant input (first block) or conv0, the motion layer, conv1, ToRGB."""
    const: torch.Tensor | None
    conv0: Conv | None
    motion: MotionConv | None
    conv1: Conv
    torgb: ToRGB
    resample_filter: torch.Tensor
    upsample: bool
    fmt: torch.memory_format

    def __call__(self, x, img, z_motion, t):
        if self.const is not None:
            x = self.conv1(self.const)
            if self.motion is not None:
                x = self.motion(x, z_motion, t)
        else:
            x = self.conv0(x.to(dtype=torch.float32, memory_format=self.fmt))
            if self.motion is not None:
                x = self.motion(x, z_motion, t)
            x = self.conv1(x)
        img, own = upsampled_skip(img, self.upsample, self.resample_filter, self.fmt)
        y = self.torgb(x).to(torch.float32, memory_format=self.fmt)
        if img is None:
            return x, y
        return x, (img.add_(y) if own else img + y)


@dataclass(frozen=True)
class PreparedBlocks:
    """Synthesis blocks for one appearance ``ws`` (the rows they read): ``(x, img, z_motion, t) -> (x, img)``
    (z_motion (1, D) and t (1,) for blocks with motion layers)."""
    ws: torch.Tensor
    blocks: tuple

    def __call__(self, x, img, z_motion=None, t=None):
        for block in self.blocks:
            x, img = block(x, img, z_motion, t)
        return x, img


class KeepsPrepared:
    """For a module that runs one image without gradients through :class:`PreparedBlocks`: keeps the last
    ones, with where each of the module's parameters and buffers sat and its version, and makes them again
    when the appearance, the key or any of those changed (written in place by a training step or a
    load, or replaced by an assignment). Copies, pickles and moves do not carry them."""

    _prepared = None       # (PreparedBlocks, key, [(owning dict, name, tensor)], versions)

    def kept_prepared(self, ws: torch.Tensor, key, make) -> PreparedBlocks | None:
        """The kept blocks for ``ws`` and ``key``, or ``make()``'s, kept; None when a parameter needs a
        gradient."""
        grad = torch.is_grad_enabled()
        kept = self._prepared
        if kept is not None and kept[1] == key and torch.equal(kept[0].ws, ws):
            if (not grad or not any(t.requires_grad for _, _, t in kept[2])) and \
                    all(d.get(k) is t and t._version == v for (d, k, t), v in zip(kept[2], kept[3])):
                return kept[0]
        where = [(m._parameters, k, t) for m in self.modules() for k, t in m._parameters.items() if t is not None]
        if grad and any(t.requires_grad for _, _, t in where):
            return None
        where += [(m._buffers, k, t) for m in self.modules() for k, t in m._buffers.items() if t is not None]
        prepared = make()
        self._prepared = (prepared, key, where, [t._version for _, _, t in where])
        return prepared

    def _apply(self, fn, *args, **kwargs):
        self._prepared = None          # .to(), .half(), .cuda() ... replace the parameters
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):
        return {**super().__getstate__(), "_prepared": None}
