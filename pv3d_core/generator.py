"""The PV3D generator: appearance mapping, motion-conditioned tri-plane synthesis, volume rendering, SR.

Module and method names follow the official ``TriPlaneGenerator`` so official state dicts load
strictly and code written against the official API (``mapping``, ``synthesis``, ``sample_mixed``)
works unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import GeneratorConfig
from .nn.layers import FullyConnectedLayer, StyleGAN2Backbone, ToRGBLayer
from .render.rays import pixel_rays, split_camera
from .render import cuda_ops
from .superresolution import HybridSuperresolution


class OSGDecoder(nn.Module):
    """Tri-plane features (averaged over the planes) -> density and colour/features."""

    def __init__(self, n_features: int, decoder_lr_mul: float = 1.0, output_dim: int = 32, hidden_dim: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            FullyConnectedLayer(n_features, hidden_dim, lr_multiplier=decoder_lr_mul),
            nn.Softplus(),
            FullyConnectedLayer(hidden_dim, 1 + output_dim, lr_multiplier=decoder_lr_mul),
        )

    def forward(self, sampled_features, ray_directions=None):
        x = sampled_features.mean(1)
        n, m, c = x.shape
        x = self.net(x.reshape(n * m, c)).reshape(n, m, -1)
        rgb = torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001
        return {"rgb": rgb, "sigma": x[..., 0:1]}


class PV3DGenerator(nn.Module):
    def __init__(self, config: GeneratorConfig):
        super().__init__()
        cfg = config.validate()
        self.config = cfg
        self.z_dim, self.c_dim, self.w_dim = cfg.z_dim, cfg.c_dim, cfg.w_dim
        self.motion_dim = cfg.motion_dim
        self.img_resolution, self.img_channels = cfg.img_resolution, cfg.img_channels
        self.plane_channels = cfg.plane_channels
        self.rendering_kwargs = dict(cfg.rendering_kwargs)
        self.neural_rendering_resolution = cfg.neural_rendering_resolution
        self.backbone = StyleGAN2Backbone(
            cfg.z_dim, cfg.c_dim, cfg.w_dim, img_resolution=cfg.plane_resolution,
            img_channels=cfg.plane_channels * 3, mapping_kwargs=cfg.mapping_kwargs,
            channel_base=cfg.channel_base, channel_max=cfg.channel_max, num_fp16_res=cfg.num_fp16_res,
            conv_clamp=cfg.conv_clamp, fused_modconv_default=cfg.fused_modconv_default,
            motion_resolutions=tuple(cfg.motion_resolutions), motion_dim=cfg.motion_dim)
        sr_kw = {k: v for k, v in cfg.sr_kwargs.items() if k not in ("channel_base", "channel_max")}
        self.superresolution = HybridSuperresolution(
            cfg.sr_module, channels=cfg.plane_channels, img_resolution=cfg.img_resolution, w_dim=cfg.w_dim,
            sr_num_fp16_res=cfg.sr_num_fp16_res, sr_antialias=self.rendering_kwargs["sr_antialias"],
            widths=cfg.sr_channels, **sr_kw)
        self.decoder = OSGDecoder(cfg.plane_channels, self.rendering_kwargs.get("decoder_lr_mul", 1),
                                  output_dim=cfg.plane_channels)
        self.to_img_raw = ToRGBLayer(cfg.plane_channels, 3, w_dim=cfg.w_dim, conv_clamp=256)

    def set_channels_last(self, enabled: bool = True) -> "PV3DGenerator":
        """Run the synthesis and super-resolution convolutions on NHWC activations (inference speed).

        Same weights and maths; only the summation order inside convolutions changes (about 1e-6).
        """
        from .nn.layers import SynthesisBlock

        for m in self.modules():
            if isinstance(m, SynthesisBlock):
                m.channels_last = bool(enabled)
        return self

    # ------------------------------------------------------------------ official API
    @property
    def num_ws(self) -> int:
        return self.backbone.num_ws

    def mapping(self, z, c, truncation_psi: float = 1, truncation_cutoff=None, update_emas: bool = False):
        if self.rendering_kwargs["c_gen_conditioning_zero"]:
            c = torch.zeros_like(c)
        return self.backbone.mapping(z, c * self.rendering_kwargs.get("c_scale", 0),
                                     truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                                     update_emas=update_emas)

    def planes(self, ws, z_motion, t, noise_mode: str = "random", **kw):
        """Tri-planes (N, 3, C, H, W) of appearance ``ws``, motion code and timestamps ``t`` (N,)."""
        p = self.backbone.synthesis(ws, z_motion, _as_t(t, ws), noise_mode=noise_mode, **kw)
        return p.view(len(p), 3, self.plane_channels, p.shape[-2], p.shape[-1])

    def render_planes(self, planes, ws, c, neural_rendering_resolution=None, deterministic: bool = True,
                      fused_modconv=None):
        """Volume render + super-resolve tri-planes from cameras ``c`` (N, 25).

        ``image_depth`` is the expected distance along each (unit) ray from the camera centre;
        ``image_alpha`` the accumulated opacity.
        """
        res = neural_rendering_resolution or self.neural_rendering_resolution
        cam2world, intrinsics = split_camera(c)
        origins, dirs = pixel_rays(cam2world, intrinsics, res)
        n = origins.shape[0]
        # CUDA kernels when available (inference on a GPU), else the PyTorch reference path
        feats, depth, alpha = cuda_ops.render_rays_fast(planes, self.decoder, origins, dirs, self.rendering_kwargs,
                                                        deterministic)
        feature_image = feats.permute(0, 2, 1).reshape(n, feats.shape[-1], res, res).contiguous()
        depth_image = depth.permute(0, 2, 1).reshape(n, 1, res, res)
        alpha_image = alpha.permute(0, 2, 1).reshape(n, 1, res, res)
        rgb = self.to_img_raw(feature_image, ws[:, 0, :], fused_modconv=False).to(torch.float32)
        image = self.superresolution(rgb, feature_image, ws,
                                     noise_mode=self.rendering_kwargs["superresolution_noise_mode"],
                                     fused_modconv=fused_modconv)
        return {"image": image, "image_raw": rgb, "image_depth": depth_image, "image_alpha": alpha_image,
                "feature_image": feature_image}

    def synthesis(self, ws, z_motion, t, c, neural_rendering_resolution=None, noise_mode: str = "const",
                  deterministic: bool = True, update_emas: bool = False, fused_modconv=None, planes=None, **_):
        """Frames of (ws, motion code, timestamps) seen from cameras ``c``.

        ``deterministic`` selects the display/test sampling (evenly spaced coarse depths and
        importance quantiles); training passes False for jittered, random sampling.
        Pass precomputed ``planes`` to re-render cached tri-planes from a new camera.
        """
        if planes is None:
            planes = self.planes(ws, z_motion, t, noise_mode=noise_mode, fused_modconv=fused_modconv)
        out = self.render_planes(planes, ws, c, neural_rendering_resolution, deterministic, fused_modconv)
        out["planes"] = planes
        return out

    def sample_mixed(self, coordinates, directions, ws, z_motion, t, noise_mode: str = "const", planes=None, **kw):
        """Density and colour features at points (N, M, 3): dict(sigma (N, M, 1), rgb (N, M, C))."""
        if planes is None:
            planes = self.planes(ws, z_motion, t, noise_mode=noise_mode, **kw)
        return cuda_ops.query(planes, self.decoder, coordinates, directions, self.rendering_kwargs["box_warp"])

    def forward(self, z, z_motion, t, c, c0=None, truncation_psi: float = 1, truncation_cutoff=None,
                neural_rendering_resolution=None, update_emas: bool = False, noise_mode: str = "random",
                deterministic: bool = False):
        ws = self.mapping(z, c if c0 is None else c0, truncation_psi=truncation_psi,
                          truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, z_motion, t, c, neural_rendering_resolution=neural_rendering_resolution,
                              noise_mode=noise_mode, deterministic=deterministic)


def _as_t(t, ref: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float32, device=ref.device)
    if t.ndim == 0:
        t = t.expand(ref.shape[0])
    return t.reshape(-1)
