"""`pv3d`: one subcommand per job. Errors the user can fix print one line and exit 2."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
from pathlib import Path

EXIT_USAGE = 2


def _parse_seeds(text: str) -> list[int]:
    """'0,3,5-7' -> [0, 3, 5, 6, 7]."""
    seeds = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else part[1:].split("-", 1)
                seeds.extend(range(int(a), int(b) + 1))
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like 0,3,5-7, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("no seeds given")
    return seeds


def _device(name: str | None):
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(_fail("--device cuda was asked for but no CUDA GPU is available"))
    return dev


def _fail(msg: str) -> int:
    print(f"pv3d: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def _resolve_ckpt(path: str | None) -> Path:
    from .paths import default_checkpoint

    p = Path(path) if path else default_checkpoint()
    if not path and not p.exists():
        raise FileNotFoundError(f"the embedded default checkpoint {p} is missing; pass --ckpt PATH")
    return p


# ------------------------------------------------------------------------------------ generate

def add_generate(sub):
    p = sub.add_parser("generate", help="render portrait videos (mp4 or PNG frames)",
                       description="Render videos of generated identities: one clip per appearance seed.")
    p.add_argument("--ckpt", help="checkpoint (.safetensors of ours or an official .ckpt); default: the embedded model")
    p.add_argument("--seeds", type=_parse_seeds, default=[0], help="appearance seeds, e.g. 0,3,5-7 (default 0)")
    p.add_argument("--motion-seed", type=int, default=0, help="motion seed (default 0)")
    p.add_argument("--frames", type=int, default=64, help="frames per clip (default 64)")
    p.add_argument("--t0", type=float, default=0.0, help="first timestamp in [0, 1]")
    p.add_argument("--t1", type=float, default=1.0, help="last timestamp in [0, 1]")
    p.add_argument("--camera", choices=["fixed", "orbit", "yaw"], default="fixed", help="camera path")
    p.add_argument("--yaw", type=float, default=0.0, help="base yaw in degrees")
    p.add_argument("--pitch", type=float, default=0.0, help="base pitch in degrees")
    p.add_argument("--yaw-range", type=float, default=20.0, help="yaw amplitude of orbit/yaw paths, degrees")
    p.add_argument("--pitch-range", type=float, default=8.0, help="pitch amplitude of the orbit path, degrees")
    p.add_argument("--psi", type=float, default=0.7, help="truncation psi (default 0.7)")
    p.add_argument("--resolution", type=int, default=None, help="output size in pixels (default: the model's)")
    p.add_argument("--view", choices=["final", "raw", "depth", "normals"], default="final")
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--no-cache", action="store_true", help="recompute tri-planes for every frame")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("-o", "--output", required=True,
                   help="out.mp4, or a folder for PNG frames; with several seeds '{seed}' in the name is replaced")
    p.add_argument("--verbose", action="store_true", help="print per-stage timings and the render path")
    p.set_defaults(func=run_generate)


def run_generate(args) -> int:
    import math

    import numpy as np
    from tqdm import tqdm

    from .export import ClipSpec, clip_settings, write_mp4, write_png_folder
    from .io import load_generator
    from .pipeline import FrameRenderer, RenderSettings
    from .render import cuda_ops

    if args.frames < 1:
        return _fail("--frames must be at least 1")
    if args.resolution is not None and not 16 <= args.resolution <= 4096:
        return _fail("--resolution must be between 16 and 4096")
    if not (0 <= args.t0 <= 1 and 0 <= args.t1 <= 1):
        return _fail("--t0 and --t1 must lie in [0, 1]")
    outputs = []
    for seed in args.seeds:
        out = args.output.replace("{seed}", str(seed))
        if len(args.seeds) > 1 and "{seed}" not in args.output:
            stem, ext = os.path.splitext(args.output)
            out = f"{stem}_seed{seed}{ext}"
        outputs.append(Path(out))
    device = _device(args.device)
    G = load_generator(_resolve_ckpt(args.ckpt), device=device)
    renderer = FrameRenderer(G, device)
    if args.verbose:
        print(f"model: {getattr(G, 'checkpoint_path', '?')} ({G.img_resolution}² output, "
              f"{G.neural_rendering_resolution}² neural render); device {device}; "
              f"volume rendering: {cuda_ops.describe(device)}")
    spec = ClipSpec(frames=args.frames, t0=args.t0, t1=args.t1, camera=args.camera,
                    yaw_range=math.radians(args.yaw_range), pitch_range=math.radians(args.pitch_range))
    cancel = threading.Event()
    timings = []
    for seed, out in zip(args.seeds, outputs):
        base = RenderSettings(seed=seed, motion_seed=args.motion_seed, yaw=math.radians(args.yaw),
                              pitch=math.radians(args.pitch), psi=args.psi, resolution=args.resolution,
                              view=args.view, use_cache=not args.no_cache)
        settings = clip_settings(base, spec)
        bar = tqdm(total=len(settings), desc=f"seed {seed}", unit="frame", disable=None)

        def frames():
            for s in settings:
                f = renderer.render(s)
                timings.append(f.timings)
                bar.update(1)
                yield f.numpy()

        try:
            if out.suffix.lower() == ".mp4":
                write_mp4(out, frames(), fps=args.fps, cancel=cancel)
            elif out.suffix == "":
                write_png_folder(out, frames(), cancel=cancel)
            else:
                bar.close()
                return _fail(f"output {out} must end in .mp4 or be a folder for PNG frames")
        finally:
            bar.close()
        print(f"wrote {out}")
    if args.verbose and timings:
        for stage in ("mapping", "backbone", "render"):
            vals = [t[stage] for t in timings if stage in t]
            if vals:
                print(f"  {stage:9s} median {np.median(vals):8.1f} ms over {len(vals)} frames")
    return 0


# ------------------------------------------------------------------------------------ convert / info

def add_convert(sub):
    p = sub.add_parser("convert", help="convert an official PV3D .ckpt to our safetensors format")
    p.add_argument("input", help="official .ckpt (or one of ours)")
    p.add_argument("output", help="output .safetensors")
    p.add_argument("--generator-only", action="store_true", help="keep only G_ema (inference checkpoint)")
    p.set_defaults(func=run_convert)


def run_convert(args) -> int:
    from .io import convert

    if not args.output.endswith(".safetensors"):
        return _fail("output must end in .safetensors")
    out = convert(args.input, args.output, generator_only=args.generator_only)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def add_info(sub):
    p = sub.add_parser("info", help="describe a checkpoint")
    p.add_argument("ckpt", nargs="?", help="checkpoint (default: the embedded model)")
    p.set_defaults(func=run_info)


def run_info(args) -> int:
    import json

    from .io import read_checkpoint

    path = _resolve_ckpt(args.ckpt)
    ck = read_checkpoint(path)
    parts = sorted({k.split(".", 1)[0] for k in ck.tensors})
    g = ck.config.generator
    print(f"{path}: {ck.source} checkpoint, config {ck.config.name}")
    print(f"  parts: {', '.join(parts)}")
    print(f"  output {g.img_resolution}², neural render {g.neural_rendering_resolution}², tri-planes "
          f"{g.plane_resolution}² x 3 x {g.plane_channels}, z {g.z_dim}, motion {g.motion_dim}, "
          f"SR {g.sr_module}")
    if ck.meta:
        print(f"  meta: {json.dumps(ck.meta)[:300]}")
    return 0


# ------------------------------------------------------------------------------------ plug-ins

#: subcommands owned by other modules: (module, adder function name)
PLUGINS = [
    ("pv3d_core.data.cli", "add_data_parser"),
    ("pv3d_core.train.cli", "add_train_parser"),
    ("pv3d_core.train.recon", "add_recon_parser"),
    ("pv3d_core.mesh", "add_mesh_parser"),
    ("pv3d_core.metrics.evaluate", "add_eval_parser"),
    ("pv3d_core.portrait_cli", "add_portrait_parsers"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pv3d", description="PV3D Studio command line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_generate(sub)
    add_convert(sub)
    add_info(sub)
    for mod, fn in PLUGINS:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and mod.startswith(e.name):
                continue
            raise
        getattr(m, fn)(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    from .export import Cancelled, ExportError
    from .io import CheckpointError

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("pv3d: interrupted; nothing partial was written", file=sys.stderr)
        return 130
    except Cancelled as e:
        print(f"pv3d: {e}", file=sys.stderr)
        return 130
    except (CheckpointError, ExportError, FileNotFoundError, ValueError) as e:
        return _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)


if __name__ == "__main__":
    sys.exit(main())
