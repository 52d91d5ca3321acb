"""Checkpoints: our safetensors format, official PV3D ``.ckpt`` import, and safe loading.

Ours: a ``.safetensors`` file whose tensors carry the official prefixes (``generator_ema.``,
optionally ``generator.``, ``img_discriminator.``, ``vid_discriminator.``, and ``extra.`` for
anything else a pipeline stores) and whose metadata holds the model config as JSON
(``pv3d_config``) plus free-form JSON (``pv3d_meta``). Nothing in it executes code.

Official: the ``.ckpt`` dict of the released models, read with ``torch.load(weights_only=True)``,
which refuses pickles that would run code.
"""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import files
from .config import DiscriminatorConfig, GeneratorConfig, ModelConfig
from .errors import CheckpointError

FORMAT = "pv3d-studio/1"
PREFIXES = ("generator_ema.", "generator.", "img_discriminator.", "vid_discriminator.")


@dataclass
class Checkpoint:
    config: ModelConfig
    tensors: dict = field(default_factory=dict)     # full key -> tensor (prefixed)
    meta: dict = field(default_factory=dict)
    source: str = "ours"                             # "ours" | "official"

    def part(self, prefix: str) -> dict:
        p = prefix if prefix.endswith(".") else prefix + "."
        return {k[len(p):]: v for k, v in self.tensors.items() if k.startswith(p)}

    def has(self, prefix: str) -> bool:
        p = prefix if prefix.endswith(".") else prefix + "."
        return any(k.startswith(p) for k in self.tensors)


# ---------------------------------------------------------------------------------------------- reading

def _check_file(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    if not path.is_file():          # a FIFO, a device...: reading it could block or never end
        raise CheckpointError(f"{path} is not a regular file, so not a checkpoint")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty")
    return path


def read_checkpoint(path) -> Checkpoint:
    """Read ours (.safetensors) or an official PV3D .ckpt; never executes code from the file."""
    path = _check_file(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{"):
        return _read_ours(path)
    if zipfile.is_zipfile(path) or head[:1] == b"\x80":
        return _read_official(path)
    raise CheckpointError(f"{path} is not a checkpoint (neither safetensors nor a PyTorch .ckpt)")


def read_checkpoint_meta(path) -> dict:
    """The ``pv3d_meta`` dict of one of our checkpoints, from the safetensors header alone: no tensor is
    read (a 512² portrait is about 180 MB). Anything else raises :class:`CheckpointError`."""
    from safetensors import safe_open

    path = _check_file(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({_first_line(e)})") from None
    _require_ours(path, meta)
    try:
        return _pv3d_meta(meta)
    except Exception as e:  # noqa: BLE001 - JSON errors of any kind are the file's fault
        raise CheckpointError(f"{path} has invalid metadata: {_first_line(e)}") from None


def _require_ours(path, header: dict) -> None:
    """A safetensors header without our config is someone else's file."""
    if "pv3d_config" not in header:
        raise CheckpointError(f"{path} is a safetensors file but not a PV3D Studio checkpoint "
                              "(no pv3d_config metadata)")


def _pv3d_meta(header: dict) -> dict:
    """Our header's ``pv3d_meta`` JSON object (ValueError when it is not one)."""
    extra = json.loads(header.get("pv3d_meta", "{}"))
    if not isinstance(extra, dict):
        raise ValueError("pv3d_meta is not a JSON object")
    return extra


def _read_ours(path: Path) -> Checkpoint:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            _require_ours(path, meta)
            try:      # the config is checked before any tensor is read or any module built
                config = ModelConfig.from_dict(json.loads(meta["pv3d_config"]))
                extra = _pv3d_meta(meta)
            except Exception as e:  # noqa: BLE001 - JSON, types, ranges, recursion: all the file's fault
                raise CheckpointError(f"{path} has an invalid model config: {_first_line(e)}") from None
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({_first_line(e)})") from None
    return Checkpoint(config=config, tensors=tensors, meta=extra, source="ours")


def _read_official(path: Path) -> Checkpoint:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refused to load {path}: it contains Python objects that would run code when unpickled "
            f"({_first_line(e).split('. ')[0]}); only plain tensors and containers are accepted") from None
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({_first_line(e)})") from None
    if not isinstance(obj, dict) or "model" not in obj or not isinstance(obj["model"], dict):
        raise CheckpointError(f"{path} is a PyTorch file but not a PV3D checkpoint (no 'model' state dict)")
    cfg = obj.get("config") or {}
    try:
        pv3d = cfg["model_config"]["pv3d"]
        gkw = dict(pv3d["generator"])
    except (KeyError, TypeError):
        raise CheckpointError(f"{path} has no config.model_config.pv3d.generator; cannot tell its architecture") from None
    try:
        gcfg = GeneratorConfig.from_dict(gkw)
        training = cfg.get("training", {}) or {}
        if "rendering_resolution" in training:
            gcfg.neural_rendering_resolution = training["rendering_resolution"]
            gcfg.validate()
        d_img = DiscriminatorConfig.from_dict(_resolve_d(pv3d.get("img_discriminator", {}), gkw), "img_discriminator")
        d_vid = DiscriminatorConfig.from_dict(_resolve_d(pv3d.get("vid_discriminator", {}), gkw), "vid_discriminator")
    except Exception as e:
        raise CheckpointError(f"{path}: unsupported model config ({_first_line(e)})") from None
    tensors = {k: v for k, v in obj["model"].items() if isinstance(v, torch.Tensor)}
    meta = {k: obj[k] for k in ("current_iteration", "num_updates", "num_samples") if k in obj}
    return Checkpoint(config=ModelConfig(gcfg, d_img, d_vid, name=f"official:{path.name}"),
                      tensors=tensors, meta=meta, source="official")


def _resolve_d(d: dict, gkw: dict) -> dict:
    if not isinstance(d, dict):
        return d                            # refused, with its name, by DiscriminatorConfig.from_dict
    d = dict(d)
    if isinstance(d.get("c_dim"), str):  # an unresolved "${...generator.c_dim}" interpolation
        d["c_dim"] = gkw.get("c_dim", 25)
    return d


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


# ---------------------------------------------------------------------------------------------- modules

def load_state_strict(module: torch.nn.Module, state: dict, what: str) -> None:
    """Load a state dict requiring exactly the module's keys and shapes; explain any difference."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} with other shapes (e.g. {'; '.join(shapes[:3])})")
        raise CheckpointError(f"{what} does not match this architecture: " + ", ".join(parts))
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def build_generator(config: ModelConfig | GeneratorConfig):
    from .generator import PV3DGenerator

    g = config.generator if isinstance(config, ModelConfig) else config
    return PV3DGenerator(g)


def build_discriminators(config: ModelConfig):
    from .discriminator import ImageDiscriminator, VideoDiscriminator

    return ImageDiscriminator(config.img_discriminator), VideoDiscriminator(config.vid_discriminator)


def generator_from_checkpoint(ckpt: Checkpoint, which: str = "generator_ema", device="cpu"):
    if not ckpt.has(which):
        alt = "generator" if which == "generator_ema" else "generator_ema"
        if not ckpt.has(alt):
            raise CheckpointError("checkpoint holds no generator weights")
        which = alt
    state = ckpt.part(which)
    check_finite(state, f"the checkpoint's {which}")
    G = build_generator(ckpt.config)
    if any(k.startswith("motion_reference.") for k in state):     # a portrait keeping its model's motion
        G.set_motion_reference(G.backbone.synthesis)
    load_state_strict(G, state, f"the checkpoint's {which}")
    return G.to(device).eval().requires_grad_(False)


def check_finite(state: dict, what: str) -> None:
    """Refuse weights holding NaN or infinity: such a model renders black frames without an error."""
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            n = int((~torch.isfinite(v)).sum())
            raise CheckpointError(f"{what} holds {n} NaN or infinite value(s) in {k} (a training that diverged?); "
                                  "it would render black frames")


def load_generator(path, device="cpu", which: str = "generator_ema"):
    """The generator of a checkpoint (ours or official), in eval mode, on ``device``."""
    G = generator_from_checkpoint(read_checkpoint(path), which=which, device=device)
    G.checkpoint_path = str(path)
    return G


def load_discriminators(path, device="cpu"):
    """(image discriminator, video discriminator) of a checkpoint that has them."""
    ckpt = read_checkpoint(path)
    if not (ckpt.has("img_discriminator") and ckpt.has("vid_discriminator")):
        raise CheckpointError(f"{path} holds no discriminators (an inference-only checkpoint)")
    d_img, d_vid = build_discriminators(ckpt.config)
    load_state_strict(d_img, ckpt.part("img_discriminator"), "the checkpoint's img_discriminator")
    load_state_strict(d_vid, ckpt.part("vid_discriminator"), "the checkpoint's vid_discriminator")
    return d_img.to(device).eval(), d_vid.to(device).eval()


# ---------------------------------------------------------------------------------------------- writing

def check_writable(path) -> Path:
    """Fail early, with a clear message, when ``path`` cannot be written."""
    return files.check_writable(path, CheckpointError)


def save_checkpoint(path, config: ModelConfig, parts: dict, meta: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Write our format atomically. ``parts``: prefix -> module or state dict; ``extra``: name -> tensor."""
    from safetensors.torch import save_file

    path = check_writable(path)
    tensors = {}
    for prefix, obj in parts.items():
        sd = obj.state_dict() if isinstance(obj, torch.nn.Module) else obj
        for k, v in sd.items():
            tensors[f"{prefix}.{k}"] = v.detach().to("cpu").contiguous().clone()
    for k, v in (extra or {}).items():
        tensors[f"extra.{k}"] = torch.as_tensor(v).detach().to("cpu").contiguous().clone()
    metadata = {"format": FORMAT, "pv3d_config": config.to_json(), "pv3d_meta": json.dumps(meta or {})}

    def write(tmp):
        try:
            save_file(tensors, tmp, metadata=metadata)
        except Exception as e:     # safetensors' error wraps the OS error ("No space left on device")
            why = _io_reason(e)
            if why is None:
                raise
            raise CheckpointError(f"cannot write {path}: {why}") from None

    return files.atomic_write(path, write, CheckpointError)


def _io_reason(e: BaseException) -> str | None:
    """The OS error inside a SafetensorError's message ("I/O error: No space left on device (os error
    28)" -> "No space left on device"), or None when it is not one."""
    import re

    m = re.search(r"I/O error: (.*?)(?: \(os error \d+\))?$", _first_line(e))
    return m.group(1) if m else None


def save_generator(path, G, meta: dict | None = None, name: str | None = None) -> Path:
    """An inference checkpoint holding only G_ema."""
    cfg = ModelConfig(generator=G.config, name=name or "custom")
    return save_checkpoint(path, cfg, {"generator_ema": G}, meta)


def convert(src, dst, generator_only: bool = False) -> Path:
    """Official .ckpt (or ours) -> our safetensors format, after checking every part loads strictly."""
    ckpt = read_checkpoint(src)
    G = generator_from_checkpoint(ckpt)
    parts = {"generator_ema": G}
    if not generator_only:
        if ckpt.has("generator"):
            G_train = build_generator(ckpt.config)
            load_state_strict(G_train, ckpt.part("generator"), "the checkpoint's generator")
            parts["generator"] = G_train
        if ckpt.has("img_discriminator") and ckpt.has("vid_discriminator"):
            d_img, d_vid = build_discriminators(ckpt.config)
            load_state_strict(d_img, ckpt.part("img_discriminator"), "the checkpoint's img_discriminator")
            load_state_strict(d_vid, ckpt.part("vid_discriminator"), "the checkpoint's vid_discriminator")
            parts["img_discriminator"], parts["vid_discriminator"] = d_img, d_vid
    meta = dict(ckpt.meta)
    meta["converted_from"] = os.path.basename(str(src))
    return save_checkpoint(dst, ckpt.config, parts, meta)
