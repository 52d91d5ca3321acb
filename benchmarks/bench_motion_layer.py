"""A motion layer for one image, its style new at every call: the weight modulated (a new weight each
call, as before) against the input modulated (one unchanged weight; pv3d_core.nn.prepared.run_input_modulated).

    python benchmarks/bench_motion_layer.py [--threads 2] [--channels 128] [--runs 300] [--rounds 3]

Times each side alone through the prepared path's functions on random data (128 channels, as the tiny
preset's motion layers), the two alternating round by round, and prints the median of the rounds'
medians per resolution, their ratio and the largest difference of the two outputs relative to its range.
Whole-frame figures: ``bench_realtime.py --part goals`` (the scrub renders a new motion style each frame).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pv3d_core.nn import prepared as P  # noqa: E402
from pv3d_core.nn.ops import setup_filter  # noqa: E402


def median_ms(fn, runs: int) -> float:
    for _ in range(20):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not (1 <= args.threads <= 256 and 1 <= args.channels <= 1024 and 1 <= args.runs <= 100_000
            and 1 <= args.rounds <= 100):
        ap.error("--threads 1-256, --channels 1-1024, --runs 1-100000, --rounds 1-100")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    c = args.channels
    f = setup_filter([1, 3, 3, 1])
    weight = torch.randn(c, c, 3, 3).contiguous(memory_format=torch.channels_last)
    bias, weight_sq = torch.randn(c), P.weight_squares(weight)
    kw = dict(resample_filter=f, padding=1, activation="lrelu", clamp=None)
    print(f"torch {torch.__version__}, {args.threads} threads, {c} channels")
    print("\n| resolution | weight modulated | input modulated | ratio | max difference / range |\n|---|---|---|---|---|")
    with torch.no_grad():
        for res in (4, 8, 16, 32, 64):
            x = torch.randn(1, c, res, res).contiguous(memory_format=torch.channels_last)

            def old(style=None):
                style = torch.randn(1, c) if style is None else style
                return P.run_modulated(x, P.modulated_weight(weight, style, 1.4, True, 1), bias, None, up=1, **kw)

            def new(style=None):
                style = torch.randn(1, c) if style is None else style
                return P.run_input_modulated(x, weight, weight_sq, style, 1.4, bias, None, **kw)

            a, b = [], []
            for _ in range(args.rounds):
                a.append(median_ms(old, args.runs))
                b.append(median_ms(new, args.runs))
            style = torch.randn(1, c)
            y0, y1 = old(style), new(style)
            err = ((y0 - y1).abs().max() / (y0.max() - y0.min())).item()
            ma, mb = statistics.median(a), statistics.median(b)
            print(f"| {res}² | {ma:.3f} ms | {mb:.3f} ms | {ma / mb:.2f}x | {err:.1e} |", flush=True)


if __name__ == "__main__":
    main()
