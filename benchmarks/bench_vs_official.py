"""Ours vs the official PV3D implementation: one 512² frame of the released configuration, side by side.

    python benchmarks/bench_vs_official.py --official-root /path/to/bytedance-pv3d-checkout [--runs 5]

The official code is not shipped with this project; point --official-root at a checkout of it (its
custom CUDA ops fall back to their PyTorch reference implementations on the CPU). Both models get the
same random weights; runs alternate (official, ours) so machine noise hits both alike; medians and
the ratio are printed, and the two frames are compared.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pv3d_core.config import preset  # noqa: E402
from pv3d_core.io import build_generator  # noqa: E402
from pv3d_core.render import cameras  # noqa: E402


def load_official(root: Path, kwargs: dict):
    sys.path.insert(0, str(root))
    if "einops" not in sys.modules:
        try:
            import einops  # noqa: F401
        except ImportError:  # only the discriminators use it
            sys.modules["einops"] = types.ModuleType("einops")
    from lib.models.videg3d.networks.triplane import TriPlaneGenerator

    return TriPlaneGenerator(**kwargs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official-root", required=True, type=Path)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = preset("pv3d-vox512")
    gkw = {k: v for k, v in cfg.generator.to_dict().items() if k not in cfg.generator.OURS}
    torch.manual_seed(0)
    official = load_official(args.official_root, gkw).eval().requires_grad_(False)
    ours = build_generator(cfg).eval().requires_grad_(False).set_channels_last(True)
    ours.load_state_dict(official.state_dict(), strict=True)
    z = torch.randn(1, 512)
    zm = torch.randn(1, 512)
    t = torch.tensor([0.5])
    c = torch.from_numpy(cameras.OrbitCamera(yaw=0.2).c())[None]
    c0 = torch.from_numpy(cameras.CONDITIONING_CAMERA)[None]

    def run_official():
        ws = official.mapping(z, c0)
        return official.synthesis(ws, zm, t, c, neural_rendering_resolution=64, noise_mode="const",
                                  return_depth=True)["image"]

    def run_ours():
        ws = ours.mapping(z, c0)
        return ours.synthesis(ws, zm, t, c, neural_rendering_resolution=64, noise_mode="const")["image"]

    times = {"official": [], "ours": []}
    with torch.no_grad():
        a, b = run_official(), run_ours()   # warm-up
        for _ in range(args.runs):
            for name, fn in (("official", run_official), ("ours", run_ours)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    mo, mu = statistics.median(times["official"]), statistics.median(times["ours"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.runs} alternating runs")
    print(f"official  median {mo:7.2f} s   runs {', '.join(f'{x:.2f}' for x in times['official'])}")
    print(f"ours      median {mu:7.2f} s   runs {', '.join(f'{x:.2f}' for x in times['ours'])}")
    print(f"speed-up  {mo / mu:.2f}x")
    print("note: the official run uses jittered coarse depths on display (return_depth=True turns the jitter off);"
          " importance sampling there is random, so frames differ by sampling noise only")
    print(f"frame difference (max abs, [-1,1] scale): {(a - b).abs().max().item():.3e}, "
          f"mean {(a - b).abs().mean().item():.3e}")


if __name__ == "__main__":
    main()
