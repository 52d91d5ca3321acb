"""The frame renderer at two (or more) git revisions, side by side on this machine, same model.

    python benchmarks/bench_revisions.py --rev 912aa99 --rev HEAD [--workloads orbit,scrub,n64,full512,cached512]
                                         [--rounds 4] [--frames 15] [--frames-512 3] [--threads 2] [--ckpt PATH]

Figures taken on another machine (an issue's "today" column) cannot be compared with this machine's.
The code they were taken with can: each revision is exported (``git archive``) into a scratch folder,
and child processes, one revision at a time and alternating (A, B, A, B, ...), render the same frames
with that revision's ``pv3d_core`` through its ``FrameRenderer``. Per-frame times are pooled per
revision; the table gives their medians, in brackets the range of the children's own medians, and the
ratio to the first revision. ``--rev .`` is the working tree as it is, uncommitted changes included.

Before each round a child times a 2048² fp32 matrix product; the run ends with its median and range
(GFLOP/s), the figure an issue taken on another machine quotes for its own.

Separate processes differ more than frames of one process do: an A/A run (``--rev HEAD --rev HEAD~0``,
3 rounds) gave 1.11x and 0.96x here. A change smaller than the bracketed spread needs more rounds, or
an A/B/A' inside one process.

Workloads (bench_realtime.py's): the tiny model (``--ckpt``, default: this tree's embedded model, so
that every revision renders the same weights) at 128², orbit with cached planes, scrub (a new t every
frame) and orbit at neural resolution 64; the released config pv3d-vox512 (random weights, seed 0) at
512², full frame (``full512``) and cached planes (``cached512``).

A speed-up measured this way translates an old figure to this machine only as far as both codes slow
down alike from one machine to the other: memory-bound code (the old reference renderer) gains more
from a faster memory system than compute-bound code (the convolutions) does.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("orbit", "scrub", "n64", "full512", "cached512")

# Runs inside a child with one revision's tree first on sys.path: only APIs every revision since the
# frame pipeline (487e280) has, and FrameRenderer's channels_last where the revision has it.
CHILD = r'''
import json, math, sys, time
root, workload, frames, ckpt, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
sys.path.insert(0, root)
import torch
torch.set_num_threads(threads)
import pv3d_core
if not pv3d_core.__file__.startswith(root):
    sys.exit(f"imported pv3d_core from {pv3d_core.__file__}, not from {root}")
from pv3d_core.pipeline import FrameRenderer, RenderSettings
if workload.endswith("512"):
    from pv3d_core.config import preset
    from pv3d_core.io import build_generator
    torch.manual_seed(0)
    G = build_generator(preset("pv3d-vox512"))
else:
    from pv3d_core.io import load_generator
    G = load_generator(ckpt)
G = G.eval().requires_grad_(False)
try:
    r = FrameRenderer(G, channels_last=True)
except TypeError:      # revisions before the NHWC renderer
    r = FrameRenderer(G)
base = RenderSettings(t=0.3)
n = frames
orbit = [base.with_(yaw=math.radians(-30 + 60 * i / n)) for i in range(n + 1)]
scrub = [base.with_(t=round((i + 0.5) / (n + 1), 6), use_cache=False) for i in range(n + 1)]
sets = {"orbit": orbit, "cached512": orbit, "scrub": scrub, "full512": scrub,
        "n64": [s.with_(neural_resolution=64) for s in orbit]}[workload]
for _ in range(1 if workload.endswith("512") else 2):
    r.render(sets[0])
times = []
for s in sets[1:]:
    t0 = time.perf_counter()
    r.render(s)
    times.append(time.perf_counter() - t0)
print(json.dumps(times))
'''

# This machine's fp32 matrix-product speed, probed in a child between the rounds: an issue's figures
# taken on another machine quote it, and this VM's varies by 1.5x from one hour to the next.
MATMUL_CHILD = r'''
import json, statistics, sys, time
import torch
torch.set_num_threads(int(sys.argv[1]))
n = 2048
a, b = torch.randn(n, n), torch.randn(n, n)
a @ b
times = []
for _ in range(7):
    t0 = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - t0)
print(json.dumps(2 * n ** 3 / statistics.median(times) / 1e9))
'''


def fail(msg: str):
    """One line on stderr and exit status 2 (bad input), as every command of the project."""
    print(f"bench_revisions: {msg}", file=sys.stderr)
    raise SystemExit(2)


def export(rev: str, into: Path) -> Path:
    """The tree of ``rev`` in ``into`` (``.``: this working tree itself)."""
    if rev == ".":
        return ROOT
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                         capture_output=True, text=True)
    if sha.returncode:
        fail(f"{rev!r} is not a commit of {ROOT}")
    dest = into / sha.stdout.strip()[:12]
    if not dest.exists():
        dest.mkdir(parents=True)
        archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", sha.stdout.strip()], stdout=subprocess.PIPE)
        untar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, capture_output=True, text=True)
        if archive.wait() or untar.returncode:      # e.g. a full disk under the scratch folder
            fail(f"exporting {rev} into {dest} failed: {untar.stderr.strip()[-200:] or 'git archive failed'}")
    return dest


def child_env() -> dict:
    """The environment without anything that would put another pv3d_core first on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _child(args: list[str], what: str):
    out = subprocess.run([sys.executable, "-c", *args], capture_output=True, text=True,
                         cwd=tempfile.gettempdir(), env=child_env())
    if out.returncode:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        fail(f"{what} failed: " + " | ".join(tail))
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_child(root: Path, workload: str, frames: int, ckpt: str, threads: int) -> list[float]:
    return _child([CHILD, str(root), workload, str(frames), ckpt, str(threads)], f"{workload} at {root}")


def matmul_gflops(threads: int) -> float:
    """Median GFLOP/s of a 2048² fp32 matrix product with ``threads`` threads, in a child process."""
    return _child([MATMUL_CHILD, str(threads)], "the matmul probe")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", action="append", required=True, help="a git revision, or . for the working tree "
                    "(give it two or more times; ratios are to the first)")
    ap.add_argument("--workloads", default="orbit,scrub,n64", help=f"comma-separated, from {', '.join(WORKLOADS)}")
    ap.add_argument("--rounds", type=int, default=4, help="child processes per revision and workload, alternating")
    ap.add_argument("--frames", type=int, default=15, help="timed frames per child, tiny workloads")
    ap.add_argument("--frames-512", type=int, default=3, help="timed frames per child, 512² workloads")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in each child")
    ap.add_argument("--ckpt", help="tiny-size checkpoint (default: this tree's embedded model)")
    args = ap.parse_args(argv)
    if len(args.rev) < 2 or len(set(args.rev)) != len(args.rev):
        ap.error("--rev: give two or more different revisions")
    works = args.workloads.split(",")
    unknown = set(works) - set(WORKLOADS)
    if unknown:
        ap.error(f"--workloads: unknown {', '.join(sorted(unknown))}; choose from {', '.join(WORKLOADS)}")
    for flag, value, hi in (("--rounds", args.rounds, 50), ("--frames", args.frames, 1000),
                            ("--frames-512", args.frames_512, 100), ("--threads", args.threads, 256)):
        if not 1 <= value <= hi:
            ap.error(f"{flag} must be between 1 and {hi}, got {value}")
    sys.path.insert(0, str(ROOT))
    from pv3d_core.paths import default_checkpoint
    ckpt = args.ckpt or str(default_checkpoint())
    if any(not w.endswith("512") for w in works) and not Path(ckpt).is_file():
        ap.error(f"--ckpt: no checkpoint at {ckpt}")
    scratch = Path(tempfile.mkdtemp(prefix="pv3d-revs-"))
    try:
        trees = {rev: export(rev, scratch) for rev in args.rev}
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"{args.threads} threads, {os.cpu_count()} cores, load average {load:.2f} at start; "
              f"{args.rounds} alternating children per revision, tiny model {Path(ckpt).name}\n")
        print("| workload | " + " | ".join(args.rev) + " |\n|---|" + "---|" * len(args.rev))
        gflops = []
        for w in works:
            frames = args.frames_512 if w.endswith("512") else args.frames
            times = {rev: [] for rev in args.rev}
            per_child = {rev: [] for rev in args.rev}
            for _ in range(args.rounds):
                gflops.append(matmul_gflops(args.threads))
                for rev, root in trees.items():
                    t = run_child(root, w, frames, ckpt, args.threads)
                    times[rev] += t
                    per_child[rev].append(statistics.median(t))
            med = {rev: statistics.median(v) for rev, v in times.items()}
            first = med[args.rev[0]]

            def fmt(m):
                return f"{m:.2f} s" if w.endswith("512") else f"{m * 1e3:.0f} ms"

            # the spread of the children's own medians: processes differ (by ~10% here in A/A runs),
            # so a ratio inside that spread needs more rounds
            cells = [f"{fmt(m)}" + ("" if w.endswith("512") else f" ({1 / m:.1f} fps)")
                     + f" [{fmt(min(per_child[rev]))}-{fmt(max(per_child[rev]))}]"
                     + ("" if rev == args.rev[0] else f", {first / m:.2f}x") for rev, m in med.items()]
            print(f"| {w} | " + " | ".join(cells) + " |", flush=True)
        print(f"\nfp32 matmul (2048², {args.threads} threads), probed before each round: median "
              f"{statistics.median(gflops):.0f} GFLOP/s [{min(gflops):.0f}-{max(gflops):.0f}]")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
