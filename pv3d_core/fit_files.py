"""Saved fits, as safetensors checkpoints (:mod:`.io`): a portrait (a photo's latent, camera and tuned
generator, from :func:`.invert.invert`) and a video reconstruction (shared latent, motion code, per-frame
timestamps and cameras, from :func:`.invert.invert_video`). Loading checks every tensor's shape against
its generator and refuses non-finite values, so a damaged or hostile file fails here with a
:class:`~.io.CheckpointError`, not in a matrix product later.
"""
from __future__ import annotations

import torch

from .config import ModelConfig
from .errors import CheckpointError
from .io import generator_from_checkpoint, read_checkpoint, read_checkpoint_meta, save_checkpoint
from .rules import MAX_FRAMES


def save_portrait(path, result, extra_meta: dict | None = None):
    """A portrait (:class:`.invert.InversionResult`) as our safe checkpoint: the tuned generator (as
    G_ema), the latent and the camera."""
    G = result.generator
    meta = {"kind": "portrait", "metrics": result.metrics, "camera": [float(v) for v in result.camera],
            **result.meta, **(extra_meta or {})}
    cfg = ModelConfig(generator=G.config, name="portrait")
    return save_checkpoint(path, cfg, {"generator_ema": G}, meta,
                           extra={"ws": result.ws.detach().cpu(),
                                  "camera": torch.as_tensor(result.camera, dtype=torch.float32)})


def load_portrait(path, device="cpu"):
    """(generator, ws, meta) of a saved portrait; meta['kind'] == 'portrait'."""
    ck = read_checkpoint(path)
    if ck.meta.get("kind") != "portrait" or "extra.ws" not in ck.tensors:
        raise CheckpointError(f"{path} is not a saved portrait (no latent in it)")
    G = generator_from_checkpoint(ck, device=device)
    check_latents(path, G, {k: ck.tensors[f"extra.{k}"] for k in ("ws", "camera") if f"extra.{k}" in ck.tensors})
    return G, ck.tensors["extra.ws"].to(device), ck.meta


def is_portrait(path) -> bool:
    """Whether ``path`` is one of our checkpoints that says it is a saved portrait, from its header alone
    (no tensor is read: the viewer asks on the UI thread when a file is dropped). A file that cannot be
    read as our checkpoint: no. Whether its tensors are whole, :func:`load_portrait` finds out."""
    try:
        return read_checkpoint_meta(path).get("kind") == "portrait"
    except (CheckpointError, OSError):
        return False


def save_video_reconstruction(path, result, extra_meta: dict | None = None):
    """A video reconstruction (:class:`.invert.VideoInversionResult`) as our safe checkpoint."""
    meta = {"kind": "video", "metrics": result.metrics, "frames": int(len(result.ts)), **(extra_meta or {})}
    return save_checkpoint(path, ModelConfig(generator=result.generator.config, name="video"),
                           {"generator_ema": result.generator}, meta,
                           extra={"ws": result.ws.cpu(), "z_motion": result.z_motion.cpu(), "ts": result.ts.cpu(),
                                  "cameras": torch.as_tensor(result.cameras)})


def load_reconstruction(path, device="cpu"):
    """(generator, dict of tensors ws / z_motion / ts / cameras or camera, meta) of a saved portrait or video."""
    ck = read_checkpoint(path)
    if ck.meta.get("kind") not in ("portrait", "video") or "extra.ws" not in ck.tensors:
        raise CheckpointError(f"{path} is not a saved portrait or video reconstruction")
    G = generator_from_checkpoint(ck, device=device)
    extras = {k[len("extra."):]: v for k, v in ck.tensors.items() if k.startswith("extra.")}
    check_latents(path, G, extras)
    return G, {k: v.to(device) for k, v in extras.items()}, ck.meta


def check_latents(path, G, extras: dict) -> None:
    """The shapes a saved portrait's or reconstruction's tensors must have for its generator, and
    finite values: a hostile or damaged file is refused here, not in a matrix product later."""
    n = extras["ts"].shape[0] if "ts" in extras and extras["ts"].ndim == 1 else None
    want = {"ws": (1, G.num_ws, G.w_dim), "camera": (25,), "z_motion": (1, G.motion_dim), "ts": (n,),
            "cameras": (n, 25)}
    if "z_motion" in extras or "ts" in extras or "cameras" in extras:
        missing = [k for k in ("ws", "z_motion", "ts", "cameras") if k not in extras]
        if missing:
            raise CheckpointError(f"{path} is a video reconstruction without {', '.join(missing)}")
        if n is None or not 1 <= n <= MAX_FRAMES:
            raise CheckpointError(f"{path}: ts must hold 1..{MAX_FRAMES} timestamps, got shape "
                                  f"{tuple(extras['ts'].shape)}")
    for k, shape in want.items():
        v = extras.get(k)
        if v is None:
            continue
        if tuple(v.shape) != shape:
            raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, but this generator needs {shape}")
        if not v.is_floating_point() or not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{path}: {k} holds values that are not finite numbers")
