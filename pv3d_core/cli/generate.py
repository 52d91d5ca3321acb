"""`pv3d generate`, `pv3d convert`, `pv3d info`: videos of generated identities, and checkpoints."""
from __future__ import annotations

import os
import threading
from pathlib import Path

from ..device import pick_device
from ..errors import UsageError
from ..rules import SEED, Float
from .common import FPS, FRAMES, PITCH, PITCH_RANGE, PSI, RESOLUTION, TIME, YAW, YAW_RANGE, add_device, parse_seeds, \
    resolve_checkpoint


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="render portrait videos (mp4 or PNG frames)",
                       description="Render videos of generated identities: one clip per appearance seed.")
    p.add_argument("--ckpt", help="checkpoint (.safetensors of ours or an official .ckpt); default: the embedded model")
    p.add_argument("--seeds", type=parse_seeds, default=[0], help="appearance seeds, e.g. 0,3,5-7 (default 0)")
    p.add_argument("--motion-seed", type=SEED.flag, default=0, help="motion seed (default 0)")
    p.add_argument("--frames", type=FRAMES.flag, default=None,
                   help="frames per clip (default 64, or the camera path's frame count)")
    p.add_argument("--t0", type=TIME.flag, default=0.0, help="first timestamp in [0, 1]")
    p.add_argument("--t1", type=TIME.flag, default=1.0, help="last timestamp in [0, 1]")
    p.add_argument("--camera", choices=["fixed", "orbit", "yaw"], default="fixed", help="camera path")
    p.add_argument("--camera-path", metavar="PATH.json",
                   help="a keyframed camera path saved by the viewer: its cameras (yaw, pitch, field of view), "
                        "frame count and fps (--frames and --fps still override); replaces --camera")
    p.add_argument("--fov", type=Float(1, 120).flag, default=None, help="field of view in degrees (default: the model's)")
    p.add_argument("--blend-seed", type=SEED.flag, default=None, help="a second appearance seed to blend towards")
    p.add_argument("--blend", type=Float(0, 1).flag, default=0.0, help="how far towards --blend-seed, 0..1 (default 0)")
    p.add_argument("--motion-blend-seed", type=SEED.flag, default=None, help="a second motion seed to blend towards")
    p.add_argument("--motion-blend", type=Float(0, 1).flag, default=0.0, help="how far towards --motion-blend-seed, 0..1")
    p.add_argument("--walk", action="store_true",
                   help="a latent walk: blend from 0 to 1 over the frames (towards --blend-seed and/or "
                        "--motion-blend-seed) at the moment --t0, instead of playing the timeline")
    p.add_argument("--yaw", type=YAW.flag, default=0.0, help="base yaw in degrees")
    p.add_argument("--pitch", type=PITCH.flag, default=0.0, help="base pitch in degrees")
    p.add_argument("--yaw-range", type=YAW_RANGE.flag, default=20.0, help="yaw amplitude of orbit/yaw paths, degrees")
    p.add_argument("--pitch-range", type=PITCH_RANGE.flag, default=8.0, help="pitch amplitude of the orbit path, degrees")
    p.add_argument("--psi", type=PSI.flag, default=0.7, help="truncation psi (default 0.7)")
    p.add_argument("--resolution", type=RESOLUTION.flag, default=None, help="output size in pixels (default: the model's)")
    p.add_argument("--view", choices=["final", "raw", "depth", "normals"], default="final")
    p.add_argument("--fps", type=FPS.flag, default=None, help="frames per second (default 25, or the camera path's)")
    p.add_argument("--no-cache", action="store_true", help="recompute tri-planes for every frame")
    add_device(p)
    p.add_argument("-o", "--output", required=True,
                   help="out.mp4, or a folder for PNG frames; with several seeds '{seed}' in the name is replaced")
    p.add_argument("--verbose", action="store_true", help="print per-stage timings and the render path")
    p.set_defaults(func=run_generate)

    c = sub.add_parser("convert", help="convert an official PV3D .ckpt to our safetensors format")
    c.add_argument("input", help="official .ckpt (or one of ours)")
    c.add_argument("output", help="output .safetensors")
    c.add_argument("--generator-only", action="store_true", help="keep only G_ema (inference checkpoint)")
    c.set_defaults(func=run_convert)

    i = sub.add_parser("info", help="describe a checkpoint")
    i.add_argument("ckpt", nargs="?", help="checkpoint (default: the embedded model)")
    i.set_defaults(func=run_info)


def run_generate(args) -> int:
    import math

    import numpy as np
    from tqdm import tqdm

    from ..errors import ExportError
    from ..export import ClipSpec, check_output, clip_settings, path_settings, walk_settings, write_mp4, write_png_folder
    from ..files import check_empty_folder
    from ..io import load_generator
    from ..pipeline import FrameRenderer, RenderSettings
    from ..render import cuda_ops
    from ..render.camera_path import CameraPath

    path = CameraPath.load(args.camera_path) if args.camera_path else None
    if args.frames is None:
        args.frames = path.frame_count() if path is not None else 64
    if args.fps is None:
        args.fps = path.fps if path is not None else 25.0
    if args.walk and args.blend_seed is None and args.motion_blend_seed is None:
        raise UsageError("--walk needs --blend-seed and/or --motion-blend-seed")
    outputs = []
    for seed in args.seeds:
        out = args.output.replace("{seed}", str(seed))
        if len(args.seeds) > 1 and "{seed}" not in args.output:
            stem, ext = os.path.splitext(args.output)
            out = f"{stem}_seed{seed}{ext}"
        outputs.append(Path(out))
    for out in outputs:
        if out.suffix.lower() != ".mp4" and out.suffix != "":
            raise UsageError(f"output {out} must end in .mp4 or be a folder for PNG frames")
        if out.suffix:                                   # before loading the model and rendering
            check_output(out)
        else:
            check_empty_folder(out, ExportError)
    device = pick_device(args.device)
    G = load_generator(resolve_checkpoint(args.ckpt), device=device)
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
                              view=args.view, use_cache=not args.no_cache, seed_b=args.blend_seed,
                              blend=args.blend if args.blend_seed is not None else 0.0,
                              motion_seed_b=args.motion_blend_seed,
                              motion_blend=args.motion_blend if args.motion_blend_seed is not None else 0.0)
        if args.fov is not None:
            base = base.with_(fov=args.fov)
        if args.walk:
            settings = walk_settings(base.with_(t=args.t0), args.frames)
            if path is not None:
                settings = [w.with_(yaw=c.yaw, pitch=c.pitch, fov=c.fov)
                            for w, c in zip(settings, path_settings(base, path, args.t0, args.t0, args.frames))]
        elif path is not None:
            settings = path_settings(base, path, args.t0, args.t1, args.frames)
        else:
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
            else:
                write_png_folder(out, frames(), cancel=cancel)
        finally:
            bar.close()
        print(f"wrote {out}")
    if args.verbose and timings:
        for stage in ("mapping", "backbone", "render"):
            vals = [t[stage] for t in timings if stage in t]
            if vals:
                print(f"  {stage:9s} median {np.median(vals):8.1f} ms over {len(vals)} frames")
    return 0


def run_convert(args) -> int:
    from ..io import convert

    if not args.output.endswith(".safetensors"):
        raise UsageError("output must end in .safetensors")
    out = convert(args.input, args.output, generator_only=args.generator_only)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def run_info(args) -> int:
    import json

    from ..io import read_checkpoint

    path = resolve_checkpoint(args.ckpt)
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

