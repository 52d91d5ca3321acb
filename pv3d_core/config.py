"""Model configurations: one source of truth for every size, and the named presets.

The configs hold the official constructor arguments (so a config round-trips to and from the
``config["model_config"]["pv3d"]`` dict of an official checkpoint) plus a few fields of ours that
the official code hard-codes (tri-plane resolution, super-resolution widths, motion width); their
defaults are the official values.

Presets:
- ``pv3d-vox512``: exactly the released VoxCeleb 512² configuration (44.3 M generator parameters).
- ``tiny``: a CPU-trainable model (64² tri-planes, 32² neural rendering, 2x super-resolution to
  128²) — the size of the embedded default model and of the tests.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields

from .errors import UsageError

OFFICIAL_SR_PREFIX = "lib.models.videg3d.networks.superresolution."

#: super-resolution module name -> (input resolution, output resolution, default widths)
SR_MODULES = {
    "SuperresolutionHybrid2X": (64, 128, (128, 64)),
    "SuperresolutionHybrid4X": (128, 256, (128, 64)),
    "SuperresolutionHybrid8X": (128, 512, (128, 64)),
    "SuperresolutionHybrid8XDC": (128, 512, (256, 128)),
}


def _default_rendering() -> dict:
    return {
        "image_resolution": 512,
        "disparity_space_sampling": False,
        "clamp_mode": "softplus",
        "superresolution_module": OFFICIAL_SR_PREFIX + "SuperresolutionHybrid8XDC",
        "superresolution_noise_mode": "none",
        "c_gen_conditioning_zero": False,
        "gpc_reg_prob": 0.5,
        "c_scale": 1.0,
        "density_reg": 0.25,
        "reg_type": "l1",
        "density_reg_p_dist": 0.004,
        "decoder_lr_mul": 1.0,
        "sr_antialias": True,
        "depth_resolution": 48,
        "depth_resolution_importance": 48,
        "ray_start": 2.25,
        "ray_end": 3.3,
        "box_warp": 1,
        "avg_camera_radius": 2.7,
        "avg_camera_pivot": [0.0, 0.0, 0.2],
    }


@dataclass
class GeneratorConfig:
    # --- official constructor arguments (TriPlaneGenerator) ---
    z_dim: int = 512
    c_dim: int = 25
    w_dim: int = 512
    img_resolution: int = 512
    img_channels: int = 3
    mapping_kwargs: dict = field(default_factory=lambda: {"num_layers": 2})
    channel_base: int = 32768
    channel_max: int = 512
    fused_modconv_default: object = "inference_only"
    num_fp16_res: int = 0
    conv_clamp: float | None = None
    rendering_kwargs: dict = field(default_factory=_default_rendering)
    sr_num_fp16_res: int = 4
    sr_kwargs: dict = field(default_factory=lambda: {"channel_base": 32768, "channel_max": 512,
                                                     "fused_modconv_default": "inference_only"})
    # --- ours: values the official code hard-codes ---
    plane_resolution: int = 256
    plane_channels: int = 32
    motion_dim: int = 512
    motion_resolutions: tuple = (4, 8, 16, 32)
    sr_channels: tuple | None = None          # None = the official widths of the SR module
    neural_rendering_resolution: int = 64

    OURS = ("plane_resolution", "plane_channels", "motion_dim", "motion_resolutions", "sr_channels",
            "neural_rendering_resolution")

    @property
    def sr_module(self) -> str:
        return self.rendering_kwargs["superresolution_module"].rsplit(".", 1)[-1]

    def validate(self) -> "GeneratorConfig":
        if self.sr_module not in SR_MODULES:
            raise ValueError(f"unknown super-resolution module {self.sr_module!r}; known: {', '.join(SR_MODULES)}")
        _, out_res, _ = SR_MODULES[self.sr_module]
        if out_res != self.img_resolution:
            raise ValueError(f"{self.sr_module} outputs {out_res}² but img_resolution is {self.img_resolution}")
        if self.plane_channels != 32 and self.plane_channels < 4:
            raise ValueError("plane_channels must be at least 4")
        if self.img_channels != 3:
            raise ValueError("only 3-channel images are supported")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["motion_resolutions"] = list(self.motion_resolutions)
        d["sr_channels"] = list(self.sr_channels) if self.sr_channels is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        """From our saved dict or an official ``generator`` kwargs dict (unknown keys are an error)."""
        d = copy.deepcopy(dict(d))
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown generator config keys: {', '.join(unknown)}")
        rk = _default_rendering()
        rk.update(d.get("rendering_kwargs", {}))
        d["rendering_kwargs"] = rk
        if "motion_resolutions" in d:
            d["motion_resolutions"] = tuple(d["motion_resolutions"])
        if d.get("sr_channels") is not None:
            d["sr_channels"] = tuple(d["sr_channels"])
        return cls(**d).validate()


@dataclass
class DiscriminatorConfig:
    """Official kwargs of DualDiscriminator / VideoDiscriminator (the two share them)."""
    c_dim: int = 25
    img_resolution: int = 512
    img_channels: int = 3
    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 4
    conv_clamp: float | None = 256
    disc_c_noise: float = 0.0
    block_kwargs: dict = field(default_factory=lambda: {"freeze_layers": 0})
    mapping_kwargs: dict = field(default_factory=dict)
    epilogue_kwargs: dict = field(default_factory=lambda: {"mbstd_group_size": 4})
    architecture: str = "resnet"
    cmap_dim: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DiscriminatorConfig":
        d = dict(d)
        names = {f.name for f in fields(cls)}
        d.pop("sr_upsample_factor", None)
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown discriminator config keys: {', '.join(unknown)}")
        return cls(**d)


@dataclass
class ModelConfig:
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    img_discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    vid_discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    name: str = "custom"

    def to_dict(self) -> dict:
        return {"name": self.name, "generator": self.generator.to_dict(),
                "img_discriminator": self.img_discriminator.to_dict(),
                "vid_discriminator": self.vid_discriminator.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(generator=GeneratorConfig.from_dict(d["generator"]),
                   img_discriminator=DiscriminatorConfig.from_dict(d.get("img_discriminator", {})),
                   vid_discriminator=DiscriminatorConfig.from_dict(d.get("vid_discriminator", {})),
                   name=d.get("name", "custom"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _vox512() -> ModelConfig:
    return ModelConfig(name="pv3d-vox512")


def _tiny() -> ModelConfig:
    rk = _default_rendering()
    rk.update({
        "image_resolution": 128,
        "superresolution_module": OFFICIAL_SR_PREFIX + "SuperresolutionHybrid2X",
        "depth_resolution": 24,
        "depth_resolution_importance": 24,
    })
    g = GeneratorConfig(
        z_dim=128, w_dim=128, img_resolution=128, channel_base=4096, channel_max=128,
        rendering_kwargs=rk, sr_num_fp16_res=0,
        sr_kwargs={"channel_base": 4096, "channel_max": 128, "fused_modconv_default": "inference_only"},
        plane_resolution=64, plane_channels=32, motion_dim=128, sr_channels=(64, 32),
        neural_rendering_resolution=32,
    )
    d = DiscriminatorConfig(img_resolution=128, channel_base=4096, channel_max=128, num_fp16_res=0,
                            mapping_kwargs={"num_layers": 2})
    return ModelConfig(generator=g.validate(), img_discriminator=d, vid_discriminator=copy.deepcopy(d), name="tiny")


def _micro() -> ModelConfig:
    """A very small model for tests of the training machinery (not for images worth looking at)."""
    cfg = _tiny()
    g = cfg.generator
    g.z_dim = g.w_dim = g.motion_dim = 32
    g.channel_base, g.channel_max = 1024, 32
    g.plane_resolution, g.neural_rendering_resolution = 32, 16
    g.sr_channels = (16, 16)
    g.sr_kwargs = {"channel_base": 1024, "channel_max": 32, "fused_modconv_default": "inference_only"}
    g.rendering_kwargs.update({"depth_resolution": 8, "depth_resolution_importance": 8})
    for d in (cfg.img_discriminator, cfg.vid_discriminator):
        d.channel_base, d.channel_max = 1024, 32
    cfg.generator = g.validate()
    cfg.name = "micro"
    return cfg


PRESETS = {"pv3d-vox512": _vox512, "tiny": _tiny, "micro": _micro}


def preset(name: str) -> ModelConfig:
    """A fresh copy of a named preset."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise UsageError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
