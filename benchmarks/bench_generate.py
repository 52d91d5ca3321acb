"""Per-frame time of the generator, split into mapping / backbone / volume render / super-resolution.

    python benchmarks/bench_generate.py [--configs tiny,pv3d-vox512] [--runs 5] [--warmup 1] [--threads N]
                                        [--device cpu|cuda] [--renderer auto|pytorch] [--channels-last 0|1]

Weights are random (timing does not depend on them). Reports the median of --runs timed runs after
--warmup runs (pv3d_core.timing.time_stages, which `pv3d doctor` uses too), for a cold frame (new
appearance/t: everything) and a cached frame (camera change only: render + SR, the tri-planes come from
the cache). ``--renderer auto`` renders as the viewer does (the fused kernels where they compile and pass
their self-check); ``pytorch`` forces the PyTorch reference renderer (PV3D_KERNELS=off).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pv3d_core.config import preset  # noqa: E402
from pv3d_core.io import build_generator  # noqa: E402
from pv3d_core.render import cuda_ops  # noqa: E402
from pv3d_core.timing import STAGES, time_stages  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="tiny,pv3d-vox512")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--renderer", choices=("auto", "pytorch"), default="auto")
    ap.add_argument("--channels-last", type=int, default=1, help="NHWC convolutions (default 1)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.renderer == "pytorch":
        cuda_ops.set_kernels("off")
    dev = torch.device(args.device)
    print(f"torch {torch.__version__}, device {dev}"
          f"{' (' + torch.cuda.get_device_name(dev) + ')' if dev.type == 'cuda' else ''}, "
          f"threads {torch.get_num_threads()}, runs {args.runs} (median) after {args.warmup} warm-up")
    for name in args.configs.split(","):
        torch.manual_seed(0)
        G = build_generator(preset(name)).to(dev).eval().requires_grad_(False).set_channels_last(args.channels_last)
        med = time_stages(G, runs=args.runs, warmup=args.warmup)
        print(f"\n{name}: {G.img_resolution}² output, {G.neural_rendering_resolution}² neural render; "
              f"volume rendering: {med['volume_rendering']}")
        for k in STAGES:
            print(f"  {k:9s} {med[k]:9.1f} ms")
        print(f"  frame, no cache   {med['frame']:9.1f} ms   ({1e3 / med['frame']:.2f} fps)")
        print(f"  frame, cached     {med['cached']:9.1f} ms   ({1e3 / med['cached']:.2f} fps)  [camera change only]")
        del G
        if dev.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
