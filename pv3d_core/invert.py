"""Projection of portraits into the generator: latent optimisation, then pivotal tuning (PTI).

1. ``w`` phase: optimise one appearance latent (broadcast to every layer) from the average latent,
   rendering the canonical frame (t = 0, where every motion code agrees) from the photo's camera.
   With a ``start`` latent (a portrait encoder's, :mod:`pv3d_core.encoder`) this phase is skipped.
2. optional ``w+`` phase: per-layer offsets around that latent (the refinement of an encoder's start).
3. PTI: fine-tune the generator's synthesis weights around the found latent (the pivot), with a
   locality regulariser that keeps the tuned generator close to the original one for latents near
   the pivot seen from other cameras, so novel views stay sane. The photo shows t = 0 only, so the
   tuned generator keeps the original's motion (see :func:`_pivotal_tune`).

Losses that work offline: pixel (L1 on the final and raw images), SSIM (pytorch-msssim) and a
perceptual term from the image discriminator's features when the checkpoint has one.
Everything is deterministic under ``seed``; progress is reported through a callback, the current
latent and generator between steps through ``on_state`` (:mod:`pv3d_core.live`), and ``cancel`` (a
threading.Event) stops the run with :class:`pv3d_core.errors.Cancelled`.
:func:`invert_video` fits a clip the same way (a shared latent, a motion code and a timestamp per frame).
The results are saved and read back by :mod:`pv3d_core.fit_files`.
"""
from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import Cancelled
from .live import FitState, OnState, StageClock
from .render import cameras
from .rules import Bool, Float, Int, check_fields


@dataclass
class InversionConfig:
    """Defaults measured on the embedded model with scikit-image's astronaut (benchmarks/bench_portrait.py,
    side by side, 1 thread each): against 300 w + 150 PTI steps at lr 3e-4 without the geometry term,
    PSNR 21.9 -> 24.8 dB and renders at yaw -20°/+20° that dlib calls the same person (0.59 / 0.51;
    before, dlib found no face in them), at 1.7x the time (528 s vs 309 s). Alternating the two PTI
    regularisers instead of running both every step saved 30 % but lost 1.2 dB. PTI papers use lr
    3e-4 on full-size StyleGANs; lower ``pti_lr`` for big models if they drift.

    These are the settings of an optimisation from the mean latent (a model without an encoder);
    :meth:`after_encoder` gives those used after an encoder's start."""
    w_steps: int = 200
    wplus_steps: int = 0
    pti_steps: int = 300
    w_lr: float = 0.02
    wplus_lr: float = 0.01
    pti_lr: float = 2e-3
    pti_lr_cosine: bool = False          # PTI's learning rate falls from pti_lr to 0 along a half cosine
    pixel_weight: float = 1.0
    raw_weight: float = 0.5
    ssim_weight: float = 0.5
    perceptual_weight: float = 0.3
    locality_weight: float = 1.0
    locality_alpha: float = 0.5          # how far from the pivot the regulariser's latents lie (in w std)
    locality_yaw: float = 0.45           # radians: cameras the regularisers look from
    geometry_weight: float = 1.0         # keep the pivot's depth and opacity from side views unchanged by PTI
    preserve_motion: bool = True         # a tuned photo moves with the original generator's motion
    freeze_motion: bool = True           # PTI leaves the motion layers as they are
    coarse_fraction: float = 0.0         # share of the first PTI steps fitted at half the neural resolution
    reg_every: int = 1                   # PTI's regularisers on every k-th step only, k times as strong
    reg_scale: float = 1.0               # the regularisers' renders at this share of the neural resolution
    w_avg_samples: int = 2000
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def after_encoder(cls, video: bool = False, **kw) -> "InversionConfig":
        """Settings after an encoder's start: a short per-layer (w+) refinement, then fewer PTI steps at a
        higher learning rate.

        On real photos the encoder's start is close to the mean face (PSNR 11.1 vs 10.9 dB on the
        astronaut: the model knows only cartoon heads), so PTI does the work and its steps are what the
        time buys. Measured on the default model, one thread of a loaded 2-core CPU (PSNR at the photo's
        view after 120 PTI steps, astronaut): lr 2e-3 20.9 dB, 4e-3 22.8, 6e-3 22.8, 8e-3 22.3, 8e-3 with
        a cosine decay 22.1; the regularisers on every 2nd step (``reg_every`` 2, 170 steps in the same
        time) 22.3. Tennis at 4e-3 / 120: 24.5 dB (2e-3 / 100: 22.2), every animation frame the same person
        (largest dlib distance 0.44). Earlier: 120 w+ steps (lr 0.02) reached 23.0 / 23.7 dB but lost the
        tennis face's identity (every frame 0.62-0.66), so the w+ refinement stays short.

        The regularisers render at half the neural resolution (``reg_scale`` 0.5): their ray marcher's
        backward pass was most of a step. Quiet 2-core CPU, 2 threads (`bench_portrait.py invert --methods
        encoder --threads 2 --set ...`), astronaut / tennis: regularisers at full resolution 141 / 135 s,
        20.1 / 23.9 dB; every 2nd step 101 / 97 s, 17.2 / 23.9 dB; at half resolution 102 / 98 s,
        19.2 / 23.8 dB, every frame of the animation and the ±20° views still the same person (largest
        distance 0.57). The astronaut's figure moves by 2-3 dB with a tenth of a degree of camera: compare
        on both photos.

        Photos tune without the locality term (``locality_weight`` 0) and take 180 PTI steps. PSNR at the
        photo's view along PTI (same settings, 400 steps, one thread each) rose with the step count all the
        way: astronaut 19.2 dB at 120 steps, 22.3 at 200, 24.3 at 300, 24.9 at 380; tennis 24.1, 23.5,
        26.8, 27.9: the fit was short of steps, not of anything else. The locality term (a second latent's
        full render with and without the tuning, every step) was half of a step's time, and without it
        each step also gained more (astronaut 22.1 dB at step 120, tennis 24.1). A photo's tuned model is
        only ever rendered at its own latent, whose shape the geometry term guards and whose motion comes
        from the original network (``preserve_motion``). Side by side, quiet, 2 threads
        (`bench_portrait.py invert --methods encoder --threads 2 [--set locality_weight=0 --set
        pti_steps=220]`), astronaut / tennis: with it, 120 steps, 96.2 / 85.8 s, 19.2 / 23.8 dB; without it,
        220 steps, 96.7 / 100.9 s, 24.4 / 25.8 dB, dlib distance at ±20° 0.48 / 0.43 and 0.57 / 0.50
        (with it 0.54 / 0.46 and 0.57 / 0.50), every animation frame the same person (largest 0.36 / 0.39).
        180 steps, so that a drop on the viewer (which shows live states meanwhile) ends within two
        minutes: 82.9 / 78.7 s, 24.2 / 26.0 dB, ±20° 0.51 / 0.42 and 0.57 / 0.47, animation largest
        0.38 / 0.38.

        Without the locality term the learning rate tuned at 120 steps with it was too timid: photos now
        tune at 1.2e-2 falling to 0 along a half cosine. Same 180 steps (so the same time), three photos
        (astronaut / tennis / matplotlib's Grace Hopper, `bench_portrait.py invert --methods encoder
        --photos astronaut,tennis,hopper --threads T --set pti_lr=X [--set pti_lr_cosine=true]`), PSNR at
        1 thread; 2 threads (the sums differ in the last bits and the fit is chaotic):
        4e-3 constant (before) 23.7 / 25.3 / 15.6; 24.2 / 26.0 / 15.8 dB; 6e-3 24.7 / 25.1 / 17.0;
        8e-3 25.4 / 26.3 / 17.6; 24.6 / 26.7 / 16.9, but tennis at -20° and t = 0.5 0.60 (dlib's threshold);
        8e-3 cosine 25.5 / 26.5 / 15.9; **1.2e-2 cosine 25.8 / 26.8 / 16.2; 26.5 / 26.4 / 16.3**, every ±20°
        view at t = 0 and 0.5 at most 0.55, animation largest 0.40-0.49; 1.6e-2 cosine 25.8 /
        26.0 / 15.8. Not kept: the geometry term at half (astronaut 27.1, tennis 21.6 dB: the background
        turned purple) or twice the weight (18.4 / 20.3 / 14.9); refining the photo's yaw and pitch with
        the latent and the tuning (the camera wandered 4-9° for no gain: 24.3 / 24.7 dB).
        Also measured and not kept, in the same time: coarse-to-fine (``coarse_fraction``: a step at
        half the neural resolution costs 181 ms against 264, 2 threads), 0.5 of 214 steps 24.1 / 25.1 /
        15.8 dB, 0.3 of 199 steps 24.8 / 25.6 / 15.7, and tennis at -20° over 0.6 in both; ``torch.compile``
        of the generator's planes, synthesis and ray march (inductor, CPU): 34 s to compile the first two
        steps, then 2.05 s a step against 0.25 eager (guards fail per layer and hit the recompile limit).

        ``video``: the settings of video reconstruction (:func:`pv3d_core.portrait.reconstruct`), which
        keep the locality term, 120 steps and 4e-3: many frames at their own timestamps are a different
        fit. With the photo's settings (`bench_portrait.py video --frames 16 --threads 1 --set
        locality_weight=0 --set pti_steps=180 --set pti_lr=0.012 --set pti_lr_cosine=true`, side by side
        with the defaults): PSNR over the clip 32.7 dB against 31.4, but its worst frame 26.2 against 27.2,
        in 510 s against 456: mixed, so the video keeps its own."""
        base = {"w_steps": 0, "wplus_steps": 30, "pti_steps": 120, "pti_lr": 4e-3, "reg_scale": 0.5}
        if not video:
            base.update(pti_steps=180, locality_weight=0.0, pti_lr=1.2e-2, pti_lr_cosine=True)
        return cls(**{**base, **kw})

    @classmethod
    def legacy(cls, **kw) -> "InversionConfig":
        """The optimisation as it was before issue 15 (PTI's own motion, motion layers tuned): for comparisons."""
        return cls(**{"preserve_motion": False, "freeze_motion": False, **kw})

    def validate(self) -> "InversionConfig":
        """Every option's type and range (:data:`INVERSION_RULES`), before any work."""
        check_fields(self, INVERSION_RULES)
        return self


_STEPS, _W = Int(0, 100_000), Float(0, 1e6)
#: the accepted range of every inversion option (the portrait commands' flags use the same rules)
INVERSION_RULES = {
    "w_steps": _STEPS, "wplus_steps": _STEPS, "pti_steps": _STEPS, "w_lr": Float(0, 10, lo_open=True),
    "pti_lr": Float(0, 1, lo_open=True), "pti_lr_cosine": Bool(), "pixel_weight": _W, "raw_weight": _W, "ssim_weight": _W,
    "perceptual_weight": _W, "locality_weight": _W, "locality_alpha": Float(0, 100), "locality_yaw": Float(0, 1.5),
    "geometry_weight": _W, "w_avg_samples": Int(1, 1_000_000), "seed": Int(0, 2 ** 32 - 1),
    "wplus_lr": Float(0, 10, lo_open=True), "preserve_motion": Bool(), "freeze_motion": Bool(),
    "coarse_fraction": Float(0, 1), "reg_every": Int(1, 1000), "reg_scale": Float(0.125, 1),
}


@dataclass
class InversionResult:
    ws: torch.Tensor                     # (1, num_ws, w_dim) appearance latent
    generator: torch.nn.Module           # the tuned generator (the original one when pti_steps = 0)
    camera: np.ndarray                   # (25,) camera of the photo
    history: list = field(default_factory=list)   # (phase, step, loss)
    metrics: dict = field(default_factory=dict)   # psnr, ssim at the input view
    meta: dict = field(default_factory=dict)
    w_std: float | None = None           # spread of the model's latents (PTI's locality term uses it)
    timings: dict = field(default_factory=dict)   # seconds per phase


Progress = Callable[[str, int, int, float], None]


def _ssim(a, b):
    from pytorch_msssim import ssim

    return ssim((a + 1) / 2, (b + 1) / 2, data_range=1.0, size_average=True,
                win_size=11 if min(a.shape[-2:]) >= 64 else 7)


class ReconstructionLoss:
    """Pixel + SSIM (+ discriminator-feature perceptual) loss against a target view, or against the
    targets ``idx`` of a batch of them (video frames). The raw render may come at any neural resolution
    (coarse-to-fine): its target is resized to match."""

    def __init__(self, cfg: InversionConfig, target: torch.Tensor, raw_res: int, d_img=None):
        self.cfg, self.target, self.d_img = cfg, target, d_img
        self._raw = {}
        self.target_raw = self.raw_target(raw_res)
        self.target_feats = self.features(target, self.target_raw) if d_img is not None else None

    def raw_target(self, res: int) -> torch.Tensor:
        if res not in self._raw:
            self._raw[res] = F.interpolate(self.target, size=(res, res), mode="bilinear", align_corners=False,
                                           antialias=True)
        return self._raw[res]

    def features(self, image, raw):
        d = self.d_img
        x, img = None, torch.cat([image, F.interpolate(raw, size=image.shape[-2:], mode="bilinear",
                                                       align_corners=False, antialias=True)], 1)
        feats = []
        for res in d.block_resolutions:
            x, img = getattr(d, f"b{res}")(x, img)
            feats.append(x)
        return feats

    def __call__(self, out, idx=None) -> torch.Tensor:
        c = self.cfg
        target = self.target if idx is None else self.target[idx]
        target_raw = self.raw_target(out["image_raw"].shape[-1])
        target_raw = target_raw if idx is None else target_raw[idx]
        loss = c.pixel_weight * (out["image"] - target).abs().mean()
        loss = loss + c.raw_weight * (out["image_raw"] - target_raw).abs().mean()
        if c.ssim_weight:
            loss = loss + c.ssim_weight * (1 - _ssim(out["image"], target))
        if self.target_feats is not None and c.perceptual_weight:
            target_feats = self.target_feats if idx is None else [t[idx] for t in self.target_feats]
            feats = self.features(out["image"], out["image_raw"])
            loss = loss + c.perceptual_weight * sum(
                F.mse_loss(f, t) / (t.square().mean() + 1e-8) for f, t in zip(feats, target_feats)) / len(feats)
        return loss


def _check(cancel):
    if cancel is not None and cancel.is_set():
        raise Cancelled("inversion cancelled")


class _Reporter:
    """One optimiser step of a phase, recorded in ``history``, reported to ``progress`` and, with the
    current latent and generator, to ``on_state`` (with the time left from a :class:`StageClock`)."""

    def __init__(self, history: list, progress: Progress | None, on_state: OnState | None, camera,
                 plan: list[tuple[str, int, float]], seconds_per_unit: float = 0.25):
        self.history, self.progress, self.on_state, self.camera = history, progress, on_state, camera
        self.clock = StageClock(plan, seconds_per_unit)

    def state(self, stage, step, total, loss, ws, G, tuned, final=False):
        if self.on_state is None:
            return
        eta, stage_eta = self.clock.tick(stage, step)
        if final:
            eta = stage_eta = 0.0
        self.on_state(FitState(stage, step, total, ws, G, self.camera, loss, self.clock.elapsed(), eta, stage_eta,
                               tuned, final))

    def step(self, opt, loss, phase: str, step: int, total: int, ws=None, G=None, tuned=False) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        self.history.append((phase, step, value))
        if self.progress:
            self.progress(phase, step + 1, total, value)
        if ws is not None:
            self.state(phase, step + 1, total, value, ws, G, tuned)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [-1, 1]."""
    mse = ((a - b) / 2).square().mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def _coarse_resolution(G, scale: float) -> int | None:
    """The neural resolution at ``scale`` of the model's (at least 8), for the renders PTI can afford
    coarser (the early data steps of ``coarse_fraction``, the regularisers of ``reg_scale``); None at 1."""
    return None if scale >= 1 else max(8, round(G.neural_rendering_resolution * scale))


def _orbit(G) -> tuple[tuple, float]:
    """(pivot, radius) of the cameras the model was trained with."""
    return (tuple(G.rendering_kwargs.get("avg_camera_pivot", cameras.DEFAULT_PIVOT)),
            float(G.rendering_kwargs.get("avg_camera_radius", cameras.DEFAULT_RADIUS)))


def _conditioning(G, dev):
    return torch.from_numpy(cameras.conditioning_camera(G.rendering_kwargs)).to(dev)[None]


def _latent_stats(G, cfg: InversionConfig, gen, c0):
    """(mean w (1, 1, w_dim), its spread: root mean squared distance to the mean) over random codes."""
    with torch.no_grad():
        z = torch.randn(cfg.w_avg_samples, G.z_dim, generator=gen).to(c0.device)
        w_samples = G.mapping(z, c0.expand(len(z), -1))[:, :1]
        w_avg = w_samples.mean(0, keepdim=True)
        return w_avg, float(((w_samples - w_avg).square().sum(-1).mean()) ** 0.5)


def pti_cost(cfg: InversionConfig) -> float:
    """A PTI step's cost relative to a latent step (renders with gradients: the data term, then the
    locality term's two renders, and the geometry term's side view without super-resolution)."""
    # a coarser render of the regularisers' (reg_scale 0.5) measured 0.52x their cost: the tri-planes'
    # backward and the super-resolution stay
    coarse = 0.3 + 0.7 * min(cfg.reg_scale, 1.0) ** 2
    return 1.0 + ((1.3 if cfg.locality_weight else 0) + (1.0 if cfg.geometry_weight else 0)) * coarse / cfg.reg_every


def invert(G, target: torch.Tensor, camera, config: InversionConfig | None = None, d_img=None,
           progress: Progress | None = None, cancel: threading.Event | None = None, start: torch.Tensor | None = None,
           on_state: OnState | None = None) -> InversionResult:
    """Project ``target`` ((1, 3, R, R) in [-1, 1] at G.img_resolution, aligned as the training data)
    seen from ``camera`` (25-vector) into G. Returns the latent and the tuned generator.

    ``start``: an initial latent (1, num_ws, w_dim), e.g. a portrait encoder's; the ``w`` phase is then
    skipped and the ``w+`` phase refines it. ``on_state``: see :mod:`pv3d_core.live` (called with the
    starting latent, then after every step)."""
    cfg = (config or InversionConfig()).validate()
    dev = next(G.parameters()).device
    if target.ndim != 4 or target.shape[:2] != (1, 3) or target.shape[-1] != G.img_resolution:
        raise ValueError(f"target must be (1, 3, {G.img_resolution}, {G.img_resolution}), got {tuple(target.shape)}")
    if start is not None and tuple(start.shape) != (1, G.num_ws, G.w_dim):
        raise ValueError(f"start latent must be (1, {G.num_ws}, {G.w_dim}), got {tuple(start.shape)}")
    target = target.to(dev, torch.float32)
    c = torch.as_tensor(np.asarray(camera, dtype=np.float32), device=dev).reshape(1, 25)
    c0 = _conditioning(G, dev)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    zm = torch.zeros(1, G.motion_dim, device=dev)     # t = 0: the motion code has no effect
    t0 = torch.zeros(1, device=dev)
    history: list = []
    timings: dict = {}
    was_training = G.training
    G.eval()
    plan = ([("w", cfg.w_steps, 1.0)] if start is None and cfg.w_steps else []) + \
        ([("w+", cfg.wplus_steps, 1.0)] if cfg.wplus_steps else []) + \
        ([("pti", cfg.pti_steps, pti_cost(cfg))] if cfg.pti_steps else [])
    rep = _Reporter(history, progress, on_state, c[0].cpu().numpy(), plan)

    w_avg, w_std = _latent_stats(G, cfg, gen, c0)
    loss_fn = ReconstructionLoss(cfg, target, G.neural_rendering_resolution, d_img)
    num_ws = G.num_ws

    def render(G_, ws):
        return G_.synthesis(ws, zm, t0, c, noise_mode="const", deterministic=True)

    G.requires_grad_(False)
    first = plan[0][0] if plan else "done"
    rep.state(first, 0, plan[0][1] if plan else 0, 0.0,
              w_avg.repeat(1, num_ws, 1) if start is None else start.to(dev), G, False)
    # 1) w
    tic = time.perf_counter()
    if start is None:
        w = w_avg.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=cfg.w_lr, betas=(0.9, 0.999))
        for step in range(cfg.w_steps):
            _check(cancel)
            ramp = min(1.0, (1 - step / max(cfg.w_steps, 1)) / 0.25)
            lr = cfg.w_lr * (0.5 - 0.5 * math.cos(ramp * math.pi)) * min(1.0, step / max(1, 0.05 * cfg.w_steps))
            for g in opt.param_groups:
                g["lr"] = lr
            noise_scale = w_std * 0.05 * max(0.0, 1 - step / (0.75 * max(cfg.w_steps, 1))) ** 2
            w_noisy = w + torch.randn(w.shape, generator=gen).to(dev) * noise_scale
            rep.step(opt, loss_fn(render(G, w_noisy.repeat(1, num_ws, 1))), "w", step, cfg.w_steps,
                     w.detach().repeat(1, num_ws, 1), G)
        ws = w.detach().repeat(1, num_ws, 1)
        timings["w_s"] = time.perf_counter() - tic
    else:
        ws = start.detach().to(dev, torch.float32)

    # 2) w+
    if cfg.wplus_steps:
        tic = time.perf_counter()
        delta = torch.zeros_like(ws, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=cfg.wplus_lr)
        for step in range(cfg.wplus_steps):
            _check(cancel)
            loss = loss_fn(render(G, ws + delta)) + 1e-3 * delta.square().sum(-1).mean() / w_std ** 2
            rep.step(opt, loss, "w+", step, cfg.wplus_steps, (ws + delta).detach(), G)
        ws = (ws + delta).detach()
        timings["wplus_s"] = time.perf_counter() - tic

    # 3) pivotal tuning
    G_t = G
    if cfg.pti_steps:
        tic = time.perf_counter()
        coarse = _coarse_resolution(G, 0.5)

        def data_loss(G_, step, planes):
            res = coarse if step < cfg.coarse_fraction * cfg.pti_steps else None
            return loss_fn(G_.synthesis(ws, zm, t0, c, neural_rendering_resolution=res, planes=planes,
                                        noise_mode="const", deterministic=True))

        G_t = _pivotal_tune(G, ws, data_loss, cfg, gen, w_std, c0, progress, cancel, history, rep)
        timings["pti_s"] = time.perf_counter() - tic

    with torch.no_grad():
        final = render(G_t, ws)["image"]
    G.train(was_training)
    metrics = {"psnr": psnr(final, target), "ssim": float(_ssim(final, target))}
    rep.state("done", 1, 1, 0.0, ws, G_t, G_t is not G, final=True)
    return InversionResult(ws=ws, generator=G_t, camera=c[0].cpu().numpy(), history=history, metrics=metrics,
                           meta={"config": cfg.to_dict(), "start": "given" if start is not None else "mean latent"},
                           w_std=w_std, timings=timings)


def _pivotal_tune(G, ws, data_loss, cfg: InversionConfig, gen, w_std: float, c0, progress, cancel, history,
                  reporter: _Reporter | None = None, keep_motion: bool = True):
    """A copy of ``G`` whose synthesis weights are tuned to minimise ``data_loss(G_t, step, planes)``
    (``planes``: the tuned generator's tri-planes of the pivot at t = 0, for a data term that renders
    them) around the pivot latent ``ws`` (PTI), with two regularisers seen from side cameras (yaw
    ±locality_yaw, and frontal): *locality* keeps renders of latents near the pivot as the original
    generator made them, *geometry* keeps the pivot's own depth and opacity, so that what one view
    teaches changes the colours more than the shape.

    Motion (``keep_motion``, for photos): a photo shows t = 0 only, where every motion code gives the
    same frame, so nothing in the data says what the tuned weights do at t > 0. Measured on the default
    model (issue 15): after tuning, the pivot's tri-plane change from t = 0 to (motion code, t) was
    2.2-2.6x the original generator's and pointed elsewhere (their difference larger than the original
    change itself), and the face smeared more as t grew. So the motion layers are not tuned
    (``freeze_motion``) and the tuned generator takes its change over t from the original synthesis
    network (:meth:`PV3DGenerator.set_motion_reference`): the tuned face at t = 0 moves exactly as the
    original model moves the pivot. A regulariser pulling the tuned change towards the original's, for
    a few motion codes and timestamps, was tried first and cost 4.4 dB at the input view (100 steps).
    Videos (``keep_motion`` False) fit frames at their own t, so their data supervises the motion.

    Shared by photo and video inversion."""
    dev = ws.device
    pivot, radius = _orbit(G)
    zm = torch.zeros(1, G.motion_dim, device=dev)
    t0 = torch.zeros(1, device=dev)
    side = [torch.from_numpy(cameras.OrbitCamera(yaw=y, radius=radius, pivot=pivot).c()).to(dev)[None]
            for y in (-cfg.locality_yaw, cfg.locality_yaw, 0.0)]
    rep = reporter or _Reporter(history, progress, None, None, [])

    # the regularisers guard shape and the look from the side, not fine detail: a coarser render of
    # theirs (reg_scale) cuts the ray marcher's backward pass, most of a step's cost on a CPU
    reg_res = _coarse_resolution(G, cfg.reg_scale)

    def synth(G_, w, c):
        return G_.synthesis(w, zm, t0, c, reg_res, noise_mode="const", deterministic=True)

    geo_ref = []
    if cfg.geometry_weight:
        with torch.no_grad():
            p0 = G.planes(ws, zm, t0, noise_mode="const")
            for c in side[:2]:
                o = G.ray_march(p0, c, reg_res)
                geo_ref.append((o["image_depth"], o["image_alpha"]))
    G_t = copy.deepcopy(G)
    G_t.requires_grad_(False)
    if keep_motion and cfg.preserve_motion:
        # before tuning, so that the states handed out meanwhile animate as the result will
        G_t.set_motion_reference(G.motion_reference if G.motion_reference is not None else G.backbone.synthesis)
    params = [p for n, p in G_t.named_parameters()
              if n.startswith(("backbone.synthesis.", "superresolution.", "decoder.", "to_img_raw."))
              and not (cfg.freeze_motion and ".motion_time_fuser." in n)]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.pti_lr)
    num_ws = ws.shape[1]
    for step in range(cfg.pti_steps):
        _check(cancel)
        if cfg.pti_lr_cosine:
            for g in opt.param_groups:
                g["lr"] = cfg.pti_lr * 0.5 * (1 + math.cos(math.pi * step / cfg.pti_steps))
        planes = G_t.planes(ws, zm, t0, noise_mode="const")
        loss = data_loss(G_t, step, planes)
        reg = step % cfg.reg_every == 0
        k_reg = step // cfg.reg_every          # which of the regularisers' cameras / latents this time
        if cfg.locality_weight and reg:
            zr = torch.randn(1, G.z_dim, generator=gen).to(dev)
            wr = G.mapping(zr, c0)[:, :1]
            d = wr - ws[:, :1]
            wr = ws[:, :1] + cfg.locality_alpha * w_std * d / (d.norm(dim=-1, keepdim=True) + 1e-8)
            wr = wr.repeat(1, num_ws, 1).detach()
            cr = side[k_reg % len(side)]
            with torch.no_grad():
                ref = synth(G, wr, cr)
            out = synth(G_t, wr, cr)
            loss = loss + cfg.reg_every * cfg.locality_weight * ((out["image"] - ref["image"]).square().mean()
                                                 + (out["image_raw"] - ref["image_raw"]).square().mean())
        if geo_ref and reg:
            k = k_reg % len(geo_ref)
            out = G_t.ray_march(planes, side[k], reg_res)
            loss = loss + cfg.reg_every * cfg.geometry_weight * ((out["image_depth"] - geo_ref[k][0]).abs().mean()
                                                 + (out["image_alpha"] - geo_ref[k][1]).abs().mean())
        rep.step(opt, loss, "pti", step, cfg.pti_steps, ws, G_t, tuned=True)
    return G_t.requires_grad_(False).eval()


# ------------------------------------------------------------------------------------ videos

@dataclass
class VideoInversionResult:
    ws: torch.Tensor             # (1, num_ws, w_dim) shared appearance
    z_motion: torch.Tensor       # (1, motion_dim) the video's motion code
    ts: torch.Tensor             # (T,) fitted timestamp of every frame (frame 0 is t = 0)
    generator: torch.nn.Module
    cameras: np.ndarray          # (T, 25)
    history: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


def invert_video(G, frames: torch.Tensor, cams, config: InversionConfig | None = None, motion_steps: int = 200,
                 batch: int = 4, d_img=None, progress: Progress | None = None,
                 cancel: threading.Event | None = None, start: torch.Tensor | None = None,
                 on_state: OnState | None = None) -> VideoInversionResult:
    """Reconstruct a portrait video: one appearance latent (fitted on the first frame, the
    canonical t = 0), then one motion code and a timestamp per frame fitted to every frame, then
    pivotal tuning over all frames. ``frames``: (T, 3, R, R) in [-1, 1]; ``cams``: (T, 25).

    ``start``: an appearance latent to start from instead of fitting one from the mean latent (the
    mean of a portrait encoder's per-frame latents: :func:`pv3d_core.portrait.reconstruct_video`)."""
    cfg = (config or InversionConfig()).validate()
    dev = next(G.parameters()).device
    frames = frames.to(dev, torch.float32)
    cams_t = torch.as_tensor(np.asarray(cams, dtype=np.float32), device=dev)
    T = len(frames)
    if T < 2:
        raise ValueError("a video needs at least two frames")
    first = invert(G, frames[:1], cams_t[0].cpu().numpy(), InversionConfig(**{**cfg.to_dict(), "pti_steps": 0}),
                   d_img=d_img, progress=progress, cancel=cancel, start=start)
    ws = first.ws
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    loss_fn = ReconstructionLoss(cfg, frames, G.neural_rendering_resolution)
    z_motion = torch.randn(1, G.motion_dim, generator=gen).to(dev).requires_grad_(True)
    # timestamps: frame 0 pinned at 0, the others free in (0, 1), initialised evenly
    init = torch.linspace(0, 1, T)[1:].clamp(0.02, 0.98)
    t_logit = torch.logit(init).to(dev).requires_grad_(True)
    opt = torch.optim.Adam([z_motion, t_logit], lr=0.03)
    history = list(first.history)
    rep = _Reporter(history, progress, on_state, cams_t[0].cpu().numpy(),
                    [("motion", motion_steps, 1.0 * min(batch, T)), ("pti", cfg.pti_steps, pti_cost(cfg) + min(batch, T) - 1)])
    G.requires_grad_(False)

    def ts_now():
        return torch.cat([torch.zeros(1, device=dev), torch.sigmoid(t_logit)])

    def recon_loss(G_, idx, ts):
        out = G_.synthesis(ws.expand(len(idx), -1, -1), z_motion.expand(len(idx), -1), ts[idx], cams_t[idx],
                           noise_mode="const", deterministic=True)
        return loss_fn(out, idx)

    tic = time.perf_counter()
    for step in range(motion_steps):
        _check(cancel)
        idx = torch.randint(T, (min(batch, T),), generator=gen).to(dev)
        rep.step(opt, recon_loss(G, idx, ts_now()), "motion", step, motion_steps, ws, G)
    timings = {**first.timings, "motion_s": time.perf_counter() - tic}
    z_motion = z_motion.detach()
    ts = ts_now().detach()
    G_t = G
    if cfg.pti_steps:
        tic = time.perf_counter()

        def data_loss(G_, step, planes):
            idx = torch.randint(T, (min(batch, T),), generator=gen).to(dev)
            return recon_loss(G_, idx, ts)

        G_t = _pivotal_tune(G, ws, data_loss, cfg, gen, first.w_std, _conditioning(G, dev), progress, cancel,
                            history, rep, keep_motion=False)
        timings["pti_s"] = time.perf_counter() - tic
    with torch.no_grad():
        scores = []
        for i in range(T):
            out = G_t.synthesis(ws, z_motion, ts[i:i + 1], cams_t[i:i + 1], noise_mode="const", deterministic=True)
            scores.append(psnr(out["image"], frames[i:i + 1]))
    return VideoInversionResult(ws=ws, z_motion=z_motion, ts=ts, generator=G_t, cameras=cams_t.cpu().numpy(),
                                history=history, metrics={"psnr_mean": float(np.mean(scores)),
                                                          "psnr_min": float(np.min(scores))}, timings=timings)
