"""A feed-forward portrait encoder: an aligned face crop -> the generator's appearance latent (W+) at
t = 0, and the camera's yaw and pitch, in one forward pass (milliseconds on a CPU).

It replaces the latent-optimisation phase of :mod:`pv3d_core.invert` (pSp / e4e in spirit, sized for a
CPU): a small strided CNN (GroupNorm, leaky ReLU, a residual conv per scale) down to 4x4, one hidden
layer, then a shared latent ``w`` and per-layer offsets (e4e's "w + deltas", initialised at zero), read
as ``ws = w_avg + w_spread * (w + delta_i)``, so its outputs start at the model's mean face and move in
units of the model's own latent spread. A second head gives (yaw, pitch) of the camera; the portrait
pipeline keeps the PnP camera from the landmarks and reports the predicted one beside it.

Each encoder belongs to one generator: the file (``*-encoder.safetensors``, safetensors + JSON
metadata, nothing executable) records the generator's :func:`fingerprint`, and :func:`load_encoder_for`
refuses an encoder made for other weights (the portrait pipeline then falls back to optimisation).
:func:`pv3d_core.paths.encoder_for` says where a model's encoder lives (beside the model).
Trained by :mod:`pv3d_core.train.encoder` (`pv3d train-encoder`).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CheckpointError

FORMAT = "pv3d-studio-encoder/1"


@dataclass
class EncoderConfig:
    num_ws: int = 10
    w_dim: int = 128
    in_resolution: int = 128          # the crop is resized to this
    width: int = 32                   # channels after the stem; doubled per scale up to max_width
    max_width: int = 256
    hidden: int = 512

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def for_generator(cls, G, **kw) -> "EncoderConfig":
        """Sized for a generator: its latent layout, and its output resolution up to 256 (512² crops
        are read at 256², the detail the encoder needs; pivotal tuning fits the rest)."""
        kw.setdefault("in_resolution", min(256, int(G.img_resolution)))
        if G.w_dim >= 512:
            kw.setdefault("max_width", 512)
            kw.setdefault("hidden", 1024)
        return cls(num_ws=int(G.num_ws), w_dim=int(G.w_dim), **kw)

    def validate(self) -> "EncoderConfig":
        r = self.in_resolution
        if r < 16 or r & (r - 1):
            raise ValueError(f"encoder input resolution must be a power of two >= 16, got {r}")
        if min(self.num_ws, self.w_dim, self.width, self.max_width, self.hidden) < 1:
            raise ValueError("encoder sizes must be positive")
        return self


class _Block(nn.Module):
    """Strided conv (downsample x2) then a residual 3x3 conv, GroupNorm + leaky ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.down = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.n1 = nn.GroupNorm(min(8, cout), cout)
        self.conv = nn.Conv2d(cout, cout, 3, padding=1)
        self.n2 = nn.GroupNorm(min(8, cout), cout)

    def forward(self, x):
        x = F.leaky_relu(self.n1(self.down(x)), 0.2)
        return x + F.leaky_relu(self.n2(self.conv(x)), 0.2)


class PortraitEncoder(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        cfg = config.validate()
        self.config = cfg
        self.stem = nn.Conv2d(3, cfg.width, 3, stride=2, padding=1)        # R -> R/2
        blocks, c, r = [], cfg.width, cfg.in_resolution // 2
        while r > 4:
            c_out = min(cfg.max_width, c * 2)
            blocks.append(_Block(c, c_out))
            c, r = c_out, r // 2
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c * 16, cfg.hidden)
        self.to_w = nn.Linear(cfg.hidden, cfg.w_dim)
        self.to_delta = nn.Linear(cfg.hidden, cfg.num_ws * cfg.w_dim)
        self.to_pose = nn.Linear(cfg.hidden, 2)
        for head in (self.to_w, self.to_delta, self.to_pose):   # start at the mean face, frontal
            nn.init.zeros_(head.bias)
            nn.init.zeros_(head.weight)
        # the generator's latent statistics (set by the trainer, saved with the weights)
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))
        self.register_buffer("w_spread", torch.ones(()))

    def set_latent_stats(self, w_avg: torch.Tensor, spread: float) -> None:
        with torch.no_grad():
            self.w_avg.copy_(w_avg.reshape(-1))
            self.w_spread.fill_(float(spread))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] at any square size -> the encoder's input size (antialiased)."""
        r = self.config.in_resolution
        if images.shape[-1] != r or images.shape[-2] != r:
            images = F.interpolate(images, size=(r, r), mode="bilinear", align_corners=False,
                                   antialias=images.shape[-1] > r)
        return images

    def forward(self, images: torch.Tensor) -> dict:
        """images (N, 3, H, W) in [-1, 1] (aligned crops) -> dict(ws (N, num_ws, w_dim), pose (N, 2) =
        yaw, pitch in radians, latent (N, num_ws, w_dim) = the output in units of the latent spread)."""
        cfg = self.config
        x = F.leaky_relu(self.stem(self.prepare(images.float())), 0.2)
        x = self.blocks(x)
        h = F.leaky_relu(self.fc(x.flatten(1)), 0.2)
        latent = self.to_w(h)[:, None, :] + self.to_delta(h).view(-1, cfg.num_ws, cfg.w_dim)
        ws = self.w_avg + self.w_spread * latent
        return {"ws": ws, "latent": latent, "pose": self.to_pose(h)}


# ------------------------------------------------------------------------------------ identity of a model

def fingerprint(G) -> str:
    """A short hash of a generator's weights and buffers (names, shapes and values): an encoder is
    valid for exactly the generator it was trained on."""
    h = hashlib.sha256()
    for name, t in sorted(G.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


# ------------------------------------------------------------------------------------ files

@dataclass
class EncoderFile:
    encoder: PortraitEncoder
    fingerprint: str                  # of the generator it was trained for
    meta: dict = field(default_factory=dict)


def save_encoder(path, encoder: PortraitEncoder, generator_fingerprint: str, meta: dict | None = None) -> Path:
    """Write an encoder atomically (safetensors; config, fingerprint and free-form meta as JSON)."""
    from safetensors.torch import save_file

    from . import files

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in encoder.state_dict().items()}
    metadata = {"format": FORMAT, "encoder_config": json.dumps(encoder.config.to_dict()),
                "generator_fingerprint": generator_fingerprint, "pv3d_meta": json.dumps(meta or {})}
    return files.atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata), CheckpointError)


def load_encoder(path, device="cpu") -> EncoderFile:
    """An encoder file; :class:`CheckpointError` when it is missing, corrupt or not an encoder."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"encoder not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0] if str(e) else e!r})") \
            from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a PV3D Studio portrait encoder")
    try:
        cfg = EncoderConfig(**json.loads(meta["encoder_config"]))
        enc = PortraitEncoder(cfg)
        from .io import load_state_strict

        load_state_strict(enc, tensors, f"encoder {path.name}")
        extra = json.loads(meta.get("pv3d_meta", "{}"))
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path} has an invalid encoder config: {str(e).splitlines()[0]}") from None
    return EncoderFile(enc.to(device).eval().requires_grad_(False), meta.get("generator_fingerprint", ""), extra)


def load_encoder_for(G, path=None, device=None) -> tuple[PortraitEncoder | None, str]:
    """(encoder, note) for generator ``G``: the file ``path`` or, without it, the one beside G's
    checkpoint (:func:`pv3d_core.paths.encoder_for`). ``(None, why)`` when there is none, or when it
    was trained for other weights or another latent layout. Errors in an explicitly given file raise."""
    from . import paths

    explicit = path is not None
    if path is None:
        src = getattr(G, "checkpoint_path", None)
        path = paths.encoder_for(src) if src else None
        if path is None or not Path(path).is_file():
            return None, "no encoder for this model (train one with `pv3d train-encoder`)"
    try:
        ef = load_encoder(path, device=device or next(G.parameters()).device)
    except CheckpointError:
        if explicit:
            raise
        return None, f"the encoder {Path(path).name} could not be read"
    cfg = ef.encoder.config
    if (cfg.num_ws, cfg.w_dim) != (G.num_ws, G.w_dim):
        why = f"the encoder {Path(path).name} is for another architecture ({cfg.num_ws}x{cfg.w_dim} latents)"
        if explicit:
            raise CheckpointError(why)
        return None, why
    fp = fingerprint(G)
    if ef.fingerprint != fp:
        why = f"the encoder {Path(path).name} was trained for other weights of this model"
        if explicit:
            raise CheckpointError(why + f" (fingerprint {ef.fingerprint}, model {fp})")
        return None, why
    return ef.encoder, f"encoder {Path(path).name}"


def encode(encoder: PortraitEncoder, crop: torch.Tensor) -> dict:
    """ws (1, num_ws, w_dim) and (yaw, pitch) of one aligned crop (1, 3, R, R) in [-1, 1], no gradients."""
    with torch.no_grad():
        out = encoder(crop.to(next(encoder.parameters()).device))
    yaw, pitch = (float(v) for v in out["pose"][0])
    return {"ws": out["ws"], "yaw": yaw, "pitch": pitch}


def yaw_pitch_deg(out: dict) -> tuple[float, float]:
    return math.degrees(out["yaw"]), math.degrees(out["pitch"])


__all__ = ["EncoderConfig", "PortraitEncoder", "EncoderFile", "fingerprint", "save_encoder", "load_encoder",
           "load_encoder_for", "encode"]
