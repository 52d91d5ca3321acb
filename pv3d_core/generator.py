"""The PV3D generator: appearance mapping, motion-conditioned tri-plane synthesis, volume rendering, SR.

Module and method names follow the official ``TriPlaneGenerator`` so official state dicts load
strictly and code written against the official API (``mapping``, ``synthesis``, ``sample_mixed``)
works unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import GeneratorConfig
from .nn.layers import StyleGAN2Backbone, ToRGBLayer
from .render import cuda_ops
from .render.decoder import OSGDecoder
from .render.rays import pixel_rays, split_camera
from .render.triplane import sample_planes
from .superresolution import HybridSuperresolution


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
        self.channels_last = False        # see set_channels_last
        self.motion_reference = None      # see set_motion_reference
        self._still_cache = None

    def set_channels_last(self, enabled: bool = True) -> "PV3DGenerator":
        """Run the synthesis and super-resolution convolutions on NHWC activations (inference speed).

        Same weights and maths; only the summation order inside convolutions changes (about 1e-6).
        :meth:`ray_march`'s feature image then stays in the renderer's pixel-major layout (NHWC), which
        is what the super-resolution reads.
        """
        from .nn.layers import SynthesisBlock

        self.channels_last = bool(enabled)
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

    def set_motion_reference(self, synthesis) -> "PV3DGenerator":
        """Take the motion from another tri-plane synthesis network (a copy of it is kept): the planes
        at (ws, motion code, t) become this generator's planes at t = 0 (the canonical frame, where no
        motion code acts) plus the reference's change from t = 0 to (motion code, t).

        A pivotal-tuned portrait uses its original generator's synthesis network as the reference:
        tuning on a photo sees only t = 0, so its own motion layers were never asked what to do at
        t > 0 (issue 15: the tuned response to a motion code grew about 2.5x and turned, smearing the
        face), while the original model's change over t is what training taught it. None removes it."""
        import copy

        self.motion_reference = None if synthesis is None else \
            copy.deepcopy(synthesis).requires_grad_(False).eval()
        self._still_cache = None
        return self

    def _still(self, ws, zero_m, zero_t, noise_mode: str, **kw):
        """This generator's canonical planes minus the reference's (what :meth:`planes` adds the
        reference's moving planes to), kept for the last ``ws`` when no gradient is needed."""
        cached = self._still_cache
        if not torch.is_grad_enabled() and cached is not None and cached[1] == noise_mode \
                and cached[0].shape == ws.shape and cached[0].device == ws.device and torch.equal(cached[0], ws):
            return cached[2]
        still = self.backbone.synthesis(ws, zero_m, zero_t, noise_mode=noise_mode, **kw) \
            - self.motion_reference(ws, zero_m, zero_t, noise_mode=noise_mode, **kw)
        if not torch.is_grad_enabled() and noise_mode != "random":
            self._still_cache = (ws.detach().clone(), noise_mode, still)
        return still

    def planes(self, ws, z_motion, t, noise_mode: str = "random", **kw):
        """Tri-planes (N, 3, C, H, W) of appearance ``ws``, motion code and timestamps ``t`` (N,)
        (through :meth:`set_motion_reference`'s reference for t > 0 when one is set)."""
        t = _as_t(t, ws)
        if self.motion_reference is None or not bool(t.any()):
            p = self.backbone.synthesis(ws, z_motion, t, noise_mode=noise_mode, **kw)
        else:
            zero_m, zero_t = torch.zeros_like(z_motion), torch.zeros_like(t)
            p = self._still(ws, zero_m, zero_t, noise_mode, **kw) \
                + self.motion_reference(ws, z_motion, t, noise_mode=noise_mode, **kw)
        return p.view(len(p), 3, self.plane_channels, p.shape[-2], p.shape[-1])

    def ray_march(self, planes, c, neural_rendering_resolution=None, deterministic: bool = True) -> dict:
        """Volume render tri-planes from cameras ``c`` (N, 25) at the neural resolution r.

        ``feature_image`` (N, C, r, r) decoder features; ``image_depth`` (N, 1, r, r) the expected
        distance along each (unit) ray from the camera centre; ``image_alpha`` the accumulated opacity;
        ``ray_origins`` and ``ray_directions`` (N, r*r, 3) the rays, row by row.
        """
        res = neural_rendering_resolution or self.neural_rendering_resolution
        cam2world, intrinsics = split_camera(c)
        origins, dirs = pixel_rays(cam2world, intrinsics, res)
        n = origins.shape[0]
        # CUDA kernels when available (inference on a GPU), else the PyTorch reference path
        feats, depth, alpha = cuda_ops.render_rays_fast(planes, self.decoder, origins, dirs, self.rendering_kwargs,
                                                        deterministic)
        # the renderer gives (N, rays, C), rays row by row: that is NHWC; NCHW models get a contiguous copy
        image = feats.reshape(n, res, res, feats.shape[-1]).permute(0, 3, 1, 2)
        return {"feature_image": image if self.channels_last else image.contiguous(),
                "image_depth": depth.permute(0, 2, 1).reshape(n, 1, res, res),
                "image_alpha": alpha.permute(0, 2, 1).reshape(n, 1, res, res),
                "ray_origins": origins, "ray_directions": dirs}

    def volume_rendering_backend(self) -> str:
        """What :meth:`ray_march` runs on for this model's device and decoder size, in one line: the fused
        kernels, or PyTorch and why (kernels that did not compile or failed their self-check...)."""
        return cuda_ops.describe(next(self.parameters()).device, self.decoder)

    def render_planes(self, planes, ws, c, neural_rendering_resolution=None, deterministic: bool = True,
                      fused_modconv=None, superresolution: bool = True) -> dict:
        """Volume render + super-resolve tri-planes from cameras ``c`` (N, 25).

        :meth:`ray_march`'s outputs plus ``image_raw`` (the feature image through ``to_img_raw``) and,
        unless ``superresolution`` is False, the final ``image``.
        """
        out = self.ray_march(planes, c, neural_rendering_resolution, deterministic)
        rgb = self.to_img_raw(out["feature_image"], ws[:, 0, :], fused_modconv=False).to(torch.float32)
        out["image_raw"] = rgb
        if superresolution:
            out["image"] = self.superresolution(rgb, out["feature_image"], ws,
                                                noise_mode=self.rendering_kwargs["superresolution_noise_mode"],
                                                fused_modconv=fused_modconv)
        return out

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

    def density(self, planes, coordinates) -> torch.Tensor:
        """Raw density σ (N, M) at points (N, M, 3): on the CPU only the decoder's density output runs
        (:meth:`OSGDecoder.sigma`); elsewhere the shared query op (the CUDA kernel when it can run)."""
        box = self.rendering_kwargs["box_warp"]
        if planes.device.type != "cpu":
            return cuda_ops.query(planes, self.decoder, coordinates, torch.zeros_like(coordinates), box)["sigma"][..., 0]
        return self.decoder.sigma(sample_planes(planes, coordinates, box))[..., 0]

    def point_colours(self, planes, ws, coordinates) -> torch.Tensor:
        """(N, M, 3) in about [-1, 1]: the raw neural render's colour of points (N, M, 3), i.e. the
        decoder's features there through ``to_img_raw`` (no super-resolution, no view dependence)."""
        feats = cuda_ops.query(planes, self.decoder, coordinates, torch.zeros_like(coordinates),
                               self.rendering_kwargs["box_warp"])["rgb"]
        img = feats.permute(0, 2, 1)[..., None]                      # (N, C, M, 1): a 1-pixel-wide image
        return self.to_img_raw(img, ws[:, 0, :], fused_modconv=False)[..., 0].permute(0, 2, 1)

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
