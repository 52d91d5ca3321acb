"""StyleGAN2 building blocks with the official module and parameter names.

Names (``affine``, ``conv0``, ``torgb``, ``noise_const``, ``resample_filter`` ...) follow the official
state dicts so that official checkpoints load strictly, with no renaming table.
"""
from __future__ import annotations

import math
import weakref

import torch
from torch import nn

from . import prepared as P
from .ops import (bias_act, conv2d_resample, default_gain, modulated_conv2d, normalize_2nd_moment, inference_shortcuts, is_nhwc,
                  needs_grad, setup_filter)


class FullyConnectedLayer(nn.Module):
    """Equalised-learning-rate linear layer with bias and activation."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        return P.linear_act(x, *self.scaled(x.dtype), self.activation)

    def scaled(self, dtype: torch.dtype = torch.float32):
        """(weight, bias) times their gains, as the layer applies them."""
        w = self.weight.to(dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        return w, b

    def prepare(self) -> P.Dense:
        return P.Dense(*self.scaled(), self.activation)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """Equalised-learning-rate convolution with optional FIR up/downsampling."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1, resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = None, trainable: bool = True):
        super().__init__()
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = default_gain(activation)
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        bias_t = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias_t) if bias_t is not None else None
        else:
            self.register_buffer("weight", weight)
            if bias_t is not None:
                self.register_buffer("bias", bias_t)
            else:
                self.bias = None

    def forward(self, x, gain: float = 1.0):
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample(x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                            padding=self.padding, flip_weight=(self.up == 1))
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp, inplace=True)


class MappingNetwork(nn.Module):
    """z (and a conditioning label c) -> w, broadcast to ``num_ws`` copies, with truncation."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 embed_features: int | None = None, layer_features: int | None = None,
                 activation: str = "lrelu", lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.998):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
        embed_features = w_dim if embed_features is None else embed_features
        if c_dim == 0:
            embed_features = 0
        layer_features = w_dim if layer_features is None else layer_features
        feats = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(feats[i], feats[i + 1], activation=activation,
                                                        lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi: float = 1, truncation_cutoff: int | None = None,
                update_emas: bool = False):
        x = None
        if self.z_dim > 0:
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_emas and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution + noise + bias + activation (optionally upsampling 2x)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, activation: str = "lrelu", resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = None):
        super().__init__()
        self.in_channels, self.out_channels, self.resolution, self.up = in_channels, out_channels, resolution, up
        self.use_noise, self.activation, self.conv_clamp = use_noise, activation, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = default_gain(activation)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self._weight_memo = None     # (key, styles, weight) of the last inference call; see _inference_weight
        self._plain_memo = None      # (key, weight ref, weight laid out, its squares); see _plain_weight
        self.modulates_input = False  # a new style every call (a motion layer): see _forward_inference

    def forward(self, x, w, noise_mode: str = "random", fused_modconv: bool = True, gain: float = 1.0):
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be random, const or none, got {noise_mode!r}")
        styles = self.affine(w)
        if (fused_modconv and x.shape[0] == 1 and x.dtype == torch.float32 and self.activation in _HOMOGENEOUS
                and gain > 0 and inference_shortcuts() and not needs_grad(x, styles, self.weight, self.bias)):
            return self._forward_inference(x, styles, noise_mode, gain)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=(self.up == 1),
                             fused_modconv=fused_modconv)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=clamp,
                        inplace=True)

    def _forward_inference(self, x, styles, noise_mode: str, gain: float):
        """The same layer for one image without gradients, in fewer passes over the activations.

        The activation is positively homogeneous (lrelu(g y) = g lrelu(y) for g > 0), so the gain moves
        into the weight, the bias and the noise; the bias is added inside the convolution when one gives
        the output; the noise is added in place. Then the activation and the clamp, in place. Only the
        rounding differs from the general path (about 1e-7 relative)."""
        g = self.act_gain * gain
        noise = None
        if self.use_noise and noise_mode != "none":
            noise = (torch.randn([1, 1, self.resolution, self.resolution], device=x.device)
                     if noise_mode == "random" else self.noise_const)
            noise = noise * (self.noise_strength * g)
        if self.modulates_input and self.up == 1:
            # A motion layer's style is new every frame: modulate the activations, keep the weight.
            weight, weight_sq = self._plain_weight(is_nhwc(x))
            return P.run_input_modulated(x, weight, weight_sq, styles, g, self.bias * g, noise,
                                         resample_filter=self.resample_filter, padding=self.padding,
                                         activation=self.activation, clamp=self._clamp(gain))
        weight = self._inference_weight(styles, g, is_nhwc(x))
        return P.run_modulated(x, weight, self.bias * g, noise, resample_filter=self.resample_filter, up=self.up,
                               padding=self.padding, activation=self.activation, clamp=self._clamp(gain))

    def _clamp(self, gain: float) -> float | None:
        return self.conv_clamp * gain if self.conv_clamp is not None else None

    def prepares(self) -> bool:
        """Whether the one-image inference path (and so :meth:`prepare`) applies to this layer."""
        return self.activation in _HOMOGENEOUS

    def prepare(self, w: torch.Tensor | None, noise_mode: str, nhwc: bool) -> P.Conv:
        """The layer for style vector ``w`` (1, w_dim) with ``const`` or ``none`` noise, its weight, bias
        and noise times the gain (for a motion layer, ``w`` None: the unmodulated weight of
        :meth:`_plain_weight`, which :func:`~pv3d_core.nn.prepared.run_input_modulated` convolves at each
        call)."""
        g = self.act_gain
        if w is not None:
            weight = self._inference_weight(self.affine(w), g, nhwc)
        elif self.up == 1:
            weight = self._plain_weight(nhwc)[0]
        else:
            raise ValueError("a motion layer (no style given) runs without upsampling")
        noise = self.noise_const * (self.noise_strength * g) if self.use_noise and noise_mode == "const" else None
        return P.Conv(weight, self.bias * g, noise, self.resample_filter, self.up, self.padding, self.activation,
                      self._clamp(1.0))

    def _inference_weight(self, styles, gain: float, nhwc: bool) -> torch.Tensor:
        """The modulated, demodulated weight times ``gain`` for one style (1, in_channels).

        The last one is kept and reused while the style and the parameters are unchanged: outside the
        motion layers every layer sees the same style frame after frame (an orbit, a scrub). The key
        has the weight's storage and version, so loading or training weights invalidates it (a write
        through ``.data`` bypasses the version and is not seen). For NHWC activations it is laid out as
        the NHWC convolution reads it (for an upsampling layer, the transposed convolution's weight is
        the transpose), so no call copies it again. The price is the weight held once more: 7 MB for
        the tiny preset's layers, 130 MB for the released configuration's."""
        key = (self.weight.data_ptr(), self.weight._version, gain, styles.device, nhwc)
        memo = self._weight_memo
        if memo is not None and memo[0] == key and memo[1]() is self.weight and torch.equal(memo[2], styles):
            return memo[3]
        w = P.modulated_weight(self.weight, styles, gain, nhwc, self.up)
        self._weight_memo = (key, weakref.ref(self.weight), styles.detach().clone(), w)
        return w

    def _plain_weight(self, nhwc: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The unmodulated weight as :meth:`prepare` lays it out for a motion layer, and its
        :func:`~pv3d_core.nn.prepared.weight_squares`: the same tensors while the weight is unchanged (keyed
        as :meth:`_inference_weight`), so that what a convolution keeps per weight stays valid."""
        key = (self.weight.data_ptr(), self.weight._version, self.weight.device, nhwc)
        memo = self._plain_memo
        if memo is not None and memo[0] == key and memo[1]() is self.weight:
            return memo[2], memo[3]
        with torch.no_grad():
            weight = self.weight.detach()
            laid = weight.contiguous(memory_format=torch.channels_last) if nhwc else weight
            self._plain_memo = (key, weakref.ref(self.weight), laid, P.weight_squares(weight))
        return self._plain_memo[2], self._plain_memo[3]

    def _apply(self, fn, *args, **kwargs):
        self._weight_memo = self._plain_memo = None   # .to(), .half(), .cuda() ... may replace the weight's storage
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):
        # copies and pickles do not carry the memos (nor a weakref)
        return {**super().__getstate__(), "_weight_memo": None, "_plain_memo": None}


_HOMOGENEOUS = ("lrelu", "relu", "linear")   # activations a positive gain passes through


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution without demodulation (features -> colour channels)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x, w, fused_modconv: bool = True):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp, inplace=True)

    def prepare(self, w: torch.Tensor) -> P.ToRGB:
        """The layer for style vector ``w`` (1, w_dim): the weight modulated as the fused path does it."""
        styles = self.affine(w) * self.weight_gain
        out_ch, in_ch, kh, kw = self.weight.shape
        weight = (self.weight.unsqueeze(0) * styles.reshape(1, 1, -1, 1, 1)).reshape(-1, in_ch, kh, kw)
        return P.ToRGB(weight, self.bias, self.conv_clamp)


class MotionTimeFuser(nn.Module):
    """PV3D's motion layer ("TimeConvFuser"): (motion code x timestamp) -> MLP -> modulated conv, added.

    m = FC_lrelu(z_m * t); m = FC_lrelu(m); m = FC_linear(m); x <- x + SynthesisLayer(x; style=m).
    The code is scaled by t *before* the first layer, so at t = 0 every motion code gives the same
    frame. The official layers are always 512 wide whatever w_dim is.
    """

    def __init__(self, resolution: int, channels: int, motion_dim: int = 512):
        super().__init__()
        self.motion_dim = motion_dim
        self.affine = FullyConnectedLayer(motion_dim, motion_dim, activation="lrelu")
        self.motion_mlp = nn.Sequential(
            FullyConnectedLayer(motion_dim, motion_dim, activation="lrelu"),
            FullyConnectedLayer(motion_dim, motion_dim),
        )
        self.conv = SynthesisLayer(channels, channels, w_dim=motion_dim, resolution=resolution, conv_clamp=None)
        self.conv.modulates_input = True

    def motion_style(self, z_motion, t):
        m = self.affine(z_motion * t.reshape(-1, 1).to(z_motion.dtype))
        return self.motion_mlp(m)

    def forward(self, x, z_motion, t, fused_modconv: bool = True, noise_mode: str = "random"):
        style = self.motion_style(z_motion, t)
        return x + self.conv(x, style, fused_modconv=fused_modconv, noise_mode=noise_mode)

    def prepare(self, noise_mode: str, nhwc: bool) -> P.MotionConv:
        mlp = (self.affine.prepare(), *(m.prepare() for m in self.motion_mlp), self.conv.affine.prepare())
        return P.MotionConv(mlp, self.conv.act_gain, self.conv._plain_weight(nhwc)[1],
                            self.conv.prepare(None, noise_mode, nhwc))


def _resolve_fused(fused_modconv, default, training: bool) -> bool:
    if fused_modconv is None:
        fused_modconv = default
    if fused_modconv == "inference_only":
        fused_modconv = not training
    return bool(fused_modconv)


class SynthesisBlock(nn.Module):
    """One resolution of the StyleGAN2 "skip" synthesis network, with PV3D's optional motion layer.

    ``upsample=False`` gives the super-resolution networks' no-upsampling variant (the input is
    already at this block's resolution and the skip image is not upsampled).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, architecture: str = "skip", resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = 256, use_fp16: bool = False, fused_modconv_default=True,
                 fuse_motion_time: bool = False, motion_dim: int = 512, upsample: bool = True,
                 **layer_kwargs):
        super().__init__()
        if architecture != "skip":
            raise ValueError("only the 'skip' synthesis architecture is used by PV3D")
        self.in_channels, self.w_dim, self.resolution = in_channels, w_dim, resolution
        self.img_channels, self.is_last, self.use_fp16 = img_channels, is_last, use_fp16
        self.fused_modconv_default, self.fuse_motion_time, self.upsample = fused_modconv_default, fuse_motion_time, upsample
        self.channels_last = False   # NHWC activations: faster convolutions on CPU (oneDNN) and tensor cores
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                        up=2 if upsample else 1, resample_filter=resample_filter,
                                        conv_clamp=conv_clamp, **layer_kwargs)
            self.num_conv += 1
        if fuse_motion_time:
            self.motion_time_fuser = MotionTimeFuser(resolution, out_channels, motion_dim)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, **layer_kwargs)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.num_torgb += 1

    def forward(self, x, img, ws, z_motion=None, t=None, force_fp32: bool = False, fused_modconv=None,
                noise_mode: str = "random", update_emas: bool = False):
        w_iter = iter(ws.unbind(dim=1))
        if ws.device.type != "cuda":
            force_fp32 = True
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
        fused = _resolve_fused(fused_modconv, self.fused_modconv_default, self.training)
        kw = dict(fused_modconv=fused, noise_mode=noise_mode)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1]).to(memory_format=fmt)
            w0 = next(w_iter)
            x = self.conv1(x, w0, **kw)
            if self.fuse_motion_time:
                x = self.motion_time_fuser(x, z_motion, t, **kw)
        else:
            x = x.to(dtype=dtype, memory_format=fmt)
            w0, w1 = next(w_iter), next(w_iter)
            x = self.conv0(x, w0, **kw)
            if self.fuse_motion_time:
                x = self.motion_time_fuser(x, z_motion, t, **kw)
            x = self.conv1(x, w1, **kw)

        # NHWC blocks keep the skip image NHWC, the last one too: the tri-planes (N, 3, C, H, W) are then
        # a strided view whose channels are innermost, which is the layout the renderer wants (a
        # conversion to NCHW here cost more than the whole 2x upsampling before it)
        img, own = P.upsampled_skip(img, self.upsample, self.resample_filter, fmt)
        y = self.torgb(x, next(w_iter), fused_modconv=fused).to(torch.float32, memory_format=fmt)
        if img is None:
            img = y
        elif own and not needs_grad(img, y):
            img = img.add_(y)
        else:
            img = img + y
        return x, img

    def layers(self):
        return [m for m in (getattr(self, "conv0", None), self.conv1,
                            self.motion_time_fuser.conv if self.fuse_motion_time else None) if m is not None]

    def prepare(self, ws: torch.Tensor, noise_mode: str) -> P.Block:
        """The block for appearance ``ws`` (1, num_conv + num_torgb, w_dim), fp32, one image (see
        :class:`~pv3d_core.nn.prepared.PreparedBlocks`)."""
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        nhwc = self.channels_last
        w = ws.unbind(dim=1)
        const = conv0 = None
        if self.in_channels == 0:
            const = self.const.to(torch.float32).unsqueeze(0).to(memory_format=fmt)
            conv1, torgb = self.conv1.prepare(w[0], noise_mode, nhwc), self.torgb.prepare(w[1])
        else:
            conv0 = self.conv0.prepare(w[0], noise_mode, nhwc)
            conv1, torgb = self.conv1.prepare(w[1], noise_mode, nhwc), self.torgb.prepare(w[2])
        motion = self.motion_time_fuser.prepare(noise_mode, nhwc) if self.fuse_motion_time else None
        return P.Block(const, conv0, motion, conv1, torgb, self.resample_filter, self.upsample, fmt)


def prepare_blocks(blocks_ws, ws: torch.Tensor, noise_mode: str) -> P.PreparedBlocks:
    """:class:`~pv3d_core.nn.prepared.PreparedBlocks` of (block, its rows of ``ws``) pairs."""
    if noise_mode not in ("const", "none"):
        raise ValueError(f"prepared blocks have const or none noise, not {noise_mode!r}")
    with torch.no_grad():   # ws kept as a copy: a caller may write to its tensor later (an optimised latent)
        return P.PreparedBlocks(ws.detach().clone(), tuple(block.prepare(w, noise_mode) for block, w in blocks_ws))


def preparable(module: nn.Module, blocks, kw: dict, *inputs) -> str | None:
    """The noise mode with which ``module`` may run its ``blocks`` prepared (one image, no gradients, the
    one-image path's conditions), else None. ``kw``: the blocks' keyword arguments; ``inputs``: the
    tensors going in (their batch must be 1)."""
    noise_mode = kw.get("noise_mode", "random")
    if (not getattr(module, "prepare_inference", True) or not inference_shortcuts() or module.training
            or any(x.shape[0] != 1 for x in inputs) or noise_mode not in ("const", "none")
            or not set(kw) <= {"noise_mode", "fused_modconv", "force_fp32", "update_emas"}):
        return None
    fused = kw.get("fused_modconv")
    if not all(_resolve_fused(fused, b.fused_modconv_default, False) for b in blocks):
        return None
    if inputs[0].device.type == "cuda" and not kw.get("force_fp32") and any(b.use_fp16 for b in blocks):
        return None
    if not all(layer.prepares() for b in blocks for layer in b.layers()) or needs_grad(*inputs):
        return None
    return noise_mode


class SynthesisNetwork(P.KeepsPrepared, nn.Module):
    """StyleGAN2 synthesis network (skip architecture) with motion layers in the blocks <= 32."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 4, motion_resolutions=(4, 8, 16, 32),
                 motion_dim: int = 512, **block_kwargs):
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"synthesis resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        log2 = int(math.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(2, log2 + 1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim,
                                   resolution=res, img_channels=img_channels, is_last=(res == img_resolution),
                                   use_fp16=(res >= fp16_resolution),
                                   fuse_motion_time=(res in motion_resolutions), motion_dim=motion_dim,
                                   **block_kwargs)
            self.num_ws += block.num_conv
            if res == img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)
        self.prepare_inference = True    # one image without gradients: through PreparedBlocks, kept

    def forward(self, ws, z_motion, t, **block_kwargs):
        ws = ws.to(torch.float32)
        t = torch.as_tensor(t, dtype=torch.float32, device=ws.device)
        t = (t.expand(ws.shape[0]) if t.ndim == 0 else t).reshape(-1)
        z_motion = z_motion.to(torch.float32)
        blocks = [getattr(self, f"b{res}") for res in self.block_resolutions]
        noise_mode = preparable(self, blocks, block_kwargs, ws, z_motion)
        if noise_mode is not None:
            key = (noise_mode, tuple(b.channels_last for b in blocks), ws.device)
            prepared = self.kept_prepared(ws, key, lambda: self.prepare(ws, noise_mode))
            if prepared is not None:
                return prepared(None, None, z_motion, t)[1]
        x = img = None
        for block, cur in self.blocks_ws(ws):
            x, img = block(x, img, cur, z_motion, t, **block_kwargs)
        return img

    def blocks_ws(self, ws: torch.Tensor) -> list:
        """(block, the rows of ``ws`` it reads) for each block: consecutive blocks share one row (the
        ToRGB of one and the first convolution of the next)."""
        pairs, w_idx = [], 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            pairs.append((block, ws.narrow(1, w_idx, block.num_conv + block.num_torgb)))
            w_idx += block.num_conv
        return pairs

    def prepare(self, ws: torch.Tensor, noise_mode: str = "const") -> P.PreparedBlocks:
        """The blocks for one appearance ``ws`` (1, num_ws, w_dim) with ``const`` or ``none`` noise, in
        fp32: what does not change with the motion code and the timestamp is made here, once. Run from
        ``(None, None, z_motion, t)``, their image is :meth:`forward`'s for one image without gradients, to
        the bit. Valid while the parameters are unchanged."""
        ws = ws.to(torch.float32)
        return prepare_blocks(self.blocks_ws(ws), ws, noise_mode)


class StyleGAN2Backbone(nn.Module):
    """Mapping + synthesis, as the official ``backbone`` (the tri-plane generator's StyleGAN2)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: dict | None = None, **synthesis_kwargs):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                      **(mapping_kwargs or {}))


# ---------------------------------------------------------------------------------------------
# Discriminator blocks


class DiscriminatorBlock(nn.Module):
    """ResNet discriminator block (fromrgb on the first block, two convs, a downsampling skip)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int,
                 img_channels: int, first_layer_idx: int, architecture: str = "resnet",
                 activation: str = "lrelu", resample_filter=(1, 3, 3, 1), conv_clamp: float | None = None,
                 use_fp16: bool = False, freeze_layers: int = 0, **_ignored):
        super().__init__()
        if architecture != "resnet":
            raise ValueError("only the 'resnet' discriminator architecture is used by PV3D")
        self.in_channels, self.resolution, self.img_channels = in_channels, resolution, img_channels
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        idx = [first_layer_idx]

        def trainable():
            t = idx[0] >= freeze_layers
            idx[0] += 1
            return t

        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                       trainable=trainable(), conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
                                 trainable=trainable(), conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
                                 trainable=trainable(), resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                trainable=trainable(), resample_filter=resample_filter)
        self.num_layers = idx[0] - first_layer_idx

    def forward(self, x, img, force_fp32: bool = False):
        dev = (x if x is not None else img).device
        dtype = torch.float16 if self.use_fp16 and not force_fp32 and dev.type == "cuda" else torch.float32
        if x is not None:
            x = x.to(dtype)
        if self.in_channels == 0:
            y = self.fromrgb(img.to(dtype))
            x = x + y if x is not None else y
            img = None
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv0(x)
        x = self.conv1(x, gain=math.sqrt(0.5))
        return y + x, img


class MinibatchStdLayer(nn.Module):
    def __init__(self, group_size: int | None, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x):
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)
        y = (y + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4])
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch std, conv, fc, output projected onto the mapped camera."""

    def __init__(self, in_channels: int, cmap_dim: int, resolution: int, img_channels: int,
                 architecture: str = "resnet", mbstd_group_size: int | None = 4, mbstd_num_channels: int = 1,
                 activation: str = "lrelu", conv_clamp: float | None = None):
        super().__init__()
        self.cmap_dim, self.resolution = cmap_dim, resolution
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3,
                                activation=activation, conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, cmap):
        x = x.to(torch.float32)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x
