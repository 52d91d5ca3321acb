"""`pv3d data synth` and `pv3d data prepare`: every data source writes the official layout."""
from __future__ import annotations

import json

from ..rules import SEED, Int


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="make training data (synthetic talking heads, or real videos)")
    dsub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")

    s = dsub.add_parser("synth", help="render procedural synthetic talking heads with ground truth")
    s.add_argument("-o", "--output", required=True, help="dataset folder (official PV3D layout)")
    s.add_argument("--clips", type=Int(1, 1_000_000).flag, default=64, help="number of clips, one identity each (default 64)")
    s.add_argument("--frames", type=Int(2, 10_000).flag, default=32, help="frames per clip (default 32)")
    s.add_argument("--res", type=Int(32, 1024).flag, default=128, help="frame size in pixels, 32-1024 (default 128)")
    s.add_argument("--seed", type=SEED.flag, default=0, help="dataset seed (default 0)")
    s.add_argument("--workers", type=Int(1, 1024).flag, default=None, help="processes (default: all cores)")
    s.set_defaults(func=run_synth)

    r = dsub.add_parser("prepare", help="real talking-head videos -> face crops and per-frame cameras")
    r.add_argument("videos", nargs="+", help="input videos")
    r.add_argument("-o", "--output", required=True, help="dataset folder (official PV3D layout)")
    r.add_argument("--res", type=Int(16, 4096).flag, default=256, help="crop size in pixels, 16-4096 (default 256)")
    r.set_defaults(func=run_prepare)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_synth(args) -> int:
    from ..data.synth import synthesize_dataset
    from .common import counter_bar

    cb, close = counter_bar("synth heads", "clip", total=args.clips)
    try:
        summary = synthesize_dataset(args.output, args.clips, args.frames, args.res, args.seed,
                                     workers=args.workers, progress=cb)
    finally:
        close()
    print(json.dumps(summary, indent=1, default=str)[:2000])
    return 0


def run_prepare(args) -> int:
    from tqdm import tqdm

    from ..data.prepare import prepare_videos

    state = {"name": None, "bar": None}

    def progress(name, i, n):
        if state["name"] != name:
            if state["bar"] is not None:
                state["bar"].close()
            state["name"], state["bar"] = name, tqdm(total=n, desc=name, unit="frame", disable=None, leave=False)
        state["bar"].n = i
        state["bar"].refresh()

    try:
        summary = prepare_videos(args.videos, args.output, resolution=args.res, progress=progress)
    finally:
        if state["bar"] is not None:
            state["bar"].close()
    print(json.dumps(summary, indent=1, default=str)[:4000])
    return 0
