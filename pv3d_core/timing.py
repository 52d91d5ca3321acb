"""Where a frame's time goes: mapping, tri-plane backbone, volume render, super-resolution.

Shared by ``pv3d doctor`` and ``benchmarks/bench_generate.py``. One frame is split as the viewer's
renderer runs it (:class:`pipeline.FrameRenderer`): the appearance mapping, the backbone's tri-planes
(what a new timestamp costs), the volume render at the neural resolution with the raw RGB layer
(:meth:`PV3DGenerator.ray_march`, i.e. the fused kernels wherever they run), and super-resolution.
"frame" is a cold frame (new appearance and timestamp: all four stages), "cached" a camera change with
cached tri-planes (render + SR). Each run uses a new timestamp and camera; times are medians over the
runs after the warm-up, in milliseconds, the GPU synchronised around each stage.
"""
from __future__ import annotations

import statistics
import time

import torch

from .pipeline import seed_latent
from .render import cameras

__all__ = ["STAGES", "time_stages"]

STAGES = ("mapping", "backbone", "render", "sr")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _one_frame(G, dev: torch.device, t: float, yaw: float) -> dict:
    out = {}
    z = seed_latent(0, G.z_dim).to(dev)
    zm = seed_latent(1, G.motion_dim).to(dev)
    c0 = torch.from_numpy(cameras.conditioning_camera(G.rendering_kwargs)).to(dev)[None]
    c = torch.from_numpy(cameras.OrbitCamera(yaw=yaw).c()).to(dev)[None]
    with torch.no_grad():
        _sync(dev)
        t0 = time.perf_counter()
        ws = G.mapping(z, c0, truncation_psi=0.7)
        _sync(dev)
        out["mapping"], t0 = time.perf_counter() - t0, time.perf_counter()
        planes = G.planes(ws, zm, torch.tensor([t], device=dev), noise_mode="const")
        _sync(dev)
        out["backbone"], t0 = time.perf_counter() - t0, time.perf_counter()
        r = G.ray_march(planes, c)
        raw = G.to_img_raw(r["feature_image"], ws[:, 0], fused_modconv=False).to(torch.float32)
        _sync(dev)
        out["render"], t0 = time.perf_counter() - t0, time.perf_counter()
        G.superresolution(raw, r["feature_image"], ws, noise_mode=G.rendering_kwargs["superresolution_noise_mode"])
        _sync(dev)
        out["sr"] = time.perf_counter() - t0
    return {k: v * 1e3 for k, v in out.items()}


def time_stages(G, runs: int = 5, warmup: int = 1) -> dict:
    """Median milliseconds per stage of ``G`` (on its own device), plus ``frame`` and ``cached``, the
    number of ``runs``, the output and neural resolutions and what the volume render ran on."""
    dev = next(G.parameters()).device
    samples = []
    for i in range(warmup + runs):
        s = _one_frame(G, dev, t=0.1 + 0.8 * i / max(1, warmup + runs - 1), yaw=0.05 * (i % 7) - 0.15)
        if i >= warmup:
            samples.append(s)
    med = {k: statistics.median(s[k] for s in samples) for k in STAGES}
    med["frame"] = statistics.median(sum(s[k] for k in STAGES) for s in samples)
    med["cached"] = statistics.median(s["render"] + s["sr"] for s in samples)
    med.update(runs=runs, warmup=warmup, resolution=G.img_resolution, neural_resolution=G.neural_rendering_resolution,
               volume_rendering=G.volume_rendering_backend())
    return med
