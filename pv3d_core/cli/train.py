"""`pv3d train` and `pv3d warmstart`.

Under torchrun, run this module: ``torchrun --nproc_per_node 2 -m pv3d_core.cli.train --data D -o OUT``.
"""
from __future__ import annotations

import json
import os
import sys

from ..errors import UsageError

WARMSTART_DESCRIPTION = (
    "Fit the generator directly to data with known cameras (and, for `pv3d data synth` output, known "
    "geometry), auto-decoder style: every clip gets a learnable appearance and motion code, every frame "
    "its timestamp, and each frame is rendered from its camera and pulled towards the data. The result "
    "is a starting point for `pv3d train --init`; the embedded default model was made this way.")


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train PV3D (sparse two-frame GAN) on a dataset folder",
                       description="Train or fine-tune PV3D with the official objective. Options come from "
                                   "the defaults (official values), then --config FILE (JSON), then --set "
                                   "KEY=VALUE and the flags below. Under torchrun, --batch is the global "
                                   "batch (clips per step over all processes).")
    add_train_arguments(p)
    p.set_defaults(func=run_train)

    w = sub.add_parser("warmstart", help="fit a generator to data with known cameras/geometry (reconstruction)",
                       description=WARMSTART_DESCRIPTION)
    w.add_argument("--data", required=True, help="dataset folder (official layout; `pv3d data synth` output)")
    w.add_argument("-o", "--out", default="runs/warmstart", help="run folder (resumes if it holds a state)")
    w.add_argument("--preset", default="tiny")
    w.add_argument("--steps", type=_recon("steps"), default=2000)
    w.add_argument("--batch", type=_recon("batch"), default=8)
    w.add_argument("--lr", type=_recon("lr"), default=2e-3)
    w.add_argument("--checkpoint-every", type=_recon("checkpoint_every"), default=200)
    w.add_argument("--seed", type=_recon("seed"), default=0)
    w.add_argument("--threads", type=_recon("threads"), default=0, help="torch threads (0 = default)")
    w.add_argument("--init", default=None, help="start from this checkpoint's generator")
    w.set_defaults(func=run_warmstart)

    d = sub.add_parser("distill", help="train a generator to reproduce the procedural heads (the default model)",
                       description=DISTILL_DESCRIPTION)
    d.add_argument("-o", "--out", default="runs/distill", help="run folder (resumes if it holds a state)")
    d.add_argument("--init", default="default",
                   help="start from this checkpoint ('default' = the embedded model, 'none' = a fresh --preset)")
    d.add_argument("--preset", default="tiny", help="model preset when --init none")
    d.add_argument("--steps", type=_distill("steps"), default=10000,
                   help="total steps (a resumed run continues to this)")
    d.add_argument("--batch", type=_distill("batch"), default=8)
    d.add_argument("--lr", type=_distill("lr"), default=2e-3)
    d.add_argument("--ssaa", type=_distill("ssaa"), default=1, help="teacher supersampling per pixel side (1-4)")
    d.add_argument("--adv-weight", type=_distill("adv_weight"), default=0.0,
                   help="patch-adversarial weight (0 = regression only)")
    d.add_argument("--free-space", type=_distill("free_space"), default=0.0,
                   help="weight of zero density where the teacher's head is not, at random points of the box")
    d.add_argument("--occupancy", type=_distill("occupancy"), default=0.0,
                   help="weight of solid density (raw σ >= 20) inside the teacher's head, at the same points")
    d.add_argument("--train-only", type=_distill("train_only"), default="all",
                   help="all (default) or superresolution (only the super-resolution network trains, geometry "
                        "and raw render kept, a step costs about a third: to sharpen a model whose shape is done)")
    d.add_argument("--checkpoint-every", type=_distill("checkpoint_every"), default=50)
    d.add_argument("--snapshot-every", type=_distill("snapshot_every"), default=500,
                   help="keep the EMA generator every N steps (0 = never)")
    d.add_argument("--sample-every", type=_distill("sample_every"), default=250)
    d.add_argument("--seed", type=_distill("seed"), default=0)
    d.add_argument("--threads", type=_distill("threads"), default=0, help="torch threads (0 = default)")
    d.add_argument("--no-compile", action="store_true", help="render the teacher without torch.compile")
    d.set_defaults(func=run_distill)


DISTILL_DESCRIPTION = (
    "Train the generator to reproduce the procedural talking heads for its own inputs: the appearance "
    "code, the motion code and t name one head (pv3d_core.data.head_codes), rendered from a random camera "
    "as the target. Fresh codes every step, so random seeds become new heads rather than blends. This is "
    "how the embedded default model is made; its MODEL_CARD.md gives the settings.")


def _rule_flag(module: str, table: str, name: str):
    """The argparse type of an option: the rule its config class checks it with (imported when the
    flag is used, so that building the parser does not import torch)."""
    def parse(text):
        import importlib

        return getattr(importlib.import_module(module, __package__), table)[name].flag(text)
    parse.rule = (module, table, name)
    return parse


def _train(name):
    return _rule_flag("..train.config", "TRAIN_RULES", name)


def _recon(name):
    return _rule_flag("..train.recon", "RECON_RULES", name)


def _distill(name):
    return _rule_flag("..train.distill", "DISTILL_RULES", name)


def add_train_arguments(p) -> None:
    p.add_argument("--data", help="dataset folder (official layout: `pv3d data synth` / `pv3d data prepare`)")
    p.add_argument("-o", "--out", help="run folder (checkpoints, samples, tensorboard)")
    p.add_argument("--config", help="JSON file of training options")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one option")
    p.add_argument("--preset", help="model preset when not fine-tuning (default tiny)")
    p.add_argument("--init", help="fine-tune from this checkpoint (official .ckpt or ours)")
    p.add_argument("--steps", type=_train("steps"), help="total steps")
    p.add_argument("--batch", type=_train("batch"), help="clips per step, all processes together")
    p.add_argument("--checkpoint-every", type=_train("checkpoint_every"))
    p.add_argument("--sample-every", type=_train("sample_every"))
    p.add_argument("--seed", type=_train("seed"))
    p.add_argument("--threads", type=_train("threads"), help="torch threads per process")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--no-progress", action="store_true")


def config_from_args(args):
    from ..train.config import TrainConfig

    cfg = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    over = {}
    for item in args.set:
        if "=" not in item:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        over[k] = v
    for k in ("data", "out", "preset", "init", "steps", "batch", "checkpoint_every", "sample_every", "seed",
              "threads"):
        v = getattr(args, k, None)
        if v is not None:
            over[k] = v
    cfg.override(over)
    if not cfg.data:
        raise UsageError("no dataset: pass --data DIR (make one with `pv3d data synth -o DIR`)")
    return cfg


def _step_bar(desc: str, show: bool, keys: tuple):
    if not show:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="step", disable=None)

    def cb(step, total, info):
        bar.total = total
        bar.n = step
        bar.set_postfix({k: f"{info[k]:.3f}" for k in keys if k in info}, refresh=False)
        bar.refresh()
    return cb, bar.close


def run_train(args) -> int:
    from ..train.loop import train

    cfg = config_from_args(args)
    main_process = int(os.environ.get("RANK", "0")) == 0
    cb, close = _step_bar("train", main_process and not args.no_progress, ("G", "D", "images_per_s"))
    try:
        summary = train(cfg, resume=args.resume, progress=cb)
    finally:
        close()
    if main_process:
        print(json.dumps(summary, indent=1))
    return 0


def run_warmstart(args) -> int:
    from ..train.recon import ReconConfig, train_recon

    cfg = ReconConfig(data=args.data, out=args.out, preset=args.preset, steps=args.steps, batch=args.batch,
                      lr=args.lr, checkpoint_every=args.checkpoint_every, seed=args.seed, threads=args.threads)
    cb, close = _step_bar("recon", True, ("img", "raw", "images_per_s"))
    try:
        summary = train_recon(cfg, progress=cb, init=args.init)
    finally:
        close()
    print(json.dumps(summary, indent=1))
    return 0


def run_distill(args) -> int:
    from ..train.distill import DistillConfig, distill

    cfg = DistillConfig(out=args.out, init=None if args.init.lower() == "none" else args.init, preset=args.preset,
                        steps=args.steps, batch=args.batch, lr=args.lr, ssaa=args.ssaa, adv_weight=args.adv_weight,
                        free_space=args.free_space, occupancy=args.occupancy, train_only=args.train_only,
                        checkpoint_every=args.checkpoint_every, snapshot_every=args.snapshot_every,
                        sample_every=args.sample_every, seed=args.seed, threads=args.threads,
                        compile_teacher=not args.no_compile).validate()
    cb, close = _step_bar("distill", True, ("image", "gradient", "step_s"))
    try:
        summary = distill(cfg, progress=cb)
    finally:
        close()
    print(json.dumps(summary, indent=1))
    return 0


def main(argv=None) -> int:
    """torchrun's entry point: the `pv3d train` options, errors handled as `pv3d` handles them."""
    from .runner import torchrun_main

    return torchrun_main(add_train_arguments, run_train, "pv3d train", argv)


if __name__ == "__main__":
    sys.exit(main())
