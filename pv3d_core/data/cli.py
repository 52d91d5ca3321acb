"""`pv3d data synth` and `pv3d data prepare`: every data source writes the official layout."""
from __future__ import annotations

import json


def add_data_parser(sub):
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
    from .synth import synthesize_dataset

    if args.clips < 1 or args.frames < 2:
        raise ValueError("--clips must be >= 1 and --frames >= 2")
    if not 32 <= args.res <= 1024:
        raise ValueError("--res must be between 32 and 1024")
    summary = synthesize_dataset(args.output, args.clips, args.frames, args.res, args.seed,
                                 workers=args.workers, progress=True)
    print(json.dumps(summary, indent=1, default=str)[:2000])
    return 0


def run_prepare(args) -> int:
    from .prepare import prepare_videos

    summary = prepare_videos(args.videos, args.output, resolution=args.res, progress=True)
    print(json.dumps(summary, indent=1, default=str)[:4000])
    return 0
