"""The fused CUDA kernels vs the PyTorch path: per-stage and per-frame milliseconds.

    python benchmarks/bench_kernels.py [--config pv3d-vox512] [--batches 1,4] [--runs 20] [--half]
                                       [--neural-res N] [--launcher cupy|nvrtc] [--no-frame]

Stages of the volume render (CUDA events, median of --runs after warm-up), for the kernels
(coarse decode, importance sampling, fine decode, compositing) and for the reference
(pv3d_core.render.volume, the same four steps). "frame" is one cached-tri-plane frame (camera change:
volume render + raw RGB + super-resolution, 512² for the released config), with render_rays replaced
by cuda_ops.render_rays_fast for the fast column. Times are per frame (batch time / batch size).
Weights are random: timing does not depend on them. Needs CUDA; prints why and exits 0 otherwise.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pv3d_core import generator as generator_module  # noqa: E402
from pv3d_core.config import preset  # noqa: E402
from pv3d_core.io import build_generator  # noqa: E402
from pv3d_core.render import cameras, cuda_backend, cuda_launch, cuda_ops, volume  # noqa: E402
from pv3d_core.render.rays import pixel_rays, split_camera  # noqa: E402


class Marks:
    """Records a CUDA event at each mark; stage times are the gaps between consecutive events."""

    def __init__(self):
        self.events = []

    def start(self):
        self.events = [("start", self._event())]

    def _event(self):
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    def __call__(self, name: str):
        self.events.append((name, self._event()))

    def times(self) -> dict:
        torch.cuda.synchronize()
        out = {}
        for (_, a), (name, b) in zip(self.events, self.events[1:]):
            out[name] = out.get(name, 0.0) + a.elapsed_time(b)
        out["total"] = self.events[0][1].elapsed_time(self.events[-1][1])
        return out


def reference_stages(planes, decoder, origins, dirs, options, mark):
    """volume.render_rays (deterministic), step by step with marks."""
    b, r, _ = origins.shape
    box = options["box_warp"]

    def run(depths):
        s = depths.shape[2]
        pts = (origins.unsqueeze(-2) + depths * dirs.unsqueeze(-2)).reshape(b, -1, 3)
        d = dirs.unsqueeze(-2).expand(-1, -1, s, -1).reshape(b, -1, 3)
        out = volume.query(planes, decoder, pts, d, box)
        return out["rgb"].reshape(b, r, s, -1), out["sigma"].reshape(b, r, s, 1)

    depths_c = volume.coarse_depths(b, r, options["ray_start"], options["ray_end"], options["depth_resolution"],
                                    True, origins.device)
    mark("prepare")
    colors_c, sigma_c = run(depths_c)
    mark("coarse")
    w = volume.march_weights(sigma_c, depths_c)
    depths_f = volume.importance_depths(depths_c, w, options["depth_resolution_importance"], True)
    mark("importance")
    colors_f, sigma_f = run(depths_f)
    mark("fine")
    depths = torch.cat([depths_c, depths_f], dim=-2)
    colors = torch.cat([colors_c, colors_f], dim=-2)
    sigmas = torch.cat([sigma_c, sigma_f], dim=-2)
    _, order = torch.sort(depths, dim=-2)
    depths = torch.gather(depths, -2, order)
    colors = torch.gather(colors, -2, order.expand(-1, -1, -1, colors.shape[-1]))
    sigmas = torch.gather(sigmas, -2, order)
    rgb, depth, weights = volume.march(colors, sigmas, depths)
    mark("composite")
    return rgb, depth, weights.sum(2)


def median_times(fn, runs: int, warmup: int) -> dict:
    marks = Marks()
    for _ in range(warmup):
        marks.start()
        fn(marks)
        marks.times()
    samples = []
    for _ in range(runs):
        marks.start()
        fn(marks)
        samples.append(marks.times())
    return {k: statistics.median(s[k] for s in samples) for k in samples[0]}


def frame_time(G, planes, ws, c, fast: bool, runs: int, warmup: int) -> float:
    """One cached-plane frame (render + raw RGB + SR), render_rays swapped for the fast path if asked."""
    original = generator_module.render_rays
    generator_module.render_rays = cuda_ops.render_rays_fast if fast else volume.render_rays
    try:
        def go(marks):
            G.render_planes(planes, ws, c)
            marks("frame")
        return median_times(go, runs, warmup)["total"]
    finally:
        generator_module.render_rays = original


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="pv3d-vox512")
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--half", action="store_true", help="the kernels read float16 tri-planes")
    ap.add_argument("--neural-res", type=int, default=None, help="neural rendering resolution (config's default)")
    ap.add_argument("--launcher", choices=sorted(cuda_launch.LAUNCHERS), default=None)
    ap.add_argument("--no-frame", action="store_true", help="skip the whole-frame timing (render stages only)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_kernels: no CUDA device here; the fused kernels run on CUDA only (nothing to time). "
              f"The PyTorch path is timed by benchmarks/bench_generate.py. [{cuda_ops.describe()}]")
        return 0
    if args.launcher:
        import os
        os.environ[cuda_launch.ENV_BACKEND] = args.launcher
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    cuda_ops.set_kernels("on", half_planes=args.half)
    torch.manual_seed(0)
    G = build_generator(preset(args.config)).to(dev).eval().requires_grad_(False)
    res = args.neural_res or G.neural_rendering_resolution
    opts = G.rendering_kwargs
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | {cuda_ops.describe(dev)}")
    print(f"{args.config}: {G.img_resolution}² frame, {res}² neural render, {opts['depth_resolution']}+"
          f"{opts['depth_resolution_importance']} samples/ray, planes {G.plane_channels}x{G.config.plane_resolution}²; "
          f"median of {args.runs} runs, ms per frame")
    for batch in [int(x) for x in args.batches.split(",")]:
        z = torch.randn(batch, G.z_dim, device=dev)
        zm = torch.randn(batch, G.motion_dim, device=dev)
        c = torch.stack([torch.from_numpy(cameras.OrbitCamera(yaw=0.1 * i).c()) for i in range(batch)]).float().to(dev)
        with torch.no_grad():
            ws = G.mapping(z, c)
            planes = G.planes(ws, zm, torch.full((batch,), 0.5, device=dev), noise_mode="const")
            origins, dirs = pixel_rays(*split_camera(c), res)
            launcher = cuda_launch.launcher(dev, cuda_launch.Dims(*G.decoder.kernel_layout()))
            fast = median_times(lambda m: cuda_backend.render_rays_kernels(
                launcher, planes, G.decoder, origins, dirs, opts, True, args.half, mark=m), args.runs, args.warmup)
            ref = median_times(lambda m: reference_stages(planes, G.decoder, origins, dirs, opts, m), args.runs,
                               args.warmup)
            a = cuda_backend.render_rays_kernels(launcher, planes, G.decoder, origins, dirs, opts, True, args.half)
            b = volume.render_rays(planes, G.decoder, origins, dirs, opts, True)
            err = max((x - y).abs().max().item() for x, y in zip(a, b))
            print(f"\nbatch {batch}   (max |fast - reference| over rgb/depth/weight: {err:.2e})")
            print(f"  {'stage':12s} {'kernels':>10s} {'PyTorch':>10s} {'speed-up':>9s}")
            for k in ("prepare", "coarse", "importance", "fine", "composite", "total"):
                f, r = fast.get(k, 0.0) / batch, ref.get(k, 0.0) / batch
                print(f"  {k:12s} {f:10.3f} {r:10.3f} {r / f if f > 0 else float('nan'):8.1f}x")
            if not args.no_frame:
                tf = frame_time(G, planes, ws, c, True, args.runs, args.warmup) / batch
                tr = frame_time(G, planes, ws, c, False, args.runs, args.warmup) / batch
                print(f"  {'frame':12s} {tf:10.3f} {tr:10.3f} {tr / tf:8.1f}x   (render + raw RGB + SR, cached planes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
