"""`pv3d train-encoder`: a feed-forward portrait encoder for a model checkpoint.

Under torchrun, run this module: ``torchrun --nproc_per_node 2 -m pv3d_core.cli.encoder --ckpt X -o Y``.
"""
from __future__ import annotations

import json
import os
import sys


DESCRIPTION = (
    "Train the portrait encoder of a model on the model's own samples (random identities, motions and "
    "cameras, augmented like real photos): an aligned face crop -> the appearance latent in one forward pass, "
    "so that a dropped photo shows a first 3D result at once and pivotal tuning needs few steps. Write it "
    "beside the model as <model>-encoder.safetensors and the portrait pipeline finds it. Resumable: the "
    "same command continues a stopped run (state in OUT without .safetensors + .run/). Meant for a GPU "
    "for big models; the embedded tiny model's encoder trains on a CPU.")


def add_arguments(p) -> None:
    from ..train.encoder import ENCODER_TRAIN_RULES as R, EncoderTrainConfig

    d = EncoderTrainConfig()
    p.add_argument("--ckpt", help="model checkpoint (default: the embedded model)")
    p.add_argument("-o", "--out", help="encoder file to write (default: beside the model, <model>-encoder.safetensors)")
    p.add_argument("--run", default="", help="folder for the resumable state and history (default: OUT.run/)")
    p.add_argument("--init", help="start from these weights: an encoder file, or another training run's folder "
                                  "(OUT.run/: its averaged encoder), e.g. those of an earlier model")
    p.add_argument("--steps", type=R["steps"].flag, default=d.steps, help=f"total steps (default {d.steps}; a resumed run continues to this)")
    p.add_argument("--batch", type=R["batch"].flag, default=d.batch, help=f"samples per step, all processes together (default {d.batch})")
    p.add_argument("--fresh", type=R["fresh"].flag, default=d.fresh, help=f"new generator samples per step and process (default {d.fresh})")
    p.add_argument("--pool", type=R["pool"].flag, default=d.pool, help=f"samples kept for reuse per process (default {d.pool})")
    p.add_argument("--image-samples", type=R["image_samples"].flag, default=d.image_samples,
                   help=f"samples per step rendered from the predicted latent for the image loss (default {d.image_samples})")
    p.add_argument("--lr", type=R["lr"].flag, default=d.lr)
    p.add_argument("--max-yaw", type=R["max_yaw_deg"].flag, default=d.max_yaw_deg, help="camera yaw range of the samples, degrees")
    p.add_argument("--max-pitch", type=R["max_pitch_deg"].flag, default=d.max_pitch_deg, help="camera pitch range of the samples, degrees")
    p.add_argument("--max-minutes", type=R["max_minutes"].flag, default=0.0, help="stop after this long, state saved (0 = no limit)")
    p.add_argument("--write-on-stop", action="store_true",
                   help="when the run stops early (--max-minutes, Ctrl-C, SIGTERM), write the encoder as it is "
                        "too (a time budget); the same command still continues the run")
    p.add_argument("--checkpoint-every", type=R["checkpoint_every"].flag, default=d.checkpoint_every)
    p.add_argument("--seed", type=R["seed"].flag, default=0)
    p.add_argument("--threads", type=R["threads"].flag, default=0, help="torch threads per process (0 = torch's default)")
    p.add_argument("--no-progress", action="store_true")


def add_parser(sub) -> None:
    p = sub.add_parser("train-encoder", help="train the feed-forward portrait encoder of a model",
                       description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=run_train_encoder)


def config_from_args(args):
    from ..paths import encoder_for
    from ..train.encoder import EncoderTrainConfig
    from .common import resolve_checkpoint

    ckpt = resolve_checkpoint(args.ckpt)
    out = args.out or str(encoder_for(ckpt))
    return EncoderTrainConfig(
        ckpt=str(ckpt), out=out, run=args.run, init=args.init, steps=args.steps, batch=args.batch, fresh=args.fresh,
        pool=args.pool, image_samples=args.image_samples, lr=args.lr, max_yaw_deg=args.max_yaw,
        max_pitch_deg=args.max_pitch, max_minutes=args.max_minutes, write_on_stop=args.write_on_stop,
        checkpoint_every=args.checkpoint_every, seed=args.seed, threads=args.threads).validate()


def _bar(show: bool):
    if not show:
        return None, lambda: None
    from tqdm import tqdm

    state = {"bar": None, "pool": None}

    def cb(step, total, logs):
        if logs.get("stage") == "pool":
            if state["pool"] is None:
                state["pool"] = tqdm(total=total, desc="train-encoder: first samples", unit="sample", disable=None,
                                     leave=False)
            state["pool"].n = step
            state["pool"].refresh()
            return
        if state["bar"] is None:
            if state["pool"] is not None:
                state["pool"].close()
            state["bar"] = tqdm(total=total, initial=step - 1, desc="train-encoder", unit="step", disable=None)
        b = state["bar"]
        b.total, b.n = total, step
        b.set_postfix({k: f"{logs[k]:.3f}" for k in ("latent", "image", "pose_deg", "eval_psnr") if k in logs},
                      refresh=False)
        b.refresh()

    def close():
        for b in state.values():
            if b is not None:
                b.close()
    return cb, close


def run_train_encoder(args) -> int:
    from ..train.encoder import train_encoder

    cfg = config_from_args(args)
    main_process = int(os.environ.get("RANK", "0")) == 0
    cb, close = _bar(main_process and not args.no_progress)
    try:
        summary = train_encoder(cfg, progress=cb)
    finally:
        close()
    if main_process:
        print(json.dumps(summary, indent=1))
        if summary.get("interrupted"):
            wrote = f"; wrote {summary['encoder']} as it is" if summary.get("encoder") else ""
            print(f"stopped at step {summary['steps']} of {summary['of']}{wrote}; "
                  "run the same command again to continue")
    return 0


def main(argv=None) -> int:
    """torchrun's entry point: the `pv3d train-encoder` options, errors handled as `pv3d` handles them."""
    from .runner import torchrun_main

    return torchrun_main(add_arguments, run_train_encoder, "pv3d train-encoder", argv, DESCRIPTION)


if __name__ == "__main__":
    sys.exit(main())
