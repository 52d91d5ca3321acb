"""PV3D's discriminators: the camera-conditioned image discriminator (EG3D's dual discriminator) and
the video discriminator that judges a pair of frames with both cameras and their time gap."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import DiscriminatorConfig
from .nn.layers import DiscriminatorBlock, DiscriminatorEpilogue, MappingNetwork
from .nn.ops import setup_filter


def filtered_resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize (EG3D's default 'antialiased' filtered resizing)."""
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class _ResNetDiscriminator(nn.Module):
    """Blocks from the input resolution down to 8², then the 4² epilogue projected on mapped c."""

    def __init__(self, cfg: DiscriminatorConfig, in_channels: int, c_dim: int):
        super().__init__()
        self.c_dim, self.img_resolution, self.img_channels = c_dim, cfg.img_resolution, in_channels
        log2 = int(math.log2(cfg.img_resolution))
        self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]
        channels = {r: min(cfg.channel_base // r, cfg.channel_max) for r in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (log2 + 1 - cfg.num_fp16_res), 8)
        cmap_dim = channels[4] if cfg.cmap_dim is None else cfg.cmap_dim
        if c_dim == 0:
            cmap_dim = 0
        common = dict(img_channels=in_channels, architecture=cfg.architecture, conv_clamp=cfg.conv_clamp)
        layer = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(channels[res] if res < cfg.img_resolution else 0, channels[res],
                                       channels[res // 2], resolution=res, first_layer_idx=layer,
                                       use_fp16=(res >= fp16_resolution), **cfg.block_kwargs, **common)
            setattr(self, f"b{res}", block)
            layer += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **cfg.mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, **cfg.epilogue_kwargs,
                                        **common)
        self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]))
        self.disc_c_noise = cfg.disc_c_noise

    def _run(self, img, c):
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img)
        cmap = None
        if self.c_dim > 0:
            if self.disc_c_noise > 0:
                c = c + torch.randn_like(c) * c.std(0) * self.disc_c_noise
            cmap = self.mapping(None, c)
        return self.b4(x, cmap)


class ImageDiscriminator(_ResNetDiscriminator):
    """EG3D's DualDiscriminator: final image + raw image resized to it (6 channels), camera-conditioned.

    ``forward({"image": (N,3,H,W), "image_raw": (N,3,h,w)}, c (N,25))`` -> logits (N, 1).
    """

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__(cfg, in_channels=cfg.img_channels * 2, c_dim=cfg.c_dim)

    def forward(self, img: dict, c, update_emas: bool = False, **_):
        raw = filtered_resize(img["image_raw"], img["image"].shape[-1])
        return self._run(torch.cat([img["image"], raw], 1), c)


class VideoDiscriminator(_ResNetDiscriminator):
    """Two final frames of a clip + one channel holding t2 - t1 (7 channels), both cameras (50).

    ``forward({"image": (B*2,3,H,W)}, ts (B,2), c (B*2,25))`` -> (logits (B, 1), None), as the official.
    """

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__(cfg, in_channels=cfg.img_channels * 2 + 1, c_dim=cfg.c_dim * 2)

    @staticmethod
    def make_input(images, ts):
        frames = ts.shape[1]
        bt, ch, h, w = images.shape
        x = images.reshape(bt // frames, frames * ch, h, w)
        gap = (ts[:, 1] - ts[:, 0]).to(images.dtype).view(-1, 1, 1, 1).expand(-1, 1, h, w)
        return torch.cat([x, gap], 1)

    def forward(self, img: dict, ts, c, return_input: bool = False, update_emas: bool = False, **_):
        x = self.make_input(img["image"], ts)
        c = c.reshape(c.shape[0] // ts.shape[1], -1)
        out = self._run(x, c)
        return (out, x) if return_input else (out, None)
