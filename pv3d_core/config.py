"""Model configurations: one source of truth for every size, and the named presets.

The configs hold the official constructor arguments (so a config round-trips to and from the
``config["model_config"]["pv3d"]`` dict of an official checkpoint) plus a few fields of ours that
the official code hard-codes (tri-plane resolution, super-resolution widths, motion width); their
defaults are the official values.

Presets:
- ``pv3d-vox512``: exactly the released VoxCeleb 512² configuration (44.3 M generator parameters).
- ``tiny``: a CPU-trainable model (64² tri-planes, 32² neural rendering, 2x super-resolution to
  128²) — the size of the embedded default model and of the tests.

Validation, in one place: every config's ``validate`` checks each field's type and range (the ``RULES``
below) before anything is built, so a checkpoint whose JSON asks for ``z_dim`` 10⁹ or a string where a
number belongs is refused with a :class:`~pv3d_core.errors.ConfigError` naming the field. The bounds
are generous around the released configuration (each about 4-8x its value; ``pv3d-vox512`` and every
preset pass) and keep any accepted model within a few GB: besides the per-field limits, no
synthesis or discriminator activation may exceed :data:`MAX_ACTIVATION` values per sample, and no
neural render :data:`MAX_RAY_SAMPLES` samples per image.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields

from .errors import ConfigError, UsageError
from .rules import Bool, Choice, Float, Int, Keys, Seq, Str, check_fields

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


#: the most values one synthesis or discriminator activation may hold per sample (channels x res²):
#: 64 Mi = 256 MB in float32, 8x the released configuration's largest (128 channels x 256² tri-planes)
MAX_ACTIVATION = 1 << 26
#: the most volume-rendering samples per image (neural resolution² x samples per ray): 16 Mi, 43x the
#: released configuration's 64² x (48 + 48)
MAX_RAY_SAMPLES = 1 << 24

MAPPING_KWARGS = Keys((("num_layers", Int(1, 32)), ("embed_features", Int(1, 4096, optional=True)),
                       ("layer_features", Int(1, 4096, optional=True)),
                       ("activation", Choice(("linear", "relu", "lrelu", "tanh", "sigmoid", "softplus"))),
                       ("lr_multiplier", Float(0, 100, lo_open=True)),
                       ("w_avg_beta", Float(0, 1, optional=True))))

_DISTANCE = Float(0, 1000, lo_open=True)
#: the rendering options read by the renderer; other keys (an official checkpoint may hold more) are kept
RENDERING_KWARGS = Keys((
    ("image_resolution", Int(16, 4096)), ("disparity_space_sampling", Bool()), ("clamp_mode", Choice(("softplus",))),
    ("superresolution_module", Str(300, nonempty=True)),
    ("superresolution_noise_mode", Choice(("none", "const", "random"))), ("c_gen_conditioning_zero", Bool()),
    ("gpc_reg_prob", Float(0, 1)), ("c_scale", Float(-1000, 1000)), ("density_reg", Float(0, 1e6)),
    ("reg_type", Str(100)), ("density_reg_p_dist", Float(0, 1000)), ("decoder_lr_mul", Float(0, 1000, lo_open=True)),
    ("sr_antialias", Bool()), ("depth_resolution", Int(2, 1024)), ("depth_resolution_importance", Int(0, 1024)),
    ("ray_start", _DISTANCE), ("ray_end", _DISTANCE), ("box_warp", _DISTANCE), ("avg_camera_radius", _DISTANCE),
    ("avg_camera_pivot", Seq(Float(-1000, 1000), 3, 3, as_list=True)), ("focal", Float(0, 1000, lo_open=True))), open=True)


def _check_activations(what: str, channel_base: int, channel_max: int, resolutions) -> None:
    for r in resolutions:
        ch = min(channel_base // r, channel_max)
        if ch < 1:
            raise ConfigError(f"{what}: channel_base {channel_base} leaves no channels at resolution {r} "
                              f"(channel_base // resolution must be >= 1)")
        if ch * r * r > MAX_ACTIVATION:
            raise ConfigError(f"{what}: {ch} channels at resolution {r}² make activations of {ch * r * r:,} values "
                              f"per sample; at most {MAX_ACTIVATION:,} are accepted (lower channel_max or "
                              "channel_base)")


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

    RULES = {
        "z_dim": Int(1, 4096), "c_dim": Int(25, 25), "w_dim": Int(1, 4096), "img_resolution": Int(16, 4096),
        "img_channels": Int(3, 3), "mapping_kwargs": MAPPING_KWARGS,
        "channel_base": Int(1, 1 << 20), "channel_max": Int(1, 1024),
        "fused_modconv_default": Choice((True, False, "inference_only")),
        "num_fp16_res": Int(0, 16), "conv_clamp": Float(0, 1e6, optional=True, lo_open=True),
        "rendering_kwargs": None,  # RENDERING_KWARGS, after the defaults are filled in
        "sr_num_fp16_res": Int(0, 16),
        "sr_kwargs": Keys((("channel_base", Int(1, 1 << 20)), ("channel_max", Int(1, 1024)),
                           ("fused_modconv_default", Choice((True, False, "inference_only")))), open=False),
        "plane_resolution": Int(8, 512, power_of_two=True), "plane_channels": Int(4, 256),
        "motion_dim": Int(1, 4096),
        "motion_resolutions": Seq(Int(4, 512, power_of_two=True), 0, 8),
        "sr_channels": Seq(Int(1, 1024), 2, 2, optional=True),
        "neural_rendering_resolution": Int(8, 512),
    }

    def validate(self) -> "GeneratorConfig":
        """Every field's type and range (see the module doc), then how they fit together."""
        rules = dict(self.RULES, rendering_kwargs=RENDERING_KWARGS)
        check_fields(self, rules, "generator.")
        rk = self.rendering_kwargs
        if self.sr_module not in SR_MODULES:
            raise ConfigError(f"generator.rendering_kwargs.superresolution_module: unknown module {self.sr_module!r}; "
                              f"known: {', '.join(SR_MODULES)}")
        _, out_res, _ = SR_MODULES[self.sr_module]
        if out_res != self.img_resolution:
            raise ConfigError(f"generator.img_resolution is {self.img_resolution}, but {self.sr_module} "
                              f"outputs {out_res}²")
        if rk["ray_start"] >= rk["ray_end"]:
            raise ConfigError(f"generator.rendering_kwargs: ray_start ({rk['ray_start']}) must be below "
                              f"ray_end ({rk['ray_end']})")
        if rk["disparity_space_sampling"]:
            raise ConfigError("generator.rendering_kwargs.disparity_space_sampling: not supported (PV3D models "
                              "do not use it)")
        bad = [r for r in self.motion_resolutions if r > self.plane_resolution]
        if bad or len(set(self.motion_resolutions)) != len(self.motion_resolutions):
            raise ConfigError(f"generator.motion_resolutions must be distinct block resolutions up to "
                              f"plane_resolution {self.plane_resolution}, got {list(self.motion_resolutions)}")
        _check_activations("generator", self.channel_base, self.channel_max,
                           [2 ** i for i in range(2, self.plane_resolution.bit_length())])
        in_res, _, widths = SR_MODULES[self.sr_module]
        c0, c1 = self.sr_channels or widths
        up = self.sr_module not in ("SuperresolutionHybrid2X", "SuperresolutionHybrid4X")
        for ch, r in ((c0, out_res // 2 if up else in_res), (c1, out_res)):
            if ch * r * r > MAX_ACTIVATION:
                raise ConfigError(f"generator.sr_channels: {ch} channels at {r}² make activations of {ch * r * r:,} "
                                  f"values per sample; at most {MAX_ACTIVATION:,} are accepted")
        samples = self.neural_rendering_resolution ** 2 * (rk["depth_resolution"] + rk["depth_resolution_importance"])
        if samples > MAX_RAY_SAMPLES:
            raise ConfigError(f"generator: neural_rendering_resolution {self.neural_rendering_resolution}² x "
                              f"(depth_resolution + depth_resolution_importance) = {samples:,} samples per image; "
                              f"at most {MAX_RAY_SAMPLES:,} are accepted")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["motion_resolutions"] = list(self.motion_resolutions)
        d["sr_channels"] = list(self.sr_channels) if self.sr_channels is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        """From our saved dict or an official ``generator`` kwargs dict (unknown keys are an error)."""
        if not isinstance(d, dict):
            raise ConfigError(f"the generator config must be a JSON object, got {type(d).__name__}")
        d = copy.deepcopy(dict(d))
        names = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in set(d) - names)
        if unknown:
            raise ConfigError(f"unknown generator config keys: {', '.join(unknown)[:200]}")
        rk = _default_rendering()
        given = d.get("rendering_kwargs", {})
        if not isinstance(given, dict):
            raise ConfigError(f"generator.rendering_kwargs must be a JSON object, got {type(given).__name__}")
        rk.update(given)
        d["rendering_kwargs"] = rk
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

    RULES = {
        "c_dim": Int(25, 25), "img_resolution": Int(16, 4096, power_of_two=True), "img_channels": Int(3, 3),
        "channel_base": Int(1, 1 << 20), "channel_max": Int(1, 1024), "num_fp16_res": Int(0, 16),
        "conv_clamp": Float(0, 1e6, optional=True, lo_open=True), "disc_c_noise": Float(0, 1000),
        "block_kwargs": Keys((("freeze_layers", Int(0, 1000)),), open=False),
        "mapping_kwargs": Keys(tuple((k, r) for k, r in MAPPING_KWARGS.rules if k != "w_avg_beta")),
        "epilogue_kwargs": Keys((("mbstd_group_size", Int(1, 256, optional=True)),
                                 ("mbstd_num_channels", Int(1, 256)),
                                 ("activation", MAPPING_KWARGS.rules[3][1]))),
        "architecture": Choice(("resnet",)), "cmap_dim": Int(1, 4096, optional=True),
    }

    def validate(self, what: str = "discriminator") -> "DiscriminatorConfig":
        check_fields(self, self.RULES, f"{what}.")
        _check_activations(what, self.channel_base, self.channel_max,
                           [2 ** i for i in range(2, self.img_resolution.bit_length())])
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, what: str = "discriminator") -> "DiscriminatorConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"the {what} config must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        names = {f.name for f in fields(cls)}
        d.pop("sr_upsample_factor", None)
        unknown = sorted(str(k) for k in set(d) - names)
        if unknown:
            raise ConfigError(f"unknown {what} config keys: {', '.join(unknown)[:200]}")
        return cls(**d).validate(what)


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

    def validate(self) -> "ModelConfig":
        self.generator.validate()
        self.img_discriminator.validate("img_discriminator")
        self.vid_discriminator.validate("vid_discriminator")
        self.name = Str(200).check("name", self.name)
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        if not isinstance(d, dict) or "generator" not in d:
            raise ConfigError("the model config must be a JSON object with a 'generator' entry")
        return cls(generator=GeneratorConfig.from_dict(d["generator"]),
                   img_discriminator=DiscriminatorConfig.from_dict(d.get("img_discriminator", {}), "img_discriminator"),
                   vid_discriminator=DiscriminatorConfig.from_dict(d.get("vid_discriminator", {}), "vid_discriminator"),
                   name=Str(200).check("name", d.get("name", "custom")))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _vox512() -> ModelConfig:
    return ModelConfig(name="pv3d-vox512").validate()


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
    return ModelConfig(generator=g, img_discriminator=d, vid_discriminator=copy.deepcopy(d), name="tiny").validate()


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
    cfg.name = "micro"
    return cfg.validate()


PRESETS = {"pv3d-vox512": _vox512, "tiny": _tiny, "micro": _micro}


def preset(name: str) -> ModelConfig:
    """A fresh copy of a named preset."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise UsageError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
