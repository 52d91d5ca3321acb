"""`pv3d train`: single process, or under torchrun (`torchrun --nproc_per_node N -m pv3d_core.train.cli ...`)."""
from __future__ import annotations

import json
import sys

from .config import TrainConfig


def add_train_parser(sub):
    p = sub.add_parser("train", help="train PV3D (sparse two-frame GAN) on a dataset folder",
                       description="Train or fine-tune PV3D with the official objective. Options come from "
                                   "the defaults (official values), then --config FILE (JSON), then --set "
                                   "KEY=VALUE and the flags below. Under torchrun, --batch is the global "
                                   "batch (clips per step over all processes).")
    _add_args(p)
    p.set_defaults(func=run_train)


def _add_args(p):
    p.add_argument("--data", help="dataset folder (official layout: `pv3d data synth` / `pv3d data prepare`)")
    p.add_argument("-o", "--out", help="run folder (checkpoints, samples, tensorboard)")
    p.add_argument("--config", help="JSON file of training options")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one option")
    p.add_argument("--preset", help="model preset when not fine-tuning (default tiny)")
    p.add_argument("--init", help="fine-tune from this checkpoint (official .ckpt or ours)")
    p.add_argument("--steps", type=int, help="total steps")
    p.add_argument("--batch", type=int, help="clips per step, all processes together")
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--sample-every", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch threads per process")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--no-progress", action="store_true")


def config_from_args(args) -> TrainConfig:
    cfg = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    over = {}
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        over[k] = v
    for k in ("data", "out", "preset", "init", "steps", "batch", "checkpoint_every", "sample_every", "seed",
              "threads"):
        v = getattr(args, k, None)
        if v is not None:
            over[k] = v
    cfg.override(over)
    if not cfg.data:
        raise ValueError("no dataset: pass --data DIR (make one with `pv3d data synth -o DIR`)")
    return cfg


def run_train(args) -> int:
    from .loop import train

    cfg = config_from_args(args)
    summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=1))
    return 0


def main(argv=None) -> int:
    """Entry point for torchrun: ``torchrun --nproc_per_node 2 -m pv3d_core.train.cli --data D -o OUT``."""
    import argparse

    from ..cli import EXIT_USAGE
    from ..data.layout import DatasetError
    from ..io import CheckpointError

    p = argparse.ArgumentParser(prog="pv3d-train")
    _add_args(p)
    args = p.parse_args(argv)
    try:
        return run_train(args)
    except (ValueError, CheckpointError, DatasetError, FileNotFoundError) as e:
        print(f"pv3d train: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        import torch.distributed as td

        if td.is_available() and td.is_initialized():
            td.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
