"""Sparse two-frame PV3D training: the official objective, schedules, checkpoints and resume.

Per step and per process (each process draws ``batch / world`` clips):

- **G main**: one appearance z and one motion code per generated clip, shared by its two frames; the
  two timestamps and the two cameras come from a random real clip (the official camera-sampling
  strategy); the mapping sees each frame's camera, swapped with another clip's with probability
  ``p_swap`` (fading from 1 to ``gpc_reg_prob``); loss = w_img·softplus(−D_img) + w_vid·softplus(−D_vid).
- **G reg** (every ``g_reg_interval`` steps): density regularisation, L1 between σ at 1000 random points
  in [−1, 1]³ and at the same points perturbed by N(0, density_reg_p_dist), × weight × interval.
- **D main**: softplus(D(fake)) + softplus(−D(real)) for both discriminators, weighted as in G main.
- **D reg** (every ``d_reg_interval`` steps): R1 on reals, image D w.r.t. final and raw images, video D
  w.r.t. its 7-channel input, × γ/2 × interval.
- Blur fade on the final images of both D inputs (σ from ``blur_init_sigma`` to 0 over
  ``blur_fade_kimg`` × batch/32), EMA with ramp-up, Adam with the official settings.

Distributed: under ``torchrun`` each process computes its share and the gradients are averaged with one
all-reduce per phase (as StyleGAN2-ADA / EG3D do; ``DistributedDataParallel``'s forward hooks do not fit
a multi-phase GAN step with double-backward R1), so the result equals a single process with the
global batch. Backend: nccl on GPUs, gloo on CPUs.

Checkpoints (ours, safetensors) every ``checkpoint_every`` steps and on Ctrl-C, SIGTERM or SIGHUP,
atomically, keeping the last ``keep_checkpoints``; they hold G, G_ema, both Ds, both optimisers, counters,
every process's RNG states, so ``--resume`` continues exactly. ``--resume`` refuses a run folder without a
checkpoint (a mistyped folder would otherwise start from scratch), and skips, with a warning, a latest
checkpoint that cannot be read for the one kept before it.
"""
from __future__ import annotations

import copy
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import files
from ..config import ModelConfig, preset
from ..data.dataset import ClipDataset, sample_pair_indices  # noqa: F401  (re-exported for tests)
from ..discriminator import filtered_resize
from ..errors import UsageError
from ..io import CheckpointError, build_discriminators, build_generator, load_state_strict, read_checkpoint, \
    save_checkpoint
from .config import TrainConfig
from .dist import Dist
from .optim_state import load_optimizer_tensors, optimizer_tensors
from .stopping import stop_on_signals

CKPT_PREFIX = "checkpoint-"
log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ helpers

def blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """The official blur: a Gaussian-like kernel exp2(−(x/σ)²) of radius floor(3σ), zero padding."""
    size = int(np.floor(sigma * 3))
    if size <= 0:
        return img
    x = torch.arange(-size, size + 1, device=img.device, dtype=img.dtype)
    f = x.div(sigma).square().neg().exp2()
    f = f / f.sum()
    c = img.shape[1]
    img = F.conv2d(img, f.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, size), groups=c)
    return F.conv2d(img, f.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(size, 0), groups=c)


def _rng_pack(rng: np.random.Generator) -> dict:
    return {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state().tolist()}


def _rng_unpack(rng: np.random.Generator, d: dict) -> None:
    rng.bit_generator.state = d["numpy"]
    torch.set_rng_state(torch.tensor(d["torch"], dtype=torch.uint8))


def list_checkpoints(out) -> list[Path]:
    return sorted(Path(out).glob(f"{CKPT_PREFIX}*.safetensors"))


def check_batch(mcfg: ModelConfig, clips: int, world: int = 1) -> None:
    """The discriminators' minibatch-standard-deviation layers split a batch into groups of
    ``min(group size, batch)``, which must divide it: the image discriminator sees 2 frames per clip,
    the video discriminator 1 pair per clip. Say so at start-up rather than fail in a reshape."""
    groups = {"image": (mcfg.img_discriminator.epilogue_kwargs.get("mbstd_group_size", 4), 2),
              "video": (mcfg.vid_discriminator.epilogue_kwargs.get("mbstd_group_size", 4), 1)}

    def fits(b):
        return all(g is None or (k * b) % min(g, k * b) == 0 for g, k in groups.values())

    for what, (g, k) in groups.items():
        n = k * clips
        if g is not None and n % min(g, n):
            good = ", ".join(str(b) for b in range(1, 4 * g + 1) if fits(b))
            per = f" per process ({world} processes)" if world > 1 else ""
            raise UsageError(f"batch: {clips} clips{per} give the {what} discriminator {n} samples, which its "
                             f"minibatch-std groups of {min(g, n)} do not divide; clips{per.split(' (')[0]} "
                             f"that work: {good}, ...")


# ------------------------------------------------------------------------------------ trainer

class Trainer:
    def __init__(self, cfg: TrainConfig, dist: Dist | None = None, resume: bool = False):
        self.cfg = cfg.validate()
        self.dist = dist or Dist()
        d = self.dist
        self.out = Path(cfg.out)
        if resume:
            self._resume_candidates()          # a mistyped run folder: say so before any work
        if cfg.batch % d.world:
            raise UsageError(f"batch {cfg.batch} must be divisible by the number of processes {d.world}")
        self.local_batch = cfg.batch // d.world
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        mcfg = self._model_config()                 # the preset's, or the --init checkpoint's
        self.mcfg = mcfg
        check_batch(mcfg, self.local_batch, d.world)
        self.data = ClipDataset(cfg.data, mcfg.generator.img_resolution)   # DatasetError before any model
        torch.manual_seed(cfg.seed)   # identical initial weights on every process
        self.G = build_generator(mcfg).to(d.device)
        self.D_img, self.D_vid = (m.to(d.device) for m in build_discriminators(mcfg))
        if cfg.init:
            self._load_init(cfg.init)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        for m in (self.G, self.D_img, self.D_vid):
            m.train().requires_grad_(False)
            d.broadcast_module(m)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=tuple(cfg.betas_g), eps=cfg.eps)
        self.opt_d = torch.optim.Adam(list(self.D_img.parameters()) + list(self.D_vid.parameters()),
                                      lr=cfg.lr_d, betas=tuple(cfg.betas_d), eps=cfg.eps)
        self.step = 0
        self.saved_step = -1
        self.images = 0   # real frames shown (kimg counter), global
        self.rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, d.rank, 0x7EA1]))
        torch.manual_seed(cfg.seed * 1000 + d.rank + 1)
        if resume:
            self._resume()
        self.history: list[dict] = []

    # -------------------------------------------------------------- set-up
    def _model_config(self) -> ModelConfig:
        if self.cfg.init:
            return read_checkpoint(self.cfg.init).config
        return preset(self.cfg.preset)

    def _load_init(self, path) -> None:
        ck = read_checkpoint(path)
        load_state_strict(self.G, ck.part("generator" if ck.has("generator") else "generator_ema"),
                          f"{path}'s generator")
        for name, m in (("img_discriminator", self.D_img), ("vid_discriminator", self.D_vid)):
            if ck.has(name):
                load_state_strict(m, ck.part(name), f"{path}'s {name}")

    def _resume_candidates(self) -> list[Path]:
        ckpts = list_checkpoints(self.out)
        if not ckpts:
            where = "does not exist" if not self.out.is_dir() else f"holds no {CKPT_PREFIX}*.safetensors"
            raise UsageError(f"--resume: the run folder {self.out} {where}; check the path, or leave out "
                             "--resume to start a new run")
        return ckpts

    def _resume(self) -> None:
        ckpts = self._resume_candidates()
        for i, path in enumerate(reversed(ckpts)):
            try:
                ck = read_checkpoint(path)
                break
            except CheckpointError as e:
                if i == len(ckpts) - 1:
                    raise CheckpointError(f"--resume: no readable checkpoint in {self.out} (the last: {e})") from None
                log.warning("warning: skipping the unreadable checkpoint %s (%s); resuming from the one before",
                            path.name, e)
        for name, m in (("generator", self.G), ("generator_ema", self.G_ema), ("img_discriminator", self.D_img),
                        ("vid_discriminator", self.D_vid)):
            load_state_strict(m, ck.part(name), f"{path.name}'s {name}")
        tr = ck.meta.get("train")
        if not tr:
            raise CheckpointError(f"{path} is not a training checkpoint (no optimiser state)")
        if tr.get("world") != self.dist.world:
            raise CheckpointError(f"{path.name} was written by {tr.get('world')} processes; resume with "
                                  f"the same number (now {self.dist.world})")
        load_optimizer_tensors(self.opt_g, ck.tensors, "opt_g", tr["opt_g_groups"])
        load_optimizer_tensors(self.opt_d, ck.tensors, "opt_d", tr["opt_d_groups"])
        self.step, self.images = int(tr["step"]), int(tr["images"])
        self.saved_step = self.step
        _rng_unpack(self.rng, tr["rng"][self.dist.rank])

    # -------------------------------------------------------------- schedules
    @property
    def kimg(self) -> float:
        return self.images / 1000

    def blur_sigma(self) -> float:
        fade = self.cfg.blur_fade_kimg * self.cfg.batch / 32
        if fade <= 0:
            return 0.0
        return max(1 - self.kimg / fade, 0) * self.cfg.blur_init_sigma

    def swap_prob(self) -> float:
        a = min(self.kimg / self.cfg.gpc_fade_kimg, 1) if self.cfg.gpc_fade_kimg > 0 else 1
        return (1 - a) * 1 + a * self.cfg.gpc_reg_prob

    def neural_res(self) -> int:
        c = self.cfg
        if c.neural_res_initial is None or c.neural_res_final is None:
            return self.G.neural_rendering_resolution
        a = min(self.kimg / c.neural_res_fade_kimg, 1) if c.neural_res_fade_kimg > 0 else 1
        return int(np.rint(c.neural_res_initial * (1 - a) + c.neural_res_final * a))

    # -------------------------------------------------------------- model calls
    def _gen_ws(self, n: int, update_emas: bool = False):
        """Latents of n generated clips: ws (2n, ...) per frame, motion codes (2n, ...), t (n, 2), c (2n, 25)."""
        G = self.G
        z = torch.randn(n, G.z_dim, device=self.dist.device)
        zm = torch.randn(n, G.motion_dim, device=self.dist.device)
        c, t = self.data.random_cameras(n, self.rng)
        c, t = c.to(self.dist.device), t.to(self.dist.device)
        c2 = c.view(n, 2, -1)
        swap = (torch.rand(n, 1, 1, device=c.device) < self.swap_prob()).expand(-1, 2, 1)
        c_cond = torch.where(swap, torch.roll(c2, 1, 0), c2).reshape(2 * n, -1)
        z2 = z.repeat_interleave(2, 0)
        ws = G.mapping(z2, c_cond, update_emas=update_emas)
        if self.cfg.style_mixing_prob > 0 and float(torch.rand(())) < self.cfg.style_mixing_prob:
            cut = int(torch.randint(1, ws.shape[1], ()))
            ws = ws.clone()
            ws[:, cut:] = G.mapping(torch.randn_like(z).repeat_interleave(2, 0), c, update_emas=False)[:, cut:]
        return ws, zm.repeat_interleave(2, 0), t, c

    def _gen(self, n: int, update_emas: bool = False):
        ws, zm, t, c = self._gen_ws(n, update_emas)
        out = self.G.synthesis(ws, zm, t.reshape(-1), c, neural_rendering_resolution=self.neural_res(),
                               noise_mode="random", deterministic=False, update_emas=update_emas)
        return out, ws, zm, t, c

    def _disc(self, img: dict, t, c, sigma: float, return_input: bool = False):
        img = dict(img)
        img["image"] = blur(img["image"], sigma)
        li = self.D_img(img, c)
        lv, inp = self.D_vid(img, t, c, return_input=return_input)
        return li, lv, inp

    def _real(self):
        frames, c, t = self.data.batch(self.local_batch, self.rng)
        dev = self.dist.device
        frames, c, t = frames.to(dev), c.to(dev), t.to(dev)
        raw = filtered_resize(frames, self.neural_res())
        sigma = self.blur_sigma()
        raw = blur(raw, sigma)
        return {"image": frames, "image_raw": raw}, t, c

    # -------------------------------------------------------------- one step
    def train_step(self) -> dict:
        cfg, n = self.cfg, self.local_batch
        logs = {}
        sigma = self.blur_sigma()
        real, real_t, real_c = self._real()
        # G main
        self.G.requires_grad_(True)
        out, ws, zm, t, c = self._gen(n)
        li, lv, _ = self._disc({"image": out["image"], "image_raw": out["image_raw"]}, t, c, sigma)
        loss_g = cfg.loss_img_weight * F.softplus(-li).mean() + cfg.loss_vid_weight * F.softplus(-lv).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self._step(self.opt_g, self.G)
        logs["G"] = float(loss_g.detach())
        # G reg: density
        if cfg.density_reg > 0 and self.step % cfg.g_reg_interval == 0:
            ws, zm, t, c = self._gen_ws(n)
            pts = torch.rand(ws.shape[0], 1000, 3, device=ws.device) * 2 - 1
            pert = pts + torch.randn_like(pts) * self.G.rendering_kwargs["density_reg_p_dist"]
            both = torch.cat([pts, pert], 1)
            sig = self.G.sample_mixed(both, torch.randn_like(both), ws, zm, t.reshape(-1), noise_mode="random")["sigma"]
            loss_reg = F.l1_loss(sig[:, :1000], sig[:, 1000:]) * cfg.density_reg * cfg.g_reg_interval
            self.opt_g.zero_grad(set_to_none=True)
            loss_reg.backward()
            self._step(self.opt_g, self.G)
            logs["G_density"] = float(loss_reg.detach())
        self.G.requires_grad_(False)
        # D main
        self.D_img.requires_grad_(True)
        self.D_vid.requires_grad_(True)
        with torch.no_grad():
            out, ws, zm, t, c = self._gen(n, update_emas=True)
        fi, fv, _ = self._disc({"image": out["image"], "image_raw": out["image_raw"]}, t, c, sigma)
        ri, rv, _ = self._disc(real, real_t, real_c, sigma)
        loss_d = (cfg.loss_img_weight * (F.softplus(fi).mean() + F.softplus(-ri).mean())
                  + cfg.loss_vid_weight * (F.softplus(fv).mean() + F.softplus(-rv).mean()))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self._step(self.opt_d, self.D_img, self.D_vid)
        logs["D"] = float(loss_d.detach())
        logs["D_real"] = float(ri.detach().mean())
        logs["D_fake"] = float(fi.detach().mean())
        # D reg: R1
        if cfg.r1_gamma > 0 and self.step % cfg.d_reg_interval == 0:
            img = real["image"].detach().requires_grad_(True)
            raw = real["image_raw"].detach().requires_grad_(True)
            rt = real_t.detach()
            ri, rv, inp = self._disc({"image": img, "image_raw": raw}, rt, real_c, sigma, return_input=True)
            gi, gr = torch.autograd.grad(ri.sum(), [img, raw], create_graph=True)
            (gv,) = torch.autograd.grad(rv.sum(), [inp], create_graph=True)
            pen_i = gi.square().sum([1, 2, 3]) + gr.square().sum([1, 2, 3])
            pen_v = gv.square().sum([1, 2, 3])
            loss_r1 = (cfg.loss_img_weight * pen_i.mean() + cfg.loss_vid_weight * pen_v.mean()) \
                * (cfg.r1_gamma / 2) * cfg.d_reg_interval
            self.opt_d.zero_grad(set_to_none=True)
            loss_r1.backward()
            self._step(self.opt_d, self.D_img, self.D_vid)
            logs["D_r1"] = float(loss_r1.detach())
        self.D_img.requires_grad_(False)
        self.D_vid.requires_grad_(False)
        # EMA
        self.images += 2 * cfg.batch
        self._update_ema()
        self.step += 1
        logs["blur_sigma"] = sigma
        logs["swap_prob"] = self.swap_prob()
        return logs

    def _step(self, opt, *modules):
        for m in modules:
            self.dist.average_grads(m)
            for p in m.parameters():
                if p.grad is not None:
                    torch.nan_to_num_(p.grad, 0, 1e5, -1e5)
        opt.step()

    def _update_ema(self):
        cfg = self.cfg
        ema_nimg = cfg.ema_kimg * 1000 * cfg.batch / 32
        if cfg.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.images * cfg.ema_rampup)
        beta = 0.5 ** (2 * cfg.batch / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for pe, p in zip(self.G_ema.parameters(), self.G.parameters()):
                pe.copy_(p.lerp(pe, beta))
            for be, b in zip(self.G_ema.buffers(), self.G.buffers()):
                be.copy_(b)
        self.G_ema.neural_rendering_resolution = self.G.neural_rendering_resolution

    # -------------------------------------------------------------- checkpoints
    def save(self) -> Path | None:
        """Every process takes part (its RNG state is gathered); the main process writes."""
        rngs = self.dist.gather_object(_rng_pack(self.rng))
        self.saved_step = self.step
        if not self.dist.main:
            self.dist.barrier()
            return None
        tg, gg = optimizer_tensors(self.opt_g, "opt_g")
        td, gd = optimizer_tensors(self.opt_d, "opt_d")
        meta = {"train": {"step": self.step, "images": self.images, "world": self.dist.world, "rng": rngs,
                          "opt_g_groups": gg, "opt_d_groups": gd, "config": self.cfg.to_dict()},
                "trained_with": "pv3d train", "steps": self.step, "kimg": self.kimg}
        path = self.out / f"{CKPT_PREFIX}{self.step:08d}.safetensors"
        save_checkpoint(path, self.mcfg, {"generator": self.G, "generator_ema": self.G_ema,
                                          "img_discriminator": self.D_img, "vid_discriminator": self.D_vid},
                        meta=meta, extra={**tg, **td})
        for old in list_checkpoints(self.out)[:-max(1, self.cfg.keep_checkpoints)]:
            old.unlink(missing_ok=True)
        self.dist.barrier()
        return path

    # -------------------------------------------------------------- samples
    @torch.no_grad()
    def sample_grid(self) -> np.ndarray:
        """Fixed seeds, timestamps 0 / 0.5 / 1, two cameras, from G_ema (deterministic rendering)."""
        from ..pipeline import FrameRenderer, render_grid

        return render_grid(FrameRenderer(self.G_ema, plane_cache=1))


def train(cfg: TrainConfig, resume: bool = False, progress=None,
          cancel: threading.Event | None = None, dist: Dist | None = None) -> dict:
    """Run (or resume) a training; returns a summary. Ctrl-C saves a checkpoint and stops cleanly.

    ``progress(step, steps, info)`` is called on the main process after every step (``info``: the
    step's losses and the images per second)."""
    dist = dist or Dist()
    tr = Trainer(cfg, dist, resume=resume)
    out = tr.out
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        files.atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=1), CheckpointError)
    writer = None
    if dist.main and cfg.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tensorboard"))
        except Exception as e:  # tensorboard missing or broken: train anyway, say so
            log.warning("TensorBoard logging off (%s)", e)
    stop = threading.Event()
    step0, t0 = tr.step, time.time()
    last_ckpt = None
    interrupted = False
    with stop_on_signals(stop):
        while tr.step < cfg.steps:
            if dist.any_flag(stop.is_set() or (cancel is not None and cancel.is_set())):
                interrupted = True
                break
            logs = tr.train_step()
            ips = (tr.step - step0) * 2 * cfg.batch / max(time.time() - t0, 1e-9)
            tr.history.append(logs)
            if dist.main:
                if progress:
                    progress(tr.step, cfg.steps, {**logs, "images_per_s": ips})
                if writer and tr.step % cfg.log_every == 0:
                    for k, v in logs.items():
                        writer.add_scalar(f"loss/{k}" if k[0] in "GD" else f"schedule/{k}", v, tr.step)
                    writer.add_scalar("perf/images_per_s", ips, tr.step)
                    writer.add_scalar("progress/kimg", tr.kimg, tr.step)
            if cfg.sample_every and tr.step % cfg.sample_every == 0 and dist.main:
                grid = tr.sample_grid()
                _write_png(out / "samples" / f"{tr.step:08d}.png", grid)
                if writer:
                    writer.add_image("samples", grid, tr.step, dataformats="HWC")
            if cfg.checkpoint_every and tr.step % cfg.checkpoint_every == 0:
                last_ckpt = tr.save()
    if dist.enabled:   # the processes must hold the same weights (gradients were averaged)
        sums = dist.gather_object([float(sum(p.double().sum() for p in m.parameters()))
                                   for m in (tr.G, tr.D_img, tr.D_vid)])
        if any(s != sums[0] for s in sums):
            raise RuntimeError(f"processes diverged: parameter sums {sums}")
    if tr.step != tr.saved_step:
        last_ckpt = tr.save()
    elif last_ckpt is None and dist.main:
        last_ckpt = list_checkpoints(out)[-1] if list_checkpoints(out) else None
    if writer:
        writer.close()
    elapsed = time.time() - t0
    summary = {"steps": tr.step, "steps_this_run": tr.step - step0, "kimg": tr.kimg, "seconds": round(elapsed, 1),
               "images_per_s": round((tr.step - step0) * 2 * cfg.batch / max(elapsed, 1e-9), 3),
               "processes": dist.world, "in_sync": True if dist.enabled else None, "interrupted": interrupted,
               "checkpoint": str(last_ckpt) if last_ckpt else None,
               "last": tr.history[-1] if tr.history else None}
    if dist.main:
        files.atomic_write_text(out / "summary.json", json.dumps(summary, indent=1), CheckpointError)
    return summary


def _write_png(path: Path, img: np.ndarray) -> None:
    from ..export import write_png

    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, img)


__all__ = ["Trainer", "train", "blur", "Dist", "list_checkpoints"]
