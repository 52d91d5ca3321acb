"""`pv3d data synth` and `pv3d data prepare`: every data source writes the official layout."""
from __future__ import annotations

import json

from ..errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="make training data (synthetic talking heads, or real videos)")
    dsub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")

    s = dsub.add_parser("synth", help="render procedural synthetic talking heads with ground truth")
    s.add_argument("-o", "--output", required=True, help="dataset folder (official PV3D layout)")
    s.add_argument("--clips", type=int, default=64, help="number of clips, one identity each (default 64)")
    s.add_argument("--frames", type=int, default=32, help="frames per clip (default 32)")
    s.add_argument("--res", type=int, default=128, help="frame size in pixels (default 128)")
    s.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    s.set_defaults(func=run_synth)

    r = dsub.add_parser("prepare", help="real talking-head videos -> face crops and per-frame cameras")
    r.add_argument("videos", nargs="+", help="input videos")
    r.add_argument("-o", "--output", required=True, help="dataset folder (official PV3D layout)")
    r.add_argument("--res", type=int, default=256, help="crop size in pixels (default 256)")
    r.set_defaults(func=run_prepare)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_synth(args) -> int:
    from ..data.synth import synthesize_dataset
    from .common import counter_bar

    if args.clips < 1 or args.frames < 2:
        raise UsageError("--clips must be >= 1 and --frames >= 2")
    if not 32 <= args.res <= 1024:
        raise UsageError("--res must be between 32 and 1024")
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
