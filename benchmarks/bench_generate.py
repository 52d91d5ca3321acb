"""Per-frame time of the generator, split into mapping / backbone / volume render / super-resolution.

    python benchmarks/bench_generate.py [--configs tiny,pv3d-vox512] [--runs 5] [--threads N] [--device cpu]

Weights are random (timing does not depend on them). Reports the median of --runs timed runs after
one warm-up, for a cold frame (new appearance/t: everything) and a cached frame (camera change
only: render + SR, the tri-planes come from the cache).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pv3d_core.config import preset  # noqa: E402
from pv3d_core.io import build_generator  # noqa: E402
from pv3d_core.pipeline import seed_latent  # noqa: E402
from pv3d_core.render import cameras  # noqa: E402
from pv3d_core.render.rays import pixel_rays, split_camera  # noqa: E402
from pv3d_core.render.volume import render_rays  # noqa: E402


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_stages(G, dev, t: float, yaw: float):
    out = {}
    z = seed_latent(0, G.z_dim).to(dev)
    zm = seed_latent(1, G.motion_dim).to(dev)
    c0 = torch.from_numpy(cameras.CONDITIONING_CAMERA).to(dev)[None]
    c = torch.from_numpy(cameras.OrbitCamera(yaw=yaw).c()).to(dev)[None]
    with torch.no_grad():
        sync(dev); t0 = time.perf_counter()
        ws = G.mapping(z, c0, truncation_psi=0.7)
        sync(dev); out["mapping"] = time.perf_counter() - t0; t0 = time.perf_counter()
        planes = G.planes(ws, zm, torch.tensor([t], device=dev), noise_mode="const")
        sync(dev); out["backbone"] = time.perf_counter() - t0; t0 = time.perf_counter()
        res = G.neural_rendering_resolution
        o, d = pixel_rays(*split_camera(c), res)
        feats, depth, _ = render_rays(planes, G.decoder, o, d, G.rendering_kwargs, deterministic=True)
        fimg = feats.permute(0, 2, 1).reshape(1, -1, res, res).contiguous()
        raw = G.to_img_raw(fimg, ws[:, 0], fused_modconv=False)
        sync(dev); out["render"] = time.perf_counter() - t0; t0 = time.perf_counter()
        G.superresolution(raw, fimg, ws, noise_mode="none")
        sync(dev); out["sr"] = time.perf_counter() - t0
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="tiny,pv3d-vox512")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--channels-last", type=int, default=1, help="NHWC convolutions (default 1)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    print(f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}, runs {args.runs} (median)")
    for name in args.configs.split(","):
        torch.manual_seed(0)
        G = build_generator(preset(name)).to(dev).eval().requires_grad_(False).set_channels_last(args.channels_last)
        time_stages(G, dev, 0.3, 0.0)  # warm-up
        runs = [time_stages(G, dev, 0.1 * (i + 1), 0.05 * i) for i in range(args.runs)]
        med = {k: statistics.median(r[k] for r in runs) * 1e3 for k in runs[0]}
        cold = statistics.median(sum(r.values()) for r in runs) * 1e3
        cached = statistics.median(r["render"] + r["sr"] for r in runs) * 1e3
        print(f"\n{name}: {G.img_resolution}² output, {G.neural_rendering_resolution}² neural render")
        for k, v in med.items():
            print(f"  {k:9s} {v:9.1f} ms")
        print(f"  frame, no cache   {cold:9.1f} ms   ({1e3 / cold:.2f} fps)")
        print(f"  frame, cached     {cached:9.1f} ms   ({1e3 / cached:.2f} fps)  [camera change only]")


if __name__ == "__main__":
    main()
