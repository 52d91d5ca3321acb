"""Issue 14's goal table and scaling tables: the fast CPU path against the previous one, side by side.

    python benchmarks/bench_realtime.py [--threads N] [--runs 7] [--runs-512 3] [--part goals,scaling,memory,layers,prepared,winograd]
                                        [--ckpt PATH] [--official-root DIR]

Every row renders through pipeline.FrameRenderer (deterministic sampling) and alternates, frame by
frame, two configurations of the same model in one process, so that load on the machine hits both
alike; it prints medians and their ratio. Each configuration has its own copy of the model (``Pair``),
so that neither remakes what the other's frame replaced:

* before: the PyTorch reference renderer (``PV3D_KERNELS=off``) and NCHW convolutions, as
  FrameRenderer ran before the fused CPU path (the current nn.ops otherwise);
* after: the fused CPU renderer (cuda_ops -> cpu_kernels) and NHWC convolutions
  (``FrameRenderer(G, channels_last=True)``).

Workloads (the issue's): the tiny preset at 128² (the embedded default model when present, else random
tiny weights): orbit with the tri-plane cache, scrub (a new t every frame: backbone included), orbit at
neural resolution 64; the released config pv3d-vox512 (random weights) at 512²: full frame (a new t
every frame) and cached planes. ``--official-root`` also runs benchmarks/bench_vs_official.py (ours
with the fused path vs the official code, and ours with the kernels off) for the ratio row.

Memory (``--part memory``): :func:`pv3d_core.host_memory.keep_freed_memory` off and on, in alternating
child processes (it is process-wide), for the same workloads, with each process's peak RSS.

Layers (``--part layers``): the synthesis layers' inference shortcuts (one-image path with the gain
folded in and the modulated weight kept, bilinear skip upsampling; ``nn.ops.set_inference_shortcuts``)
off and on, frame by frame, on the fast path otherwise. Prepared (``--part prepared``): the synthesis
and super-resolution blocks prepared once per appearance (``prepare_inference``) off and on, the same way.
Winograd (``--part winograd``): the 3x3 convolutions as Winograd F(4x4, 3x3) (``nn.winograd.set_enabled``)
off and on, the same way (per layer shape: ``bench_winograd.py``).

Scaling: cached-plane frame time against rays per frame (neural 32, 64, 128) and against output
resolution (half, native, double), both presets, both configurations.

Say how busy the machine was when quoting figures: with another job on one of 2 cores, 2-thread
figures are unreliable (a two-thread op waits for a descheduled thread); use --threads 1 there.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pv3d_core import host_memory  # noqa: E402
from pv3d_core.config import preset  # noqa: E402
from pv3d_core.io import build_generator, load_generator  # noqa: E402
from pv3d_core.nn import ops as nn_ops  # noqa: E402
from pv3d_core.nn import winograd  # noqa: E402
from pv3d_core.paths import default_checkpoint  # noqa: E402
from pv3d_core.pipeline import FrameRenderer, RenderSettings  # noqa: E402
from pv3d_core.render import cpu_kernels, cuda_ops  # noqa: E402

CONFIGS = ("before", "after")


class Pair:
    """One model in both configurations (CONFIGS), each with its own copy and FrameRenderer.

    A model keeps the blocks it prepared for one appearance and one layout, and the Winograd transforms
    of their weights; switching one model's layout every frame would make the fast frames prepare and
    transform everything again (about 8 ms of a 25 ms tiny scrub frame, which the table quoted until
    2026-12-04), a cost no viewer pays. Two copies keep what each made, as a viewer rendering one path
    does; only the renderer switch (``cuda_ops.set_kernels``) is global."""

    def __init__(self, G):
        self.models = {"before": copy.deepcopy(G), "after": G}
        self.renderers = {}
        for name, model in self.models.items():
            model.set_channels_last(name == "after")
            self.renderers[name] = FrameRenderer(model)

    def switch(self, name: str) -> FrameRenderer:
        cuda_ops.set_kernels("off" if name == "before" else "auto")
        return self.renderers[name]


def alternate(settings: list[RenderSettings], setups: dict) -> dict:
    """Median frame time per configuration (name -> function that switches to it and returns the
    FrameRenderer to use), alternating frame by frame in one process; settings[0] is a warm-up for each."""
    times = {k: [] for k in setups}
    for i, s in enumerate(settings):
        for name, setup in setups.items():
            renderer = setup()
            t0 = time.perf_counter()
            renderer.render(s)
            if i:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def side_by_side(pair: Pair, settings: list[RenderSettings]) -> dict:
    """The previous path and the fast one (CONFIGS), frame by frame."""
    med = alternate(settings, {name: (lambda name=name: pair.switch(name)) for name in CONFIGS})
    cuda_ops.set_kernels(None)
    return med


def load_tiny(ckpt: str | None):
    path = Path(ckpt) if ckpt else default_checkpoint()
    if path.exists():
        return load_generator(path), path.name
    torch.manual_seed(0)
    return build_generator(preset("tiny")), "random tiny weights (default checkpoint missing)"


def released():
    torch.manual_seed(0)
    return build_generator(preset("pv3d-vox512")), "pv3d-vox512, random weights"


def orbit(base: RenderSettings, n: int, **kw) -> list[RenderSettings]:
    return [base.with_(yaw=math.radians(-30 + 60 * i / max(n, 1)), **kw) for i in range(n + 1)]


def scrub(base: RenderSettings, n: int, **kw) -> list[RenderSettings]:
    return [base.with_(t=round((i + 0.5) / (n + 1), 6), use_cache=False, **kw) for i in range(n + 1)]


def row(label: str, med: dict, unit: str) -> str:
    b, a = med["before"], med["after"]
    if unit == "fps":
        return f"| {label} | {1 / b:.1f} fps ({b * 1e3:.0f} ms) | {1 / a:.1f} fps ({a * 1e3:.0f} ms) | {b / a:.2f}x |"
    return f"| {label} | {b:.2f} s | {a:.2f} s | {b / a:.2f}x |"


def goals(args) -> None:
    G, label = load_tiny(args.ckpt)
    r = Pair(G.eval().requires_grad_(False))
    base = RenderSettings(t=0.3)
    print(f"\ntiny: {label}; released: pv3d-vox512 random weights")
    print("\n| workload | before (reference, NCHW) | after (fused CPU, NHWC) | ratio |\n|---|---|---|---|")
    print(row("tiny 128², orbit with cached planes", side_by_side(r, orbit(base, args.runs)), "fps"), flush=True)
    print(row("tiny 128², scrub (new t every frame)", side_by_side(r, scrub(base, args.runs)), "fps"), flush=True)
    print(row("tiny orbit at neural resolution 64", side_by_side(r, orbit(base, args.runs, neural_resolution=64)),
              "fps"), flush=True)
    cpu_kernels.stats(reset=True)
    side_by_side(r, orbit(base, 2))
    st = cpu_kernels.stats()
    print(f"\n(tiny: feature decodes skipped {st['skipped'] / max(st['samples'], 1):.1%} of samples; "
          f"{cuda_ops.describe('cpu')})")
    del G, r
    G, _ = released()
    r = Pair(G.eval().requires_grad_(False))
    print("\n| workload | before (reference, NCHW) | after (fused CPU, NHWC) | ratio |\n|---|---|---|---|")
    print(row("released 512², full frame (new t)", side_by_side(r, scrub(base, args.runs_512)), "s"), flush=True)
    print(row("released 512², cached planes", side_by_side(r, orbit(base, args.runs_512)), "s"), flush=True)
    if args.official_root:
        for kernels in ("auto", "off"):
            cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_vs_official.py"), "--official-root",
                   args.official_root, "--runs", str(args.runs_512), "--threads", str(torch.get_num_threads())]
            print(f"\n$ PV3D_KERNELS={kernels} {' '.join(cmd[1:])}", flush=True)
            subprocess.run(cmd, env=dict(os.environ, PV3D_KERNELS=kernels), check=False)


def scaling(args) -> None:
    for which in ("tiny", "pv3d-vox512"):
        G, label = load_tiny(args.ckpt) if which == "tiny" else released()
        G = G.eval().requires_grad_(False)
        r = Pair(G)
        runs = args.runs if which == "tiny" else args.runs_512
        base = RenderSettings(t=0.3)
        native = G.img_resolution
        print(f"\n{which} ({label}), cached planes: frame time against rays per frame")
        print("| neural res | rays/frame | before | after | ratio |\n|---|---|---|---|---|")
        for nr in (32, 64, 128):
            med = side_by_side(r, orbit(base, runs, neural_resolution=nr))
            print(f"| {nr} | {nr * nr} | {med['before'] * 1e3:.0f} ms | {med['after'] * 1e3:.0f} ms | "
                  f"{med['before'] / med['after']:.2f}x |", flush=True)
        print(f"\n{which}, cached planes: frame time against output resolution (the model's neural resolution)")
        print("| output | before | after | ratio |\n|---|---|---|---|")
        for out in (native // 2, native, native * 2):
            med = side_by_side(r, orbit(base, runs, resolution=out))
            print(f"| {out}² | {med['before'] * 1e3:.0f} ms | {med['after'] * 1e3:.0f} ms | "
                  f"{med['before'] / med['after']:.2f}x |", flush=True)
        del G, r


def layers(args) -> None:
    """The synthesis layers' inference shortcuts (nn.ops.set_inference_shortcuts) off and on, frame by
    frame in one process, on the fast path otherwise (fused CPU renderer, NHWC)."""
    switched(args, "synthesis-layer inference shortcuts", lambda G, on: nn_ops.set_inference_shortcuts(on))


def prepared(args) -> None:
    """The synthesis and super-resolution networks' blocks prepared once per appearance
    (``prepare_inference`` of each) off and on, frame by frame in one process; the layers' shortcuts on
    either way."""
    def switch(G, on):
        G.backbone.synthesis.prepare_inference = G.superresolution.prepare_inference = on
    switched(args, "synthesis and super-resolution blocks prepared per appearance", switch)


def winograd_part(args) -> None:
    """The 3x3 convolutions as Winograd F(4x4, 3x3) off and on, frame by frame in one process."""
    switched(args, "Winograd F(4x4, 3x3) convolutions", lambda G, on: winograd.set_enabled(on))
    winograd.set_enabled(None)


def switched(args, what: str, switch) -> None:
    """The issue's workloads with ``switch(G, False)`` and ``switch(G, True)``, alternating frame by frame."""
    print(f"\n{what}, off and on, alternating frame by frame, medians:")
    print("| workload | off | on | ratio |\n|---|---|---|---|")
    base = RenderSettings(t=0.3)
    for name in ("tiny", "released"):
        G, _ = load_tiny(args.ckpt) if name == "tiny" else released()
        G = G.eval().requires_grad_(False)
        r = FrameRenderer(G, channels_last=True)
        n = args.runs if name == "tiny" else args.runs_512
        rows = [("tiny 128², orbit with cached planes", orbit(base, n)), ("tiny 128², scrub", scrub(base, n)),
                ("tiny orbit at neural resolution 64", orbit(base, n, neural_resolution=64))] if name == "tiny" else \
               [("released 512², full frame (new t)", scrub(base, n)), ("released 512², cached planes", orbit(base, n))]
        def setup(on: bool, G=G, r=r) -> FrameRenderer:
            switch(G, on)
            return r
        for label, settings in rows:
            med = alternate(settings, {"off": lambda: setup(False), "on": lambda: setup(True)})
            print(f"| {label} | {med['off'] * 1e3:.0f} ms | {med['on'] * 1e3:.0f} ms | {med['off'] / med['on']:.2f}x |",
                  flush=True)
        switch(G, True)
        del G, r


def memory_child(args) -> None:
    """One process's figures for --part memory: medians of the fast path (fused CPU, NHWC) and peak RSS."""
    def timed(r, settings):
        r.render(settings[0])
        ts = []
        for st in settings[1:]:
            t0 = time.perf_counter()
            r.render(st)
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    out = {"keep_freed_memory": host_memory.keep_freed_memory(), "status": host_memory.status()}
    base = RenderSettings(t=0.3)
    for name, (G, _) in (("tiny", load_tiny(args.ckpt)), ("released", released())):
        G = G.eval().requires_grad_(False)
        r = FrameRenderer(G, channels_last=True)
        n = args.runs if name == "tiny" else args.runs_512
        out[f"{name}_orbit"] = timed(r, orbit(base, n))
        out[f"{name}_scrub"] = timed(r, scrub(base, n))
        del G, r
    with open("/proc/self/status") as f:
        out["peak_rss_mb"] = int(f.read().split("VmHWM:")[1].split()[0]) / 1024
    print(json.dumps(out))


def memory(args) -> None:
    """host_memory.keep_freed_memory off and on. It is process-wide, so each round runs one child process
    of each (PV3D_KEEP_FREED_MEMORY=0 / 1), alternately; medians over the rounds."""
    res = {"0": [], "1": []}
    for _ in range(args.rounds):
        for flag in res:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--part", "memory-child", "--runs", str(args.runs),
                   "--runs-512", str(args.runs_512), "--threads", str(torch.get_num_threads())]
            if args.ckpt:
                cmd += ["--ckpt", args.ckpt]
            proc = subprocess.run(cmd, env=dict(os.environ, PV3D_KEEP_FREED_MEMORY=flag), capture_output=True,
                                  text=True, check=True)
            res[flag].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"  keep freed memory {'on ' if flag == '1' else 'off'}: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in res[flag][-1].items() if isinstance(v, float)), flush=True)

    def med(flag, key):
        return statistics.median(r[key] for r in res[flag])
    print(f"\nkeep freed memory (host_memory), {args.rounds} alternating rounds of child processes, medians:")
    print("| workload | off | on | ratio |\n|---|---|---|---|")
    for key, label in (("tiny_orbit", "tiny 128², orbit with cached planes"), ("tiny_scrub", "tiny 128², scrub"),
                       ("released_scrub", "released 512², full frame (new t)"),
                       ("released_orbit", "released 512², cached planes")):
        a, b = med("0", key), med("1", key)
        print(f"| {label} | {a * 1e3:.0f} ms | {b * 1e3:.0f} ms | {a / b:.2f}x |")
    print(f"| peak RSS | {med('0', 'peak_rss_mb'):.0f} MB | {med('1', 'peak_rss_mb'):.0f} MB | |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--runs", type=int, default=7, help="timed frames per configuration, tiny preset")
    ap.add_argument("--runs-512", type=int, default=3, help="timed frames per configuration, released config")
    ap.add_argument("--part", default="goals,scaling", help="goals, scaling, memory, layers, prepared, winograd (comma-separated)")
    ap.add_argument("--rounds", type=int, default=3, help="--part memory: alternating rounds of child processes")
    ap.add_argument("--ckpt", help="tiny-size checkpoint (default: the embedded model)")
    ap.add_argument("--official-root", help="checkout of the official PV3D code: also run bench_vs_official.py")
    args = ap.parse_args(argv)
    unknown = set(args.part.split(",")) - {"goals", "scaling", "memory", "layers", "prepared", "winograd", "memory-child"}
    if unknown:
        ap.error(f"--part: unknown part(s) {', '.join(sorted(unknown))}; choose from goals, scaling, memory, layers, prepared, winograd")
    for flag, value in (("--runs", args.runs), ("--runs-512", args.runs_512), ("--rounds", args.rounds)):
        if not 1 <= value <= 1000:
            ap.error(f"{flag} must be between 1 and 1000, got {value}")
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"load average {load[0]:.2f} at start; {cuda_ops.describe('cpu')}")
    parts = args.part.split(",")
    if parts == ["memory-child"]:
        memory_child(args)
        return 0
    if "memory" in parts:
        memory(args)
    if "layers" in parts:
        layers(args)
    if "prepared" in parts:
        prepared(args)
    if "winograd" in parts:
        winograd_part(args)
    if "goals" in parts:
        goals(args)
    if "scaling" in parts:
        scaling(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
