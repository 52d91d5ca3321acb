"""Winograd F(4x4, 3x3) convolutions (pv3d_core.nn.winograd) against oneDNN's direct ones, per layer shape.

    python benchmarks/bench_winograd.py [--threads 2] [--runs 21] [--presets tiny,pv3d-vox512]

Records the 3x3 convolutions of one frame of each preset (a full frame: backbone and super-resolution),
the plain ones and the 2x upsampling ones (``conv2d_resample(up=2)``: a transposed convolution and the
FIR directly, Winograd's four output phases with it), then times each distinct shape alone through
``conv2d_resample``, the two ways alternating call by call, on random data of that shape. Prints per shape: calls a frame, median milliseconds of each, their ratio,
whether the Winograd rule (``winograd.usable``) picks it, and the relative error of each against a
float64 convolution. The last line sums the frame's picked convolutions both ways.

Whole-frame figures, alternating frame by frame: ``bench_realtime.py --part winograd``.
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

from pv3d_core.config import PRESETS, preset  # noqa: E402
from pv3d_core.io import build_generator  # noqa: E402
from pv3d_core.nn import winograd  # noqa: E402
from pv3d_core.nn.ops import conv2d_resample, setup_filter  # noqa: E402
from pv3d_core.pipeline import FrameRenderer, RenderSettings  # noqa: E402


def frame_shapes(name: str) -> dict:
    """(in, height, width, out, up) -> calls in one full frame of the preset (random weights)."""
    G = build_generator(preset(name)).eval().requires_grad_(False)
    r = FrameRenderer(G, channels_last=True)
    seen: dict = {}
    real = winograd.usable           # asked by nn.ops for every NHWC 3x3 convolution (up=2: upsampling layers)

    def spy(x, w, bias, stride, padding, groups, transpose, up=1):
        if tuple(w.shape[2:]) == (3, 3) and not transpose and groups == 1 and stride in (1, [1, 1], (1, 1)) \
                and padding in (1, [1, 1], (1, 1)):
            key = (x.shape[1], x.shape[2], x.shape[3], w.shape[0], up)
            seen[key] = seen.get(key, 0) + 1
        return real(x, w, bias, stride, padding, groups, transpose, up)

    winograd.usable = spy
    try:
        r.render(RenderSettings(t=0.3, use_cache=False))
    finally:
        winograd.usable = real
    return seen


def time_shape(cin: int, h: int, w: int, cout: int, up: int, runs: int) -> dict:
    """The convolution (up=2: with its 2x upsampling, ``conv2d_resample``) with Winograd off and on."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, cin, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    wt = (torch.randn(cout, cin, 3, 3, generator=g) / (9 * cin) ** 0.5).contiguous(memory_format=torch.channels_last)
    b = torch.randn(cout, generator=g)
    f = setup_filter([1, 3, 3, 1])

    def run(on: bool, double: bool = False):
        winograd.set_enabled(on)
        args = (x.double(), wt.double(), f.double(), b.double()) if double else (x, wt, f, b)
        with torch.no_grad():
            return conv2d_resample(args[0], args[1], f=args[2], up=up, padding=1, flip_weight=(up == 1), bias=args[3])

    ref = run(False, double=True)
    err = {k: ((run(on).double() - ref).abs().max() / ref.abs().max()).item() for k, on in (("direct", False),
                                                                                           ("winograd", True))}
    ts = {"direct": [], "winograd": []}
    for _ in range(runs):
        for k, on in (("direct", False), ("winograd", True)):
            winograd.set_enabled(on)
            t0 = time.perf_counter()
            run(on)
            ts[k].append(time.perf_counter() - t0)
    winograd.set_enabled(None)
    picked = winograd.usable(x, wt, b, 1, [1, 1], 1, False, up)
    return {"direct": statistics.median(ts["direct"]), "winograd": statistics.median(ts["winograd"]),
            "picked": picked, "err": err}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=21, help="timed calls per shape and way (1-1000)")
    ap.add_argument("--presets", default="tiny,pv3d-vox512")
    args = ap.parse_args(argv)
    if not 1 <= args.runs <= 1000 or not 1 <= args.threads <= 256:
        ap.error("--runs must be 1-1000 and --threads 1-256")
    names = [n.strip() for n in args.presets.split(",")]
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        ap.error(f"--presets: unknown {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    torch.set_num_threads(args.threads)
    if not winograd.available():
        print(f"Winograd convolutions unavailable: {winograd.describe()}")
        return 2
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {winograd.library().label()}")
    for name in names:
        shapes = frame_shapes(name)
        print(f"\n{name}: the 3x3 convolutions of one full frame")
        print("| in | size | out | up | calls | direct | Winograd | ratio | picked | error direct / Winograd |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        tot = {"direct": 0.0, "winograd": 0.0}
        for (cin, h, w, cout, up), calls in sorted(shapes.items(), key=lambda kv: (kv[0][4], kv[0][1])):
            runs = args.runs if cin * cout * h * w * up * up <= 2 ** 24 else max(3, args.runs // 4)
            m = time_shape(cin, h, w, cout, up, runs)
            if m["picked"]:
                tot["direct"] += calls * m["direct"]
                tot["winograd"] += calls * m["winograd"]
            print(f"| {cin} | {h}x{w} | {cout} | {up} | {calls} | {m['direct'] * 1e3:.3f} ms | {m['winograd'] * 1e3:.3f} ms | "
                  f"{m['direct'] / m['winograd']:.2f}x | {'yes' if m['picked'] else 'no'} | "
                  f"{m['err']['direct']:.1e} / {m['err']['winograd']:.1e} |", flush=True)
        if tot["winograd"]:
            print(f"picked, per frame: {tot['direct'] * 1e3:.1f} ms -> {tot['winograd'] * 1e3:.1f} ms "
                  f"({tot['direct'] / tot['winograd']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
