"""Teacher distillation: train the generator to reproduce the procedural heads for its own inputs.

The procedural teacher (:mod:`..data.head_codes`) turns an appearance code, a motion code, a timestamp
and a camera into a rendered head with its mask and depth. Each step draws fresh codes, timestamps
and cameras, renders the teacher, and regresses the generator's frames onto it (:mod:`.regression`):
final image and its gradients, raw neural render, silhouette, depth, plus EG3D's density regulariser.
Since codes never repeat there is no finite set of identities to memorise and blend; the mapping
network learns the teacher's smooth code -> identity function.

A share of the samples is drawn with truncation: the generator's ws pulled towards the mean by psi
must render the teacher's head of the code scaled by psi, so that truncated samples (the viewer's
default psi 0.7) are heads of the family too, not blends.

Runs resume from ``OUT/distill_state.safetensors`` (generator, EMA, optimiser, counters, RNG);
``OUT/snapshots/`` keeps the EMA generator every ``snapshot_every`` steps for the training curve;
``OUT/history.jsonl`` the losses; ``OUT/samples/`` teacher-vs-model grids.
"""
from __future__ import annotations

import copy
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from .. import paths
from ..config import ModelConfig, preset
from ..errors import UsageError
from ..rules import Bool, Choice, Float, Int, Str, check_fields
from ..data import head_codes, heads
from ..io import build_discriminators, build_generator, load_state_strict, read_checkpoint, save_checkpoint, \
    save_generator
from ..render import cameras
from .optim_state import load_optimizer_tensors, optimizer_tensors
from .patch_adversary import PatchAdversary
from .regression import RegressionWeights, density_smoothness, frame_loss
from .stopping import stop_on_signals

log = logging.getLogger(__name__)
STATE = "distill_state.safetensors"
TRAINABLE = ("all", "superresolution")


@dataclass
class DistillConfig:
    out: str = "runs/distill"
    init: str | None = "default"      # "default" = the embedded model; None = a fresh preset
    preset: str = "tiny"
    steps: int = 10000
    batch: int = 8
    lr: float = 2e-3
    beta1: float = 0.9                # momentum: a regression, not a GAN (whose G uses 0)
    # the mapping's equalised-lr multiplier (0.01) keeps a GAN stable; here the mapping must learn the
    # code -> identity function as fast as the rest learns: 100 undoes the multiplier
    mapping_lr_scale: float = 100.0
    ema_halflife_steps: float = 100.0
    psi_prob: float = 0.25            # share of samples drawn truncated (psi uniform in [psi_min, 1])
    psi_min: float = 0.5
    t0_prob: float = 0.1              # share of samples at exactly t = 0 (the canonical frame)
    max_yaw_deg: float = 50.0
    max_pitch_deg: float = 20.0
    ssaa: int = 2
    compile_teacher: bool = True      # torch.compile the procedural renderer (falls back when it can't)
    density_reg: float = 0.25
    # free space: density where the teacher's head is farther than free_space_margin (scene units)
    # from random points of the tri-plane box; reaches what no camera sees (e.g. above the head)
    free_space: float = 0.0
    free_space_margin: float = 0.04
    free_space_points: int = 2000
    # occupancy: raw density at least occupancy_sigma where the teacher's head is (deeper than the margin),
    # so that what no camera sees inside (the neck where the box cuts it) stays solid in a mesh
    occupancy: float = 0.0
    occupancy_sigma: float = 20.0
    adv_weight: float = 0.0           # patch-adversarial term for sharpness (0 = pure regression)
    adv_start_step: int = 0
    # "superresolution": train only the super-resolution network (the tri-planes, the decoder and the
    # raw render stay as they are; their forward runs without gradients, so a step costs about a third):
    # for sharpening the final image of a model whose geometry is done. "all": every weight.
    train_only: str = "all"
    weights: RegressionWeights = field(default_factory=RegressionWeights)
    checkpoint_every: int = 100
    snapshot_every: int = 500
    sample_every: int = 250
    seed: int = 0
    threads: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DistillConfig":
        d = dict(d)
        w = d.get("weights", {})
        known = {f.name for f in fields(cls)}
        if not isinstance(w, dict) or set(w) - set(RegressionWeights().to_dict()) or set(d) - known:
            raise UsageError(f"unknown distillation options: {', '.join(sorted(map(str, set(d) - known)))[:200]}")
        d["weights"] = RegressionWeights(**w)
        return cls(**d).validate()

    def validate(self) -> "DistillConfig":
        """Every option's type and range (:data:`DISTILL_RULES`), before anything is built."""
        check_fields(self, DISTILL_RULES)
        if not isinstance(self.weights, RegressionWeights):
            raise UsageError("weights must be RegressionWeights")
        check_fields(self.weights, {k: Float(0, 1e6) for k in asdict(self.weights)}, "weights.")
        return self


#: the accepted range of every distillation option (the `pv3d distill` flags use the same rules)
DISTILL_RULES = {
    "out": Str(nonempty=True), "init": Str(optional=True), "preset": Str(100, nonempty=True),
    "steps": Int(0, 10_000_000), "batch": Int(1, 4096), "lr": Float(0, 1, lo_open=True), "beta1": Float(0, 0.9999),
    "mapping_lr_scale": Float(0, 1e6, lo_open=True), "ema_halflife_steps": Float(0, 1e9),
    "psi_prob": Float(0, 1), "psi_min": Float(0, 1, lo_open=True), "t0_prob": Float(0, 1),
    "max_yaw_deg": Float(0, 90), "max_pitch_deg": Float(0, 89), "ssaa": Int(1, 4), "compile_teacher": Bool(),
    "density_reg": Float(0, 1e6), "free_space": Float(0, 1e6), "free_space_margin": Float(0, 1),
    "free_space_points": Int(1, 100_000), "occupancy": Float(0, 1e6), "occupancy_sigma": Float(-1e3, 1e3),
    "adv_weight": Float(0, 1e6), "adv_start_step": Int(0, 10_000_000), "train_only": Choice(TRAINABLE),
    "checkpoint_every": Int(1, 10_000_000), "snapshot_every": Int(0, 10_000_000),
    "sample_every": Int(0, 10_000_000), "seed": Int(0, 2 ** 32 - 1), "threads": Int(0, 1024),
}


class Distiller:
    def __init__(self, cfg: DistillConfig):
        self.cfg = cfg.validate()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.out = Path(cfg.out)
        init = str(paths.default_checkpoint()) if cfg.init == "default" else cfg.init
        if init:
            ck = read_checkpoint(init)
            # a run that continues a distilled model counts the training before it too (model card)
            self.before = {k: ck.meta.get(k, 0) for k in ("steps", "images", "hours")
                           if isinstance(ck.meta.get(k, 0), (int, float))} \
                if "distillation" in str(ck.meta.get("trained_with", "")) else {}
            self.mcfg: ModelConfig = ck.config
            self.G = build_generator(self.mcfg)
            load_state_strict(self.G, ck.part("generator_ema" if ck.has("generator_ema") else "generator"),
                              f"{init}'s generator")
        else:
            self.before = {}
            self.mcfg = preset(cfg.preset)
            torch.manual_seed(cfg.seed)
            self.G = build_generator(self.mcfg)
        if self.G.z_dim < head_codes.APPEARANCE_DIMS or self.G.motion_dim < head_codes.MOTION_DIMS:
            raise UsageError(f"the teacher reads {head_codes.APPEARANCE_DIMS} appearance and {head_codes.MOTION_DIMS} "
                             f"motion code entries; this model has z_dim {self.G.z_dim}, motion_dim {self.G.motion_dim}")
        self.G.train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        if cfg.train_only == "superresolution":
            self.G.requires_grad_(False)
            self.G.superresolution.requires_grad_(True)
            groups = [{"params": list(self.G.superresolution.parameters())}]
        else:
            mapping = list(self.G.backbone.mapping.parameters())
            ids = {id(p) for p in mapping}
            rest = [p for p in self.G.parameters() if id(p) not in ids]
            groups = [{"params": rest}, {"params": mapping, "lr": cfg.lr * cfg.mapping_lr_scale}]
        self.opt = torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.beta1, 0.99))
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.images = 0
        self.seconds = 0.0
        self.c0 = torch.from_numpy(cameras.conditioning_camera(self.G.rendering_kwargs))[None]
        self.adversary = None
        if cfg.adv_weight > 0:
            with torch.random.fork_rng():
                torch.manual_seed(cfg.seed + 1)       # the same initial discriminator on every run
                self.adversary = PatchAdversary()
        if (self.out / STATE).is_file():
            self._resume()

    # ---------------------------------------------------------------- state
    def _resume(self) -> None:
        ck = read_checkpoint(self.out / STATE)
        load_state_strict(self.G, ck.part("generator"), "the run's generator")
        load_state_strict(self.G_ema, ck.part("generator_ema"), "the run's EMA generator")
        st = ck.meta["distill"]
        load_optimizer_tensors(self.opt, ck.tensors, "opt", st["opt_groups"])
        # learning rates come from this run's options (a resumed run may change them), the moments from the state
        self.opt.param_groups[0]["lr"] = self.cfg.lr
        if len(self.opt.param_groups) > 1:
            self.opt.param_groups[1]["lr"] = self.cfg.lr * self.cfg.mapping_lr_scale
        for g in self.opt.param_groups:
            g["betas"] = (self.cfg.beta1, 0.99)
        self.gen.set_state(ck.tensors["extra.rng"].to(torch.uint8))
        self.step, self.images, self.seconds = int(st["step"]), int(st["images"]), float(st["seconds"])
        if self.adversary is not None and ck.has("patch_discriminator"):
            load_state_strict(self.adversary.D, ck.part("patch_discriminator"), "the run's patch discriminator")
            load_optimizer_tensors(self.adversary.opt, ck.tensors, "opt_adv", st["opt_adv_groups"])
            self.adversary.steps = int(st["adv_steps"])
        log.info("resumed %s at step %d", self.out, self.step)

    def save(self) -> Path:
        tensors, groups = optimizer_tensors(self.opt, "opt")
        st = {"step": self.step, "images": self.images, "seconds": self.seconds, "opt_groups": groups,
              "config": self.cfg.to_dict()}
        parts = {"generator": self.G, "generator_ema": self.G_ema}
        if self.adversary is not None:
            t_adv, g_adv = optimizer_tensors(self.adversary.opt, "opt_adv")
            tensors.update(t_adv)
            st.update(opt_adv_groups=g_adv, adv_steps=self.adversary.steps)
            parts["patch_discriminator"] = self.adversary.D
        return save_checkpoint(self.out / STATE, self.mcfg, parts, meta={"distill": st},
                               extra={**tensors, "rng": self.gen.get_state()})

    def export(self, path) -> Path:
        """The EMA generator (with both discriminators, untrained, so `pv3d train --init` takes it)."""
        d_img, d_vid = build_discriminators(self.mcfg)
        meta = {"trained_with": "teacher distillation (pv3d_core.train.distill)", "steps": self.step,
                "images": self.images, "hours": round(self.seconds / 3600, 2)}
        if self.before:
            meta["continued_from"] = self.before
            meta.update(steps=self.step + int(self.before.get("steps", 0)),
                        images=self.images + int(self.before.get("images", 0)),
                        hours=round(self.seconds / 3600 + float(self.before.get("hours", 0)), 2))
        return save_checkpoint(path, self.mcfg, {"generator_ema": self.G_ema, "generator": self.G_ema,
                                                 "img_discriminator": d_img, "vid_discriminator": d_vid}, meta)

    # ---------------------------------------------------------------- one step
    def draw(self, n: int) -> dict:
        """Codes, truncation, timestamps and cameras of n samples, and the teacher's frames of them."""
        cfg, g, G = self.cfg, self.gen, self.G
        z = torch.randn(n, G.z_dim, generator=g)
        zm = torch.randn(n, G.motion_dim, generator=g)
        t = torch.rand(n, generator=g)
        t = torch.where(torch.rand(n, generator=g) < cfg.t0_prob, torch.zeros_like(t), t)
        psi = torch.where(torch.rand(n, generator=g) < cfg.psi_prob,
                          cfg.psi_min + (1 - cfg.psi_min) * torch.rand(n, generator=g), torch.ones(n))
        c, _, _ = head_codes.sample_cameras(n, g, cfg.max_yaw_deg, cfg.max_pitch_deg)
        target = head_codes.render(z, zm, t, c, G.img_resolution, cfg.ssaa, psi=psi,
                                   compiled=cfg.compile_teacher)
        return {"z": z, "zm": zm, "t": t, "psi": psi, "c": c, **target}

    def shape_terms(self, ws, b: dict, planes) -> tuple[torch.Tensor, torch.Tensor]:
        """(free space, occupancy) at the same random points of the tri-plane box: the mean density
        softplus(σ - 1) where the teacher's head is farther than the margin, and the mean shortfall
        relu(occupancy_sigma - σ) where it is deeper inside than the margin."""
        cfg, G = self.cfg, self.G
        n, m = len(ws), cfg.free_space_points
        half = float(G.rendering_kwargs["box_warp"]) / 2
        pts = (torch.rand(n, m, 3, generator=self.gen) * 2 - 1) * half
        with torch.no_grad():
            d = heads.sdf(pts.reshape(-1, 3), b["heads"].take(torch.arange(n).repeat_interleave(m))).reshape(n, m)
        free = (d > cfg.free_space_margin).to(pts.dtype).to(ws.device)
        inside = (d < -cfg.free_space_margin).to(pts.dtype).to(ws.device)
        sig = G.density(planes, pts.to(ws.device))
        fs = (torch.nn.functional.softplus(sig - 1) * free).sum() / free.sum().clamp_min(1)
        occ = (torch.relu(cfg.occupancy_sigma - sig) * inside).sum() / inside.sum().clamp_min(1)
        return fs, occ

    def mapping(self, z, psi, update_emas: bool = False):
        G = self.G
        ws = G.mapping(z, self.c0.expand(len(z), -1), update_emas=update_emas)
        w_avg = G.backbone.mapping.w_avg
        return w_avg + psi.reshape(-1, 1, 1) * (ws - w_avg)

    def train_step(self) -> dict:
        cfg, G = self.cfg, self.G
        t0 = time.perf_counter()
        # the renderer's stratified sampling draws from torch's global generator: seed it from ours,
        # so that a resumed run continues exactly
        torch.manual_seed(int(torch.randint(2 ** 62, (1,), generator=self.gen)))
        b = self.draw(cfg.batch)
        t_teacher = time.perf_counter() - t0
        if cfg.train_only == "superresolution":
            loss, logs, final = self.superresolution_loss(b)
        else:
            loss, logs, final = self.full_loss(b)
        adv = self.adversary is not None and self.step >= cfg.adv_start_step
        if adv:
            l_adv = self.adversary.generator_loss(final)
            loss = loss + cfg.adv_weight * l_adv
            logs["g_adv"] = float(l_adv.detach())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in G.parameters():
            if p.grad is not None:
                torch.nan_to_num_(p.grad, 0, 0, 0)
        self.opt.step()
        if adv:
            logs.update(self.adversary.discriminator_step(b["image"], final))
        beta = 0.5 ** (1 / max(cfg.ema_halflife_steps, 1e-8))
        with torch.no_grad():
            for pe, p in zip(self.G_ema.parameters(), G.parameters()):
                pe.lerp_(p, 1 - beta)
            for be, bb in zip(self.G_ema.buffers(), G.buffers()):
                be.copy_(bb)
        self.step += 1
        self.images += cfg.batch
        dt = time.perf_counter() - t0
        self.seconds += dt
        logs.update(step=self.step, images=self.images, seconds=round(self.seconds, 1),
                    step_s=round(dt, 3), teacher_s=round(t_teacher, 3))
        return logs

    def full_loss(self, b: dict) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """(loss, logs, final frames): every term on every weight: the regression of the final and raw
        frames, silhouette and depth, the density regulariser and the 3D terms."""
        cfg, G = self.cfg, self.G
        ws = self.mapping(b["z"], b["psi"], update_emas=True)
        # const noise: the teacher is deterministic, and display renders use the const buffers
        out = G.synthesis(ws, b["zm"], b["t"], b["c"], noise_mode="const", deterministic=False)
        loss, logs = frame_loss(out, b["image"], b["mask"], b["depth"], cfg.weights)
        if cfg.density_reg:
            reg = density_smoothness(G, ws, b["zm"], b["t"], out["planes"], self.gen)
            loss = loss + cfg.density_reg * reg
            logs["density"] = float(reg.detach())
        if cfg.free_space or cfg.occupancy:
            fs, occ = self.shape_terms(ws, b, out["planes"])
            loss = loss + cfg.free_space * fs + cfg.occupancy * occ
            logs["free_space"], logs["occupancy"] = float(fs.detach()), float(occ.detach())
        return loss, logs, out["image"]

    def superresolution_loss(self, b: dict) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """(loss, logs, final frames): the final frame's terms (image, gradients) on the super-resolution
        network alone; the mapping, tri-planes and raw render run without gradients."""
        cfg, G = self.cfg, self.G
        with torch.no_grad():
            ws = self.mapping(b["z"], b["psi"])
            planes = G.planes(ws, b["zm"], b["t"], noise_mode="const")
            raw = G.render_planes(planes, ws, b["c"], deterministic=False, superresolution=False)
        image = G.superresolution(raw["image_raw"], raw["feature_image"], ws,
                                  noise_mode=G.rendering_kwargs["superresolution_noise_mode"])
        w = RegressionWeights(image=cfg.weights.image, gradient=cfg.weights.gradient, raw=0, mask=0, depth=0)
        return (*frame_loss({**raw, "image": image}, b["image"], weights=w), image)

    # ---------------------------------------------------------------- samples
    @torch.no_grad()
    def sample_grid(self, n: int = 4) -> np.ndarray:
        """Rows: fixed codes (truncation 1 and 0.7); columns: teacher | EMA model at (t, yaw) pairs."""
        g = torch.Generator().manual_seed(1234)
        z = torch.randn(n, self.G.z_dim, generator=g)
        zm = torch.randn(n, self.G.motion_dim, generator=g)
        rows = []
        for psi in (1.0, 0.7):
            for i in range(n):
                cells = []
                for t, yaw in ((0.0, 0.0), (0.5, -0.5), (1.0, 0.5)):
                    c = torch.from_numpy(cameras.OrbitCamera(yaw, 0.0).c())[None]
                    tt = torch.tensor([t])
                    teach = head_codes.render(z[i:i + 1], zm[i:i + 1], tt, c, self.G.img_resolution, 2, psi)["image"]
                    ws = self.G_ema.mapping(z[i:i + 1], self.c0, truncation_psi=psi)
                    img = self.G_ema.synthesis(ws, zm[i:i + 1], tt, c)["image"]
                    cells += [teach, img]
                rows.append(torch.cat(cells, -1))
        grid = torch.cat(rows, -2)[0]
        return ((grid.permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).byte().numpy()


def distill(cfg: DistillConfig, progress=None, cancel: threading.Event | None = None) -> dict:
    """Run (or resume) a distillation; Ctrl-C / SIGTERM / SIGHUP / ``cancel`` save the state and stop
    cleanly. ``progress(step, steps, logs)`` is called after every step."""
    from ..export import write_png

    d = Distiller(cfg)
    out = d.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "snapshots").mkdir(exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)
    stop = threading.Event()
    step0, t0 = d.step, time.time()
    with stop_on_signals(stop):
        with open(out / "history.jsonl", "a") as hist:
            while d.step < cfg.steps:
                if stop.is_set() or (cancel is not None and cancel.is_set()):
                    break
                logs = d.train_step()
                hist.write(json.dumps(logs) + "\n")
                if progress:
                    progress(d.step, cfg.steps, logs)
                if d.step % cfg.checkpoint_every == 0:
                    hist.flush()
                    d.save()
                if cfg.snapshot_every and d.step % cfg.snapshot_every == 0:
                    save_generator(out / "snapshots" / f"g_ema_{d.step:07d}.safetensors", d.G_ema,
                                   meta={"step": d.step, "images": d.images, "seconds": d.seconds},
                                   name=d.mcfg.name)
                if cfg.sample_every and d.step % cfg.sample_every == 0:
                    write_png(out / "samples" / f"{d.step:07d}.png", d.sample_grid())
    d.save()
    final = d.export(out / "model.safetensors")
    elapsed = time.time() - t0
    return {"steps": d.step, "images": d.images, "hours_total": round(d.seconds / 3600, 2),
            "images_per_s_this_run": round((d.step - step0) * cfg.batch / max(elapsed, 1e-9), 3),
            "model": str(final), "interrupted": d.step < cfg.steps}


__all__ = ["DistillConfig", "Distiller", "distill"]
