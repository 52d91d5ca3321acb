"""`pv3d eval`: the paper's metrics for one model, as a JSON report and a small plot."""
from __future__ import annotations

import json
from pathlib import Path

from ..device import pick_device
from ..errors import UsageError
from ..rules import SEED, Int
from .common import PITCH, PSI, YAW, add_device, resolve_checkpoint


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="the paper's metrics (FVD, identity, Chamfer, warping, geometry) as JSON",
                       description="Evaluate a model with the official protocol's renders and settings; writes "
                                   "every metric with its settings and counts, and a small PNG plot.")
    p.add_argument("--ckpt", help="checkpoint (default: the embedded model)")
    p.add_argument("--data", help="dataset folder: real clips for FVD; synthetic ground truth for geometry")
    p.add_argument("--i3d", help="standard Kinetics-400 I3D weights (i3d_pretrained_400.pt) for FVD")
    p.add_argument("--arcface", help="ArcFace IR-SE50 weights (model_ir_se50.pth); default: dlib's embedding")
    p.add_argument("--videos", type=Int(1, 100_000).flag, default=1000, help="multi-view videos (official 1000)")
    p.add_argument("--fvd-videos", type=Int(1, 100_000).flag, default=5000, help="generated and real clips for FVD (official 5000)")
    p.add_argument("--geo-clips", type=Int(0, 10_000).flag, default=4, help="ground-truth clips reconstructed for geometry error")
    p.add_argument("--geo-steps", type=Int(0, 100_000).flag, default=150, help="latent optimisation steps per reconstruction")
    p.add_argument("--seed", type=SEED.flag, default=0)
    p.add_argument("--psi", type=PSI.flag, default=1.0, help="truncation (official: 1, none)")
    p.add_argument("--yaw", type=YAW.flag, default=30.0, help="side camera yaw in degrees (official 30)")
    p.add_argument("--pitch", type=PITCH.flag, default=0.0, help="side camera pitch in degrees (official 0)")
    p.add_argument("--size", type=Int(16, 2048).flag, default=256, help="warping error image size (official 256)")
    add_device(p)
    p.add_argument("--plot", help="PNG summary (default: next to the report, .png)")
    p.add_argument("-o", "--output", required=True, help="report .json")
    p.set_defaults(func=run_eval)


def run_eval(args) -> int:
    import platform

    import torch
    from tqdm import tqdm

    from .. import files
    from ..export import check_output, write_png
    from ..io import load_generator
    from ..metrics.evaluate import evaluate, plot_report
    from ..metrics.fvd import file_digest

    out = Path(args.output)
    if out.suffix.lower() != ".json":
        raise UsageError(f"report {out} must end in .json")
    check_output(out)
    plot = Path(args.plot) if args.plot else out.with_suffix(".png")
    dev = pick_device(args.device)
    ckpt = resolve_checkpoint(args.ckpt)
    G = load_generator(ckpt, device=dev)
    bar = tqdm(total=args.videos, desc="multi-view renders", unit="video")
    try:
        report = evaluate(G, videos=args.videos, seed=args.seed, psi=args.psi, yaw=args.yaw, pitch=args.pitch,
                          size=args.size, data=args.data, i3d=args.i3d, arcface=args.arcface,
                          fvd_videos=args.fvd_videos, geo_clips=args.geo_clips, geo_steps=args.geo_steps,
                          bar=bar, device=dev)
    finally:
        bar.close()
    report["model"] = {"path": str(ckpt), "sha256": file_digest(ckpt),
                       "image_resolution": G.img_resolution, "neural_resolution": G.neural_rendering_resolution}
    report["software"] = {"torch": torch.__version__, "python": platform.python_version(), "device": str(dev)}
    report["plot"] = str(plot)
    files.atomic_write_text(out, json.dumps(report, indent=1))
    write_png(plot, plot_report(report))
    brief = {"identity": report["identity"]["mean_cosine"], "identity_backbone": report["identity"]["backbone"],
             "chamfer_sum": report["chamfer"]["sum"], "chamfer_mean": report["chamfer"]["mean_per_pair"],
             "warping_mean": report["warping"]["mean_abs_error"],
             "fvd": report["fvd"].get("fvd"), "geometry_mean_abs": report["geometry"].get("input_view", {}).get("mean_abs")}
    print(json.dumps(brief))
    print(f"wrote {out} and {plot}")
    return 0
