"""Training throughput (real images per second, 2 per clip) for a preset, 1 and N processes.

    python benchmarks/bench_train.py --data DIR [--preset tiny] [--batch 8] [--steps 6] [--procs 1 2]

Each configuration runs ``--steps`` steps (the first is warm-up and excluded: it includes the lazy
regularisation phases of step 0, so the median over the remaining steps is the main-phase cost, with
R1 every 16 and density every 4 steps amortised in the mean column).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def one_process(args) -> dict:
    import torch

    from pv3d_core.train.config import TrainConfig
    from pv3d_core.train.dist import Dist
    from pv3d_core.train.loop import Trainer

    dist = Dist()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig().override(dict(data=args.data, out=out, preset=args.preset, batch=args.batch,
                                          steps=args.steps, tensorboard=False, sample_every=0, checkpoint_every=0))
        tr = Trainer(cfg, dist)
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            tr.train_step()
            times.append(time.perf_counter() - t0)
    per = times[1:]
    res = {"procs": dist.world, "batch": args.batch, "median_step_s": statistics.median(per),
           "mean_step_s": statistics.mean(per),
           "images_per_s_median": 2 * args.batch / statistics.median(per),
           "images_per_s_mean": 2 * args.batch / statistics.mean(per)}
    dist.close()
    return res


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: cores / procs)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        r = one_process(args)
        if int(os.environ.get("RANK", "0")) == 0:
            print("RESULT " + json.dumps(r))
        return
    rows = []
    for n in args.procs:
        threads = args.threads or max(1, (os.cpu_count() or 1) // n)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
               os.path.abspath(__file__), "--worker", "--data", args.data, "--preset", args.preset,
               "--batch", str(args.batch), "--steps", str(args.steps), "--threads", str(threads)]
        r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
        if not line:
            print(r.stderr[-2000:])
            raise SystemExit(f"{n}-process run failed")
        rows.append(json.loads(line[0][7:]))
    print(f"{'procs':>5} {'batch':>5} {'median step s':>14} {'img/s (median)':>15} {'img/s (mean)':>13}")
    for r in rows:
        print(f"{r['procs']:>5} {r['batch']:>5} {r['median_step_s']:>14.2f} {r['images_per_s_median']:>15.2f} "
              f"{r['images_per_s_mean']:>13.2f}")


if __name__ == "__main__":
    main()
