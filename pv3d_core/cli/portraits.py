"""`pv3d align`, `pv3d animate`, `pv3d reconstruct`, `pv3d edit`: portraits from photos and videos."""
from __future__ import annotations

import json
import math
import threading
from pathlib import Path

from ..device import pick_device
from ..errors import CheckpointError, UsageError
from ..rules import MAX_FRAMES, SEED, Float, Int
from .common import FPS, FRAMES, PITCH_RANGE, STEPS, YAW_RANGE, add_device, resolve_checkpoint, stage_bars


def _inversion_args(p, video: bool = False) -> None:
    from ..invert import INVERSION_RULES as R, InversionConfig

    d, e = InversionConfig(), InversionConfig.after_encoder(video=video)
    p.add_argument("--ckpt", help="model checkpoint (default: the embedded model)")
    p.add_argument("--encoder",
                   help="portrait encoder file (default: the one beside the model, "
                        "<model>-encoder.safetensors, when it was trained for it)")
    p.add_argument("--no-encoder", action="store_true",
                   help="do not use an encoder: optimise the latent from the mean face (slower)")
    # None: the default of the start the model allows (with or without an encoder); a value given overrides it
    p.add_argument("--w-steps", type=R["w_steps"].flag, default=None,
                   help=f"latent optimisation steps without an encoder (default {d.w_steps})")
    p.add_argument("--wplus-steps", type=R["wplus_steps"].flag, default=None,
                   help=f"per-layer (w+) steps (default {e.wplus_steps} after an encoder, {d.wplus_steps} without)")
    p.add_argument("--pti-steps", type=R["pti_steps"].flag, default=None,
                   help=f"pivotal tuning steps (default {e.pti_steps} after an encoder, {d.pti_steps} without; 0 = none)")
    p.add_argument("--pti-lr", type=R["pti_lr"].flag, default=None,
                   help=f"pivotal tuning learning rate (default {e.pti_lr:g} after an encoder, {d.pti_lr:g} without, "
                        "tuned on the embedded model; 3e-4 is the usual choice for full-size models)")
    p.add_argument("--seed", type=R["seed"].flag, default=0, help="inversion seed (results are deterministic under it)")
    add_device(p)


def add_parser(sub) -> None:
    a = sub.add_parser("align", help="find the face of a photo, crop it in the training framing, estimate its camera")
    a.add_argument("image")
    a.add_argument("-o", "--output", help="crop PNG to write")
    a.add_argument("--size", type=Int(16, 4096).flag, default=512, help="crop size in pixels (default 512)")
    a.add_argument("--json", help="write the camera (25 floats), pose and crop transform here")
    a.set_defaults(func=run_align)

    p = sub.add_parser("animate", help="animate a photo (or a saved portrait) with a motion seed",
                       description="Invert the photo into the model (or load a saved portrait), then render "
                                   "its timeline with a motion seed, at the photo's camera or orbiting.")
    p.add_argument("input", help="photo (jpg/png/...) or a saved portrait .safetensors")
    p.add_argument("-o", "--output", required=True, help="output .mp4")
    p.add_argument("--motion-seed", type=SEED.flag, default=0)
    p.add_argument("--frames", type=FRAMES.flag, default=64)
    p.add_argument("--fps", type=FPS.flag, default=25.0)
    p.add_argument("--orbit", action="store_true", help="orbit the camera around the photo's view")
    p.add_argument("--yaw-range", type=YAW_RANGE.flag, default=20.0, help="orbit yaw amplitude, degrees")
    p.add_argument("--pitch-range", type=PITCH_RANGE.flag, default=8.0, help="orbit pitch amplitude, degrees")
    p.add_argument("--save-portrait", help="also save the inverted portrait here (.safetensors)")
    _inversion_args(p)
    p.set_defaults(func=run_animate)

    r = sub.add_parser("reconstruct", help="reconstruct a talking-head video as a 3D portrait video")
    r.add_argument("video")
    r.add_argument("-o", "--output", required=True, help="output folder")
    r.add_argument("--max-frames", type=FRAMES.flag, default=None, help="use only the first N frames")
    r.add_argument("--motion-steps", type=STEPS.flag, default=200, help="motion/timestamp fitting steps (default 200)")
    _inversion_args(r, video=True)
    r.set_defaults(func=run_reconstruct)

    e = sub.add_parser("edit", help="edit the motion of a reconstructed video",
                       description="Re-render a reconstruction (from `pv3d reconstruct`) with another motion "
                                   "seed, with the motion of another reconstruction, or at another speed.")
    e.add_argument("reconstruction", help="DIR/reconstruction.safetensors (or the folder)")
    g = e.add_mutually_exclusive_group(required=True)
    g.add_argument("--motion-seed", type=SEED.flag, help="(a) drive it with this motion seed")
    g.add_argument("--transfer", help="(b) take the motion of this other reconstruction")
    g.add_argument("--speed", type=Float(0.01, 100).flag,
                   help="(c) retime: 0.5 = half speed, 2 = double speed (0.01-100)")
    e.add_argument("-o", "--output", required=True, help="output .mp4")
    e.add_argument("--fps", type=FPS.flag, default=None, help="default: the source video's")
    e.set_defaults(func=run_edit)


def _load_model(args):
    from ..io import load_discriminators, load_generator

    dev = pick_device(args.device)
    path = resolve_checkpoint(args.ckpt)
    G = load_generator(path, device=dev)
    try:
        d_img, _ = load_discriminators(path, device=dev)
    except CheckpointError:
        d_img = None
    return G, d_img


def _portrait_config(args):
    """The portrait settings of the command line: the encoder choice, and the inversion options given
    (the others come from the defaults for the start the model allows, with or without an encoder)."""
    from ..portrait import PortraitConfig

    # the flags' types hold them to INVERSION_RULES; the whole configuration is validated again when used
    over = {name: getattr(args, name) for name in ("w_steps", "wplus_steps", "pti_steps", "pti_lr")
            if getattr(args, name) is not None}
    over["seed"] = args.seed
    if args.no_encoder and args.encoder:
        raise UsageError("--encoder and --no-encoder contradict each other")
    if args.encoder and not Path(args.encoder).is_file():
        raise UsageError(f"encoder not found: {args.encoder}")
    pcfg = PortraitConfig(encoder=None if args.no_encoder else (args.encoder or "auto"), overrides=over)
    pcfg.inversion_for(True).validate()         # bad values fail here, before minutes of work
    pcfg.inversion_for(False).validate()
    return pcfg


def run_align(args) -> int:
    from ..export import write_png
    from ..faces import align_face
    from ..files import atomic_write_bytes

    a = align_face(args.image, size=args.size)
    yaw, pitch = math.degrees(a.pose["yaw"]), math.degrees(a.pose["pitch"])
    for n in a.notes:
        print(f"note: {n}")
    print(f"face {a.face.size:.0f}px, yaw {yaw:+.1f}°, pitch {pitch:+.1f}°, roll {math.degrees(a.pose['roll']):+.1f}°, "
          f"landmark fit rms {a.pose['rms'] * 100:.2f}% of the crop")
    if args.output:
        write_png(args.output, a.crop)
        print(f"wrote {args.output}")
    if args.json:
        atomic_write_bytes(args.json, json.dumps({"camera": [float(v) for v in a.camera],
                                                   "transform": a.transform(), "notes": a.notes}, indent=1).encode())
        print(f"wrote {args.json}")
    return 0


def run_animate(args) -> int:
    from .. import portrait as P
    from ..export import check_output
    from ..io import check_writable

    if not args.output.lower().endswith(".mp4"):
        raise UsageError("output must end in .mp4")
    pcfg = _portrait_config(args)
    check_output(args.output)                # before minutes of inversion, not after
    if args.save_portrait:
        check_writable(args.save_portrait)
    cancel = threading.Event()
    cb, close = stage_bars("animate")
    try:
        if str(args.input).lower().endswith(".safetensors"):   # a portrait, or say why it is not one
            por = P.load(args.input, device=pick_device(args.device))
        else:
            G, d_img = _load_model(args)
            por = P.prepare_and_invert(args.input, G, progress=cb, cancel=cancel, config=pcfg, d_img=d_img)
            for n in por.notes:
                print(f"note: {n}")
            tm = por.timings
            start = "encoder" if "encode_s" in tm else "mean face"
            print(f"fitted in {tm['total_s']:.1f} s (start: {start}, first result after {tm.get('first_result_s', 0):.1f} s): "
                  f"PSNR {por.metrics['psnr']:.2f} dB, SSIM {por.metrics['ssim']:.3f} at the photo's view")
            if args.save_portrait:
                print(f"wrote {por.save(args.save_portrait)}")
        out = P.animate(por, args.output, motion_seed=args.motion_seed, frames=args.frames, orbit=args.orbit,
                        fps=args.fps, progress=cb, cancel=cancel, yaw_range=math.radians(args.yaw_range),
                        pitch_range=math.radians(args.pitch_range))
    finally:
        close()
    print(f"wrote {out}")
    return 0


def run_reconstruct(args) -> int:
    from .. import portrait as P

    from ..errors import ExportError
    from ..files import check_empty_folder

    pcfg = _portrait_config(args)
    check_empty_folder(args.output, ExportError)          # before loading anything
    G, d_img = _load_model(args)
    cb, close = stage_bars("reconstruct")
    try:
        s = P.reconstruct_video(args.video, G, args.output, pcfg, motion_steps=args.motion_steps,
                                max_frames=args.max_frames, d_img=d_img, progress=cb, cancel=threading.Event())
    finally:
        close()
    print(f"{s['frames_used']} of {s['frames']} frames used ({s['frames_without_face']} without a face); "
          f"PSNR mean {s['metrics']['psnr_mean']:.2f} dB; wrote {args.output}/")
    return 0


def run_edit(args) -> int:
    from .. import portrait as P
    from ..export import write_mp4


    def load(p):
        p = Path(p)
        return P.VideoReconstruction.load(p / "reconstruction.safetensors" if p.is_dir() else p)

    rec = load(args.reconstruction)
    if args.speed is not None and len(rec.ts) / args.speed > MAX_FRAMES:
        raise UsageError(f"--speed {args.speed:g} would make {len(rec.ts) / args.speed:,.0f} frames of this "
                         f"{len(rec.ts)}-frame reconstruction; at most {MAX_FRAMES:,} are allowed")
    fps = args.fps or float(rec.meta.get("fps", 25.0))
    if not 0 < fps <= FPS.hi:
        raise UsageError(f"the reconstruction's fps ({fps}) is out of range; pass --fps")
    cb, close = stage_bars("edit")
    try:
        if args.motion_seed is not None:
            frames = P.remotion(rec, args.motion_seed, progress=cb)
        elif args.transfer:
            frames = P.transfer_motion(rec, load(args.transfer), progress=cb)
        else:
            frames = P.render_retimed(rec, speed=args.speed, progress=cb)
        out = write_mp4(args.output, frames, fps=fps)
    finally:
        close()
    print(f"wrote {out}")
    return 0
