"""EG3D's hybrid super-resolution networks (raw neural render + features -> final image).

Each is two StyleGAN2 synthesis blocks driven by the last ``ws`` entry. The feature image and raw
RGB are first resized (bilinear, antialiased) to the module's input resolution; the 2x and 4x
modules' first block does not upsample.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import SR_MODULES
from .nn.layers import SynthesisBlock, preparable, prepare_blocks
from .nn.ops import setup_filter
from .nn.prepared import KeepsPrepared, PreparedBlocks


class HybridSuperresolution(KeepsPrepared, nn.Module):
    """One class for SuperresolutionHybrid2X / 4X / 8X / 8XDC (their state dicts are identical in form)."""

    def __init__(self, kind: str, channels: int, img_resolution: int, w_dim: int, sr_num_fp16_res: int,
                 sr_antialias: bool, widths=None, fused_modconv_default="inference_only", **_ignored):
        super().__init__()
        if kind not in SR_MODULES:
            raise ValueError(f"unknown super-resolution module {kind!r}")
        in_res, out_res, default_widths = SR_MODULES[kind]
        if img_resolution != out_res:
            raise ValueError(f"{kind} produces {out_res}² images, not {img_resolution}²")
        c0, c1 = widths if widths is not None else default_widths
        use_fp16 = sr_num_fp16_res > 0
        clamp = 256 if use_fp16 else None
        self.kind, self.input_resolution, self.sr_antialias = kind, in_res, sr_antialias
        no_up = kind in ("SuperresolutionHybrid2X", "SuperresolutionHybrid4X")
        common = dict(w_dim=w_dim, img_channels=3, use_fp16=use_fp16, conv_clamp=clamp,
                      fused_modconv_default=fused_modconv_default)
        self.block0 = SynthesisBlock(channels, c0, resolution=out_res // 2 if not no_up else in_res,
                                     is_last=False, upsample=not no_up, **common)
        self.block1 = SynthesisBlock(c0, c1, resolution=out_res, is_last=True, **common)
        if kind != "SuperresolutionHybrid8XDC":
            self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]))
        self.prepare_inference = True    # one image without gradients: through PreparedBlocks, kept

    def forward(self, rgb, x, ws, **block_kwargs):
        ws = ws[:, -1:, :].repeat(1, 3, 1)
        if x.shape[-1] != self.input_resolution and not (self.kind == "SuperresolutionHybrid4X"
                                                        and x.shape[-1] >= self.input_resolution):
            size = (self.input_resolution, self.input_resolution)
            # antialiasing only changes a downsampling (upsampling: the same weights, a 7x slower kernel)
            aa = self.sr_antialias and x.shape[-1] > self.input_resolution
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=aa)
            rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=aa)
        noise_mode = preparable(self, (self.block0, self.block1), block_kwargs, ws, x, rgb)
        if noise_mode is not None:
            key = (noise_mode, self.block0.channels_last, self.block1.channels_last, ws.device)
            prepared = self.kept_prepared(ws, key, lambda: self.prepare(ws, noise_mode))
            if prepared is not None:
                return prepared(x, rgb)[1]
        x, rgb = self.block0(x, rgb, ws, **block_kwargs)
        x, rgb = self.block1(x, rgb, ws, **block_kwargs)
        return rgb

    def prepare(self, ws: torch.Tensor, noise_mode: str = "none") -> PreparedBlocks:
        """The two blocks for one appearance, ``ws`` (1, 3, w_dim) as :meth:`forward` reads it (its last
        row, three times), with ``const`` or ``none`` noise: ``(x, rgb) -> (x, image)`` at the input
        resolution, the same to the bit as :meth:`forward` for one image without gradients."""
        return prepare_blocks(((self.block0, ws), (self.block1, ws)), ws.to(torch.float32), noise_mode)
