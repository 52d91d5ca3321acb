"""Reconstruction warm start on data with known cameras (and, for synthetic heads, known geometry).

A GAN needs millions of images before faces appear; two CPU cores see a few thousand an hour. When
the data carries ground truth (``pv3d data synth``), the generator can instead be fitted directly,
auto-decoder style: every clip gets a learnable appearance code and a learnable motion code, every
frame its timestamp in the clip (frame / (frames - 1)), and the generator renders each frame from its
camera and is pulled towards it (L1 on the final and raw images, plus silhouette and depth terms
where ground truth exists). The codes live in z space (re-normalised to the sphere of radius
sqrt(dim) that N(0, I) samples concentrate on), so random codes give blends of the fitted identities
and motions. The result is a starting point for the adversarial objective (``pv3d train --init``),
and what the embedded default model was made with (see its model card).
"""
from __future__ import annotations

import copy
import json
import math
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import preset
from ..data import layout
from ..io import build_discriminators, build_generator, load_state_strict, read_checkpoint, save_checkpoint
from ..render import cameras
from ..rules import Float, Int, Str, check_fields
from ..render.rays import pixel_rays, split_camera
from .regression import RegressionWeights, density_smoothness, frame_loss
from .stopping import stop_on_signals


@dataclass
class ReconConfig:
    data: str = ""
    out: str = "runs/recon"
    preset: str = "tiny"
    steps: int = 2000
    batch: int = 8
    lr: float = 2e-3
    latent_lr: float = 1e-2
    raw_weight: float = 1.0
    mask_weight: float = 0.5
    depth_weight: float = 0.5
    density_reg: float = 0.25
    ema_halflife_steps: float = 50.0
    checkpoint_every: int = 200
    seed: int = 0
    threads: int = 0

    def to_dict(self):
        return asdict(self)

    def validate(self) -> "ReconConfig":
        """Every option's type and range (:data:`RECON_RULES`), before anything is built."""
        check_fields(self, RECON_RULES)
        return self


_W = Float(0, 1e6)
#: the accepted range of every warm-start option (the `pv3d warmstart` flags use the same rules)
RECON_RULES = {
    "data": Str(nonempty=True), "out": Str(nonempty=True), "preset": Str(100, nonempty=True),
    "steps": Int(0, 10_000_000), "batch": Int(1, 4096), "lr": Float(0, 1, lo_open=True),
    "latent_lr": Float(0, 1, lo_open=True), "raw_weight": _W, "mask_weight": _W, "depth_weight": _W,
    "density_reg": _W, "ema_halflife_steps": Float(0, 1e9), "checkpoint_every": Int(1, 10_000_000),
    "seed": Int(0, 2 ** 32 - 1), "threads": Int(0, 1024),
}


class ClipBank:
    """Every frame of a (small) dataset in memory, with cameras and optional ground truth."""

    def __init__(self, root, resolution: int):
        names = layout.list_clips(root)
        root = Path(root)
        self.names, frames, cams, self.depth, self.mask = names, [], [], [], []
        for n in names:
            v = layout.read_video(root / layout.VIDEO_DIR / f"{n}.mp4")
            c = layout.read_cameras(root / layout.CAMERA_DIR / f"{n}.json")
            k = min(len(v), len(c))
            t = torch.from_numpy(v[:k]).permute(0, 3, 1, 2).float() / 127.5 - 1
            if t.shape[-1] != resolution:
                t = F.interpolate(t, size=(resolution, resolution), mode="bilinear", align_corners=False,
                                  antialias=True)
            frames.append(t)
            cams.append(torch.from_numpy(c[:k]))
            gt = root / "groundtruth" / f"{n}.npz"
            if gt.is_file():
                with np.load(gt) as z:
                    d = z["depth"][:k].astype(np.float32) if "depth" in z else None
                    m = _coverage(z["mask"][:k]) if "mask" in z else None
                self.depth.append(torch.from_numpy(d) if d is not None else None)
                self.mask.append(torch.from_numpy(m) if m is not None else None)
            else:
                self.depth.append(None)
                self.mask.append(None)
        self.frames, self.cams = frames, cams
        self.depth_kind = "distance"
        meta = root / "groundtruth" / "depth.json"
        if meta.is_file():
            self.depth_kind = json.loads(meta.read_text()).get("kind", "distance")

    def __len__(self):
        return len(self.names)

    def sample(self, n: int, gen: torch.Generator):
        clip = torch.randint(len(self.names), (n,), generator=gen)
        out = {"clip": clip, "img": [], "c": [], "t": [], "depth": [], "mask": []}
        for i in clip.tolist():
            k = len(self.frames[i])
            f = int(torch.randint(k, (1,), generator=gen))
            out["img"].append(self.frames[i][f])
            out["c"].append(self.cams[i][f])
            out["t"].append(f / max(k - 1, 1))
            out["depth"].append(self.depth[i][f] if self.depth[i] is not None else None)
            out["mask"].append(self.mask[i][f] if self.mask[i] is not None else None)
        return out


def _coverage(mask: np.ndarray) -> np.ndarray:
    """Masks as coverage in [0, 1]: `pv3d data synth` stores them as uint8 0..255."""
    if mask.dtype == np.uint8:
        return mask.astype(np.float32) / 255.0
    return np.clip(mask.astype(np.float32), 0.0, 1.0)


def _depth_to_distance(depth, c, kind: str):
    """Ground-truth depth maps as distance along unit rays (the renderer's convention)."""
    if kind == "distance":
        return depth
    # camera-space z: distance = z * |ray in camera coordinates with z = 1|
    res = depth.shape[-1]
    cam2world, intr = split_camera(c)
    _, dirs = pixel_rays(cam2world, intr, res)
    fwd = cam2world[:, :3, 2]
    cos = (dirs * fwd[:, None, :]).sum(-1).reshape(-1, 1, res, res)
    return depth / cos.clamp_min(1e-3)


def train_recon(cfg: ReconConfig, progress=None, cancel: threading.Event | None = None,
                init: str | None = None) -> dict:
    """Fit (or resume fitting) a generator to ``cfg.data``; returns a summary. ``progress(step, steps,
    info)`` is called after every step (``info``: the L1 losses and the images per second)."""
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    mcfg = preset(cfg.preset)
    G = build_generator(mcfg)
    if init:
        ck = read_checkpoint(init)
        load_state_strict(G, ck.part("generator_ema" if ck.has("generator_ema") else "generator"), f"{init}'s generator")
    bank = ClipBank(cfg.data, G.img_resolution)
    n_clips = len(bank)
    z_app = torch.nn.Parameter(torch.randn(n_clips, G.z_dim, generator=gen))
    z_mot = torch.nn.Parameter(torch.randn(n_clips, G.motion_dim, generator=gen))
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    G.train()
    opt = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.0, 0.99))
    opt_lat = torch.optim.Adam([z_app, z_mot], lr=cfg.latent_lr)
    c0 = torch.from_numpy(cameras.conditioning_camera(G.rendering_kwargs))[None]
    step0 = 0
    state_path = out / "recon_state.safetensors"
    if state_path.exists():
        ck = read_checkpoint(state_path)
        load_state_strict(G, ck.part("generator"), f"{state_path}'s generator")
        load_state_strict(G_ema, ck.part("generator_ema"), f"{state_path}'s EMA generator")
        z_app.data.copy_(ck.tensors["extra.z_app"])
        z_mot.data.copy_(ck.tensors["extra.z_mot"])
        step0 = int(ck.meta.get("step", 0))
        gen.set_state(ck.tensors["extra.rng"].to(torch.uint8))
    stop = threading.Event()
    beta = 0.5 ** (1 / max(cfg.ema_halflife_steps, 1e-8))
    weights = RegressionWeights(image=1.0, gradient=0.0, raw=cfg.raw_weight, mask=cfg.mask_weight,
                                depth=cfg.depth_weight)
    losses_hist = []
    t_start = time.time()

    def save(step):
        # truncation pulls towards w_avg; the auto-decoder never maps random z, so set it here to the
        # mean of the mapping of N(0, I) codes, as the adversarial training's running average would be
        with torch.no_grad():
            for g in (G, G_ema):
                zs = torch.randn(2000, g.z_dim, generator=torch.Generator().manual_seed(99))
                g.backbone.mapping.w_avg.copy_(g.mapping(zs, c0.expand(len(zs), -1), truncation_psi=1)[:, 0].mean(0))
        save_checkpoint(state_path, mcfg, {"generator": G, "generator_ema": G_ema},
                        meta={"step": step, "recon": cfg.to_dict(), "clips": bank.names},
                        extra={"z_app": z_app.detach(), "z_mot": z_mot.detach(), "rng": gen.get_state()})

    step = step0
    with stop_on_signals(stop):
        for step in range(step0, cfg.steps):
            if stop.is_set() or (cancel is not None and cancel.is_set()):
                break
            b = bank.sample(cfg.batch, gen)
            img = torch.stack(b["img"])
            c = torch.stack(b["c"]).float()
            t = torch.tensor(b["t"], dtype=torch.float32)
            za = z_app[b["clip"]]
            zm = z_mot[b["clip"]]
            ws = G.mapping(za, c0.expand(len(za), -1))
            o = G.synthesis(ws, zm, t, c, noise_mode="random", deterministic=False)
            masks = [m for m in b["mask"] if m is not None]
            depths = [d for d in b["depth"] if d is not None]
            mask = torch.stack(masks)[:, None] if len(masks) == len(img) and cfg.mask_weight else None
            depth = None
            if mask is not None and len(depths) == len(img) and cfg.depth_weight:
                depth = _depth_to_distance(torch.nan_to_num(torch.stack(depths)[:, None], 0.0), c, bank.depth_kind)
            loss, terms = frame_loss(o, img, mask, depth, weights)
            loss_img, loss_raw = terms["image"], terms.get("raw", 0.0)
            if cfg.density_reg:
                loss = loss + cfg.density_reg * density_smoothness(G, ws, zm, t, o["planes"], gen)
            loss = loss + 1e-4 * (za.square().mean() + zm.square().mean())
            opt.zero_grad(set_to_none=True)
            opt_lat.zero_grad(set_to_none=True)
            loss.backward()
            for p in G.parameters():
                if p.grad is not None:
                    torch.nan_to_num_(p.grad, 0, 0, 0)
            opt.step()
            opt_lat.step()
            with torch.no_grad():
                z_app.mul_(math.sqrt(G.z_dim) / z_app.norm(dim=1, keepdim=True))
                z_mot.mul_(math.sqrt(G.motion_dim) / z_mot.norm(dim=1, keepdim=True))
                for pe, p in zip(G_ema.parameters(), G.parameters()):
                    pe.lerp_(p, 1 - beta)
                for be, bb in zip(G_ema.buffers(), G.buffers()):
                    be.copy_(bb)
            losses_hist.append(loss_img)
            if progress:
                progress(step + 1, cfg.steps, {"img": loss_img, "raw": loss_raw,
                                               "images_per_s": (step - step0 + 1) * cfg.batch / (time.time() - t_start)})
            if (step + 1) % cfg.checkpoint_every == 0:
                save(step + 1)
        else:
            step = cfg.steps
    done = step if stop.is_set() or (cancel is not None and cancel.is_set()) else cfg.steps
    save(done)
    d_img, d_vid = build_discriminators(mcfg)
    final = save_checkpoint(out / "model.safetensors", mcfg,
                            {"generator_ema": G_ema, "generator": G, "img_discriminator": d_img,
                             "vid_discriminator": d_vid},
                            meta={"trained_with": "reconstruction warm start", "steps": done,
                                  "images": done * cfg.batch, "clips": len(bank)})
    elapsed = time.time() - t_start
    return {"steps": done, "images": (done - step0) * cfg.batch, "seconds": elapsed,
            "images_per_s": (done - step0) * cfg.batch / max(elapsed, 1e-9),
            "last_l1": float(np.mean(losses_hist[-20:])) if losses_hist else None, "model": str(final)}


__all__ = ["ReconConfig", "train_recon"]
