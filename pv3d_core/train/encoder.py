"""Training a portrait encoder (:mod:`pv3d_core.encoder`) on a generator's own samples.

Each step the generator draws a few fresh samples (random appearance codes, truncation for a share of
them, random motion codes and timestamps, half of them at t = 0, cameras uniform in the yaw / pitch
range the model was trained with) into a pool; a batch is drawn from the pool and augmented the way
real photos differ from renders (:func:`pv3d_core.train.photo_augment.augment`). Losses:

- **latent**: squared distance between predicted and true W+ in units of the model's latent spread
  (the true appearance latent whatever the motion: the encoder learns to read the canonical face);
- **image**: the predicted latent rendered by the (frozen) generator at the sample's camera, motion
  and t, L1 against the clean sample on the final and raw images (a few samples per step: rendering
  with gradients is the expensive part);
- **pose**: squared error of the predicted yaw and pitch.

The saved encoder is an exponential moving average of the trained one. Runs resume from
``RUN/state.safetensors`` (encoder, average, optimiser, counters, RNG; the pool is refilled); Ctrl-C,
SIGTERM and SIGHUP save the state and stop cleanly, as does ``max_minutes``. The encoder file itself is
written (atomically) only when the last step is done, or, with ``write_on_stop`` (a time budget: "the
best encoder in M minutes"), also when the run stops early; the run's state stays, to continue it.
``init`` starts a new run from an encoder file or from another run's state (its averaged encoder). Under
torchrun each process draws its own samples and gradients are averaged
(:class:`pv3d_core.train.dist.Dist`).
"""
from __future__ import annotations

import copy
import json
import logging
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..encoder import EncoderConfig, PortraitEncoder, fingerprint, load_encoder, save_encoder
from ..errors import CheckpointError, UsageError
from ..rules import Bool, Float, Int, Str, check_fields
from ..io import load_generator, read_checkpoint, save_checkpoint
from ..render import cameras
from .dist import Dist
from .photo_augment import augment
from .optim_state import load_optimizer_tensors, optimizer_tensors

log = logging.getLogger(__name__)
STATE = "state.safetensors"


@dataclass
class EncoderTrainConfig:
    ckpt: str = ""
    out: str = ""                     # the encoder file written at the end
    run: str = ""                     # state, history, samples ("" = OUT without suffix + ".run")
    init: str | None = None           # start from these weights: an encoder file, or a training run's folder
                                      # (its averaged encoder), e.g. one made for an earlier model
    steps: int = 3000
    batch: int = 16                   # samples per step, all processes together
    fresh: int = 4                    # new generator samples per step (per process), the rest from the pool
    pool: int = 2048                  # samples kept for reuse (per process); capped by pool_megabytes
    pool_megabytes: int = 1024
    image_samples: int = 2            # samples per step (per process) whose predicted latent is rendered
    lr: float = 1e-3
    warmup: int = 100
    ema_halflife_steps: float = 100.0
    latent_weight: float = 1.0
    image_weight: float = 1.0
    raw_weight: float = 0.5
    pose_weight: float = 1.0
    t0_prob: float = 0.5              # share of samples at t = 0 (the others: random motion code and t)
    psi_prob: float = 0.5             # share drawn with truncation psi ~ U(psi_min, 1)
    psi_min: float = 0.5
    max_yaw_deg: float = 50.0
    max_pitch_deg: float = 20.0
    augment: bool = True
    checkpoint_every: int = 100
    eval_every: int = 250
    eval_samples: int = 32
    max_minutes: float = 0.0          # stop (state saved) after this long; 0 = no limit
    write_on_stop: bool = False       # stopped early, write the (averaged) encoder as it is too
    seed: int = 0
    threads: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def run_dir(self) -> Path:
        if self.run:
            return Path(self.run)
        out = Path(self.out)
        return out.with_name(out.name[:-len(out.suffix)] + ".run" if out.suffix else out.name + ".run")

    def validate(self) -> "EncoderTrainConfig":
        """Every option's type and range (:data:`ENCODER_TRAIN_RULES`, the flags' rules too)."""
        if not self.ckpt or not self.out:
            raise UsageError("both the model checkpoint and the output encoder file are needed")
        if not str(self.out).endswith(".safetensors"):
            raise UsageError(f"the encoder file must end in .safetensors, got {self.out}")
        check_fields(self, ENCODER_TRAIN_RULES)
        return self


_W = Float(0, 1e6)
_P = Float(0, 1)
#: the accepted range of every option of an encoder training (`pv3d train-encoder`'s flags use them)
ENCODER_TRAIN_RULES = {
    "ckpt": Str(nonempty=True), "out": Str(nonempty=True), "run": Str(), "init": Str(optional=True),
    "steps": Int(0, 10_000_000), "batch": Int(1, 4096), "fresh": Int(1, 4096), "pool": Int(1, 1_000_000),
    "pool_megabytes": Int(1, 1 << 20), "image_samples": Int(0, 4096), "lr": Float(0, 1, lo_open=True),
    "warmup": Int(0, 10_000_000), "ema_halflife_steps": Float(0, 1e9), "latent_weight": _W, "image_weight": _W,
    "raw_weight": _W, "pose_weight": _W, "t0_prob": _P, "psi_prob": _P, "psi_min": Float(0, 1, lo_open=True),
    "max_yaw_deg": Float(0, 180), "max_pitch_deg": Float(0, 89), "augment": Bool(),
    "checkpoint_every": Int(1, 10_000_000), "eval_every": Int(0, 10_000_000), "eval_samples": Int(1, 100_000),
    "max_minutes": Float(0, 1e7), "write_on_stop": Bool(), "seed": Int(0, 2 ** 32 - 1), "threads": Int(0, 1024),
}


# ------------------------------------------------------------------------------------ trainer

class EncoderTrainer:
    def __init__(self, cfg: EncoderTrainConfig, dist: Dist | None = None):
        self.cfg = cfg.validate()
        self.dist = dist or Dist()
        d = self.dist
        if cfg.batch % d.world:
            raise UsageError(f"--batch {cfg.batch} must be divisible by the number of processes {d.world}")
        self.local_batch = cfg.batch // d.world
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.dev = d.device
        self.G = load_generator(cfg.ckpt, device=self.dev)
        self.fp = fingerprint(self.G)
        self.run = cfg.run_dir()
        self.c0 = torch.from_numpy(cameras.conditioning_camera(self.G.rendering_kwargs)).to(self.dev)[None]
        pivot = tuple(self.G.rendering_kwargs.get("avg_camera_pivot", cameras.DEFAULT_PIVOT))
        radius = float(self.G.rendering_kwargs.get("avg_camera_radius", cameras.DEFAULT_RADIUS))
        self.orbit = (pivot, radius)
        # latent statistics (the same on every process: a fixed generator)
        g = torch.Generator().manual_seed(12345)
        with torch.no_grad():
            z = torch.randn(4000, self.G.z_dim, generator=g).to(self.dev)
            w = torch.cat([self.G.mapping(z[i:i + 500], self.c0.expand(len(z[i:i + 500]), -1))[:, 0]
                           for i in range(0, len(z), 500)])
            self.w_avg = w.mean(0)
            self.spread = float((w - self.w_avg).square().sum(-1).mean().sqrt())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)          # the same initial encoder on every run and process
            self.enc = PortraitEncoder(EncoderConfig.for_generator(self.G)).to(self.dev)
        self.init_note = None
        if cfg.init:
            self._init_from(cfg.init)
        self.enc.set_latent_stats(self.w_avg, self.spread)
        d.broadcast_module(self.enc)
        self.ema = copy.deepcopy(self.enc).eval().requires_grad_(False)
        self.opt = torch.optim.Adam(self.enc.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
        self.gen = torch.Generator().manual_seed(cfg.seed * 1000 + d.rank)     # batches and augmentation
        self.step, self.samples_drawn, self.seconds = 0, 0, 0.0
        res = self.G.img_resolution
        per_sample = 3 * res * res + 2 * self.G.neural_rendering_resolution ** 2 + 4 * (
            self.G.num_ws * self.G.w_dim + self.G.motion_dim + 30)
        self.pool_size = max(self.local_batch, min(cfg.pool, cfg.pool_megabytes * 2 ** 20 // per_sample))
        self.pool: dict | None = None
        if (self.run / STATE).is_file():
            self._resume()

    # ---------------------------------------------------------------- state
    def _init_from(self, path) -> None:
        """Start from an encoder file, or from a training run (``X.run/`` or its state file: the run's
        averaged encoder, which is what its encoder file would have held), e.g. an earlier model's."""
        p = Path(path)
        state = p / STATE if p.is_dir() else p
        if state.name == STATE or p.is_dir():
            if not state.is_file():
                raise CheckpointError(f"--init {path}: no encoder training state ({STATE}) in it")
            from ..io import load_state_strict

            ck = read_checkpoint(state)
            if "encoder_training" not in ck.meta or not ck.has("encoder_ema"):
                raise CheckpointError(f"--init {path} is not an encoder training run")
            load_state_strict(self.enc, ck.part("encoder_ema"), f"--init {path} (the run's averaged encoder)")
            st = ck.meta["encoder_training"]
            self.init_note = f"started from the run {p} (step {st.get('step')})"
        else:
            ef = load_encoder(path, device=self.dev)
            if (ef.encoder.config.num_ws, ef.encoder.config.w_dim) != (self.G.num_ws, self.G.w_dim):
                raise CheckpointError(f"--init {path} is an encoder for another latent layout")
            self.enc = ef.encoder
            self.init_note = f"started from {path}"
        self.enc = self.enc.to(self.dev).train().requires_grad_(True)

    def _resume(self) -> None:
        ck = read_checkpoint(self.run / STATE)
        st = ck.meta.get("encoder_training", {})
        if st.get("generator_fingerprint") != self.fp:
            raise CheckpointError(f"{self.run} holds an encoder training for another model (fingerprint "
                                  f"{st.get('generator_fingerprint')}, this model {self.fp}); choose another "
                                  "output or delete that folder")
        from ..io import load_state_strict

        load_state_strict(self.enc, ck.part("encoder"), "the run's encoder")
        load_state_strict(self.ema, ck.part("encoder_ema"), "the run's averaged encoder")
        load_optimizer_tensors(self.opt, ck.tensors, "opt", st["opt_groups"])
        for grp in self.opt.param_groups:
            grp["lr"] = self.cfg.lr
        self.gen.set_state(ck.tensors[f"extra.rng{self.dist.rank}"].to(torch.uint8)
                           if f"extra.rng{self.dist.rank}" in ck.tensors else ck.tensors["extra.rng0"].to(torch.uint8))
        self.step, self.samples_drawn, self.seconds = int(st["step"]), int(st["samples"]), float(st["seconds"])
        log.info("resumed %s at step %d", self.run, self.step)

    def save(self) -> Path | None:
        rngs = self.dist.gather_object(self.gen.get_state())
        if not self.dist.main:
            return None
        tensors, groups = optimizer_tensors(self.opt, "opt")
        tensors.update({f"rng{i}": r for i, r in enumerate(rngs)})
        st = {"step": self.step, "samples": self.samples_drawn, "seconds": self.seconds, "opt_groups": groups,
              "config": self.cfg.to_dict(), "generator_fingerprint": self.fp, "world": self.dist.world}
        from ..config import ModelConfig

        return save_checkpoint(self.run / STATE, ModelConfig(generator=self.G.config, name="encoder-run"),
                               {"encoder": self.enc, "encoder_ema": self.ema}, meta={"encoder_training": st},
                               extra=tensors)

    # ---------------------------------------------------------------- samples
    def _sample_gen(self, index: int, stream: int = 0) -> torch.Generator:
        """The random numbers of sample ``index`` of this process (``stream`` 1: the held-out samples)."""
        return torch.Generator().manual_seed(int(np.random.SeedSequence(
            [self.cfg.seed, self.dist.rank, stream, index]).generate_state(1, np.uint64)[0] >> 1))

    def draw(self, indices, stream: int = 0) -> dict:
        """Generator samples ``indices`` (each a function of its index alone): clean image, opacity,
        true W+, motion code, t, camera, pose."""
        cfg, G, dev = self.cfg, self.G, self.dev
        pivot, radius = self.orbit
        rows = []
        for k in indices:
            g = self._sample_gen(k, stream)
            z = torch.randn(G.z_dim, generator=g)
            psi = float(cfg.psi_min + (1 - cfg.psi_min) * torch.rand((), generator=g)) \
                if float(torch.rand((), generator=g)) < cfg.psi_prob else 1.0
            zm = torch.randn(G.motion_dim, generator=g)
            t = 0.0 if float(torch.rand((), generator=g)) < cfg.t0_prob else float(torch.rand((), generator=g))
            yaw = float(torch.rand((), generator=g) * 2 - 1) * math.radians(cfg.max_yaw_deg)
            pitch = float(torch.rand((), generator=g) * 2 - 1) * math.radians(cfg.max_pitch_deg)
            rows.append((z, psi, zm, t, yaw, pitch))
        n = len(rows)
        z = torch.stack([r[0] for r in rows]).to(dev)
        psi = torch.tensor([r[1] for r in rows], device=dev)
        zm = torch.stack([r[2] for r in rows]).to(dev)
        t = torch.tensor([r[3] for r in rows], device=dev)
        pose = torch.tensor([[r[4], r[5]] for r in rows], device=dev)
        c = torch.stack([torch.from_numpy(cameras.OrbitCamera(r[4], r[5], radius, pivot).c()) for r in rows]).to(dev)
        with torch.no_grad():
            ws = G.mapping(z, self.c0.expand(n, -1))
            ws = self.w_avg + psi.view(-1, 1, 1) * (ws - self.w_avg)
            out = G.synthesis(ws, zm, t, c, noise_mode="const", deterministic=True)
        return {"image": out["image"].clamp(-1, 1), "alpha": out["image_alpha"], "ws": ws, "zm": zm, "t": t, "c": c,
                "pose": pose}

    def _pool_want(self) -> int:
        return max(self.local_batch, self.pool_size // 4)

    def _chunks(self, upto: int):
        """The chunks samples 0..upto-1 are drawn in: eights while the pool is first filled, then
        ``fresh`` per step (the same chunks when a resumed run draws them again, so the same floats)."""
        want, k = self._pool_want(), 0
        while k < upto:
            n = min(8, want - k) if k < want else self.cfg.fresh
            yield range(k, k + n)
            k += n

    def _to_pool(self, indices, s: dict) -> None:
        if self.pool is None:
            P = self.pool_size
            self.pool = {"image": torch.zeros((P,) + tuple(s["image"].shape[1:]), dtype=torch.uint8, device=self.dev),
                         "alpha": torch.zeros((P,) + tuple(s["alpha"].shape[1:]), dtype=torch.float16, device=self.dev),
                         **{k: torch.zeros((P,) + tuple(s[k].shape[1:]), device=self.dev)
                            for k in ("ws", "zm", "t", "c", "pose")}}
        for i, k in enumerate(indices):
            j = k % self.pool_size
            self.pool["image"][j] = ((s["image"][i] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
            self.pool["alpha"][j] = s["alpha"][i].to(torch.float16)
            for key in ("ws", "zm", "t", "c", "pose"):
                self.pool[key][j] = s[key][i]

    @property
    def pool_fill(self) -> int:
        return min(self.samples_drawn, self.pool_size)

    def fill_pool(self, progress=None) -> None:
        """Draw the pool's first quarter before training, or, in a resumed run, draw again the samples
        the pool held when the state was saved."""
        want = self._pool_want()
        target = max(want, self.samples_drawn)
        first = max(0, target - self.pool_size)
        for chunk in self._chunks(target):
            if chunk.stop <= first:
                continue
            self._to_pool(chunk, self.draw(chunk))
            if progress:
                progress(min(chunk.stop - first, target - first), target - first)
        self.samples_drawn = target

    def _from_pool(self, idx: torch.Tensor) -> dict:
        out = {k: v[idx] for k, v in self.pool.items()}
        out["image"] = out["image"].float() / 127.5 - 1
        out["alpha"] = out["alpha"].float()
        return out

    # ---------------------------------------------------------------- one step
    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        warm = min(1.0, (step + 1) / max(1, cfg.warmup))
        decay = 0.55 + 0.45 * math.cos(math.pi * min(1.0, step / max(1, cfg.steps)))
        return cfg.lr * warm * decay

    def losses(self, b: dict, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        cfg, G = self.cfg, self.G
        out = self.enc(x)
        true_latent = (b["ws"] - self.w_avg) / self.spread
        l_lat = (out["latent"] - true_latent).square().sum(-1).mean()
        l_pose = (out["pose"] - b["pose"]).square().sum(-1).mean()
        loss = cfg.latent_weight * l_lat + cfg.pose_weight * l_pose
        logs = {"latent": float(l_lat.detach()), "pose_deg": math.degrees(float(l_pose.detach().sqrt()))}
        k = min(cfg.image_samples, len(x))
        if k and cfg.image_weight:
            r = G.synthesis(out["ws"][:k], b["zm"][:k], b["t"][:k], b["c"][:k], noise_mode="const", deterministic=True)
            tgt = b["image"][:k]
            tgt_raw = F.interpolate(tgt, size=r["image_raw"].shape[-2:], mode="bilinear", align_corners=False,
                                    antialias=True)
            l_img = (r["image"] - tgt).abs().mean() + cfg.raw_weight * (r["image_raw"] - tgt_raw).abs().mean()
            loss = loss + cfg.image_weight * l_img
            logs["image"] = float(l_img.detach())
        return loss, logs

    def train_step(self) -> dict:
        cfg = self.cfg
        t0 = time.perf_counter()
        chunk = range(self.samples_drawn, self.samples_drawn + cfg.fresh)
        self._to_pool(chunk, self.draw(chunk))
        self.samples_drawn += cfg.fresh
        t_draw = time.perf_counter() - t0
        idx = torch.randint(self.pool_fill, (self.local_batch,), generator=self.gen)
        # the newest samples always take part
        newest = torch.tensor(list(chunk)[-min(cfg.fresh, self.local_batch):])
        idx[:len(newest)] = newest % self.pool_size
        b = self._from_pool(idx.to(self.dev))
        x = augment(b["image"], b["alpha"], self.gen) if cfg.augment else b["image"]
        for grp in self.opt.param_groups:
            grp["lr"] = self.lr_at(self.step)
        self.enc.train()
        loss, logs = self.losses(b, x)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.dist.average_grads(self.enc)
        self.opt.step()
        beta = 0.5 ** (1 / max(cfg.ema_halflife_steps, 1e-8))
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.enc.parameters()):
                pe.lerp_(p, 1 - beta)
            for be, bb in zip(self.ema.buffers(), self.enc.buffers()):
                be.copy_(bb)
        self.step += 1
        dt = time.perf_counter() - t0
        self.seconds += dt
        logs.update(step=self.step, loss=float(loss.detach()), step_s=round(dt, 3), draw_s=round(t_draw, 3),
                    samples=self.samples_drawn * self.dist.world)
        return logs

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, encoder: PortraitEncoder | None = None) -> dict:
        """Held-out samples (a fixed seed, clean, no augmentation): latent error, pose error in degrees,
        PSNR of the encoder's render against the sample at the sample's camera, motion and t; and, to
        compare, the latent error and PSNR of always answering the mean face. The latent error stays
        high where the synthesis ignores directions of w (a distilled model reads 33 of its code's 128
        entries, the mapping mixes all of them): the PSNR is the figure that matters."""
        enc = encoder or self.ema
        enc.eval()
        lat, base, pose, psnrs, base_psnrs = [], [], [], [], []
        for i in range(0, self.cfg.eval_samples, 8):
            b = self.draw(range(i, min(i + 8, self.cfg.eval_samples)), stream=1)
            out = enc(b["image"])
            true = (b["ws"] - self.w_avg) / self.spread
            lat.append((out["latent"] - true).square().sum(-1).mean(1))
            base.append(true.square().sum(-1).mean(1))
            pose.append((out["pose"] - b["pose"]).square().sum(-1).sqrt())
            for ws, acc in ((out["ws"], psnrs), (self.w_avg.expand_as(out["ws"]), base_psnrs)):
                r = self.G.synthesis(ws, b["zm"], b["t"], b["c"], noise_mode="const", deterministic=True)["image"]
                mse = ((r.clamp(-1, 1) - b["image"]) / 2).square().mean((1, 2, 3))
                acc.append(10 * torch.log10(1 / mse.clamp(min=1e-10)))
        return {"eval_latent": float(torch.cat(lat).mean()), "eval_latent_mean_face": float(torch.cat(base).mean()),
                "eval_pose_deg": math.degrees(float(torch.cat(pose).mean())),
                "eval_psnr": float(torch.cat(psnrs).mean()), "eval_psnr_mean_face": float(torch.cat(base_psnrs).mean())}

    def export(self) -> Path:
        meta = {"trained_for": str(self.cfg.ckpt), "steps": self.step, "samples": self.samples_drawn * self.dist.world,
                "hours": round(self.seconds / 3600, 3), "processes": self.dist.world, "config": self.cfg.to_dict(),
                "init": self.init_note}
        meta.update(self.evaluate())
        return save_encoder(self.cfg.out, self.ema, self.fp, meta)


def train_encoder(cfg: EncoderTrainConfig, progress=None, cancel: threading.Event | None = None) -> dict:
    """Run (or resume) an encoder training; the encoder file is written when the last step is done.
    ``progress(step, steps, logs)`` after every step (and ``progress(n, want, {"stage": "pool"})``
    while the first samples are drawn). Ctrl-C / SIGTERM / SIGHUP / ``cancel`` / ``max_minutes`` save the
    state and stop cleanly; running the same command again continues."""
    from ..files import check_writable

    check_writable(cfg.out, CheckpointError)
    tr = EncoderTrainer(cfg)
    d = tr.dist
    if d.main:
        tr.run.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    old = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            old[sig] = signal.getsignal(sig)
            signal.signal(sig, lambda *a: stop.set())
    step0, t_start = tr.step, time.time()
    deadline = t_start + cfg.max_minutes * 60 if cfg.max_minutes else None
    interrupted = False
    try:
        if tr.step < cfg.steps:
            tr.fill_pool((lambda n, want: progress(n, want, {"stage": "pool"})) if progress else None)
        hist = open(tr.run / "history.jsonl", "a") if d.main else None
        try:
            while tr.step < cfg.steps:
                halt = stop.is_set() or (cancel is not None and cancel.is_set()) or \
                    (deadline is not None and time.time() > deadline)
                if d.any_flag(halt):
                    interrupted = True
                    break
                logs = tr.train_step()
                if cfg.eval_every and tr.step % cfg.eval_every == 0:
                    logs.update(tr.evaluate())
                if hist:
                    hist.write(json.dumps(logs) + "\n")
                if progress:
                    progress(tr.step, cfg.steps, logs)
                if tr.step % cfg.checkpoint_every == 0:
                    if hist:
                        hist.flush()
                    tr.save()
        finally:
            if hist:
                hist.close()
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
    tr.save()
    summary = {"steps": tr.step, "of": cfg.steps, "run": str(tr.run), "hours_total": round(tr.seconds / 3600, 3),
               "steps_this_run": tr.step - step0, "seconds_this_run": round(time.time() - t_start, 1),
               "generator_fingerprint": tr.fp, "interrupted": interrupted}
    finished = not interrupted and tr.step >= cfg.steps
    if (finished or (interrupted and cfg.write_on_stop)) and d.main:
        summary["encoder"] = str(tr.export())
        meta = load_encoder(cfg.out).meta
        summary.update({k: meta[k] for k in ("eval_latent", "eval_latent_mean_face", "eval_pose_deg", "eval_psnr",
                                             "eval_psnr_mean_face") if k in meta})
    return summary


__all__ = ["ENCODER_TRAIN_RULES", "EncoderTrainConfig", "EncoderTrainer", "train_encoder"]
