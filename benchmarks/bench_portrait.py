"""Portrait figures: inversion quality and identity at novel views, time per inversion, and the
PnP camera error on synthetic heads with known cameras.

    python benchmarks/bench_portrait.py invert [--ckpt CKPT | --random] [--photos astronaut,tennis] [-o out.json]
    python benchmarks/bench_portrait.py pnp [--heads 8] [--yaw-deg 25] [--pitch-deg 10]

`invert` runs on real photographs that ship inside installed packages: scikit-image's astronaut
(frontal, 88 px face), its mirror, and imgui-bundle's tennis demo photo (a 44 px face turned about
30°, when imgui-bundle is installed). Per photo: PSNR/SSIM at the input view, dlib face distance
between the aligned input and renders at yaw ±20° from the photo's camera (dlib's same-person
threshold is 0.6; "no face" when dlib finds none in the render; which detector found it), seconds
per inversion. The default model is the embedded checkpoint; --random uses an untrained tiny model
(the figures then only show the plumbing). Inversion settings are InversionConfig's defaults unless
given.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _model(ckpt, random=False):
    if not random:
        from pv3d_core.paths import default_checkpoint

        ckpt = ckpt or default_checkpoint()
    if ckpt:
        from pv3d_core.io import CheckpointError, load_discriminators, load_generator

        G = load_generator(ckpt)
        try:
            d_img = load_discriminators(ckpt)[0]
        except CheckpointError:
            d_img = None
        return G, d_img, str(ckpt)
    from pv3d_core.config import preset
    from pv3d_core.io import build_generator

    torch.manual_seed(1234)
    G = build_generator(preset("tiny")).eval().requires_grad_(False)
    return G, None, "random tiny"


def run_invert(args):
    import skimage.data

    from pv3d_core import portrait as P
    from pv3d_core.faces import FaceError, descriptor, find_face
    from pv3d_core.invert import InversionConfig

    G, d_img, name = _model(args.ckpt, args.random)
    over = {k: getattr(args, k) for k in ("w_steps", "pti_steps", "pti_lr", "geometry_weight")
            if getattr(args, k) is not None}
    cfg = InversionConfig(**over)
    photos = {}
    for key in args.photos.split(","):
        if key == "astronaut":
            photos[key] = skimage.data.astronaut()
        elif key == "astronaut_mirror":
            photos[key] = np.ascontiguousarray(skimage.data.astronaut()[:, ::-1])
        elif key == "tennis":
            tennis = _tennis()
            if tennis is None:
                print("tennis: imgui-bundle is not installed, skipped", flush=True)
                continue
            photos[key] = tennis
        else:
            raise SystemExit(f"unknown photo {key!r}")
    rows = {}
    for key, img in photos.items():
        t0 = time.perf_counter()
        por = P.prepare_and_invert(img, G, config=cfg, d_img=d_img)
        dt = time.perf_counter() - t0
        yaw, pitch = por.yaw_pitch
        d_in = descriptor(por.crop)
        dists = {}
        r = por.renderer()
        for dy in (-20, 0, 20):
            img_r = r.render(por.settings(yaw=yaw + math.radians(dy), pitch=pitch, resolution=256)).numpy()
            try:
                face = find_face(img_r, min_face=20)
                dists[f"{dy:+d}"] = round(float(np.linalg.norm(descriptor(img_r, face.landmarks) - d_in)), 4)
                dists[f"{dy:+d}_detector"] = face.extra.get("detector")
            except FaceError:
                dists[f"{dy:+d}"] = "no face found in the render"
            if args.save_dir:
                from PIL import Image

                Path(args.save_dir).mkdir(parents=True, exist_ok=True)
                Image.fromarray(img_r).save(Path(args.save_dir) / f"{key}_yaw{dy:+d}.png")
        rows[key] = {"psnr": round(por.metrics["psnr"], 3), "ssim": round(por.metrics["ssim"], 4),
                     "face_distance_vs_input": dists, "seconds": round(dt, 1),
                     "align_s": round(por.timings["align_s"], 2), "invert_s": round(por.timings["invert_s"], 1),
                     "camera_yaw_deg": round(math.degrees(yaw), 2), "camera_pitch_deg": round(math.degrees(pitch), 2)}
        print(key, rows[key], flush=True)
    out = {"model": name, "config": cfg.to_dict(), "threads": torch.get_num_threads(), "photos": rows}
    return out


def _tennis():
    """imgui-bundle's demo photo of two tennis players (the larger face is used), or None."""
    import importlib.util

    from PIL import Image

    spec = importlib.util.find_spec("imgui_bundle")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "demos_assets" / "images" / "tennis.jpg"
        if p.is_file():
            return np.asarray(Image.open(p).convert("RGB"))
    return None


def run_pnp(args):
    """Procedural heads (pv3d data synth's renderer) seen by known cameras, yaw uniform in
    ±--yaw-deg and pitch in ±--pitch-deg; each render goes through align_face (what `pv3d align`
    runs) and the estimated camera's viewing direction is compared with the true one."""
    from pv3d_core.data import synth
    from pv3d_core.faces import FaceError, align_face, angle_between
    from pv3d_core.render import cameras

    rng = np.random.default_rng(args.seed)
    errs, misses, rows = [], 0, []
    for i in range(args.heads):
        ident = synth.Identity.sample(synth.clip_rng(args.seed, i))
        yaw = math.radians(rng.uniform(-args.yaw_deg, args.yaw_deg))
        pitch = math.radians(rng.uniform(-args.pitch_deg, args.pitch_deg))
        c = cameras.pack(cameras.orbit_cam2world(yaw, pitch))
        img = synth.render_head(ident, synth.Expression(), c, args.res)["image"]
        try:
            a = align_face(img, 64, min_face=20)
        except FaceError:
            misses += 1
            rows.append({"yaw": math.degrees(yaw), "pitch": math.degrees(pitch), "found": False})
            continue
        e = angle_between(a.camera, c)
        errs.append(e)
        rows.append({"yaw": round(math.degrees(yaw), 1), "pitch": round(math.degrees(pitch), 1),
                     "est_yaw": round(math.degrees(a.pose["yaw"]), 1), "est_pitch": round(math.degrees(a.pose["pitch"]), 1),
                     "error_deg": round(e, 2)})
        print(rows[-1], flush=True)
    found = [r for r in rows if "error_deg" in r]
    dyaw = [r["est_yaw"] - r["yaw"] for r in found]
    dpitch = [r["est_pitch"] - r["pitch"] for r in found]

    def stats(v):
        return {"mean": float(np.mean(v)), "median": float(np.median(v)), "max": float(np.max(np.abs(v)))} if v else None
    return {"heads": args.heads, "yaw_deg": args.yaw_deg, "pitch_deg": args.pitch_deg, "seed": args.seed,
            "detected": len(errs), "missed": misses,
            "angular_error_deg": {"mean": float(np.mean(errs)) if errs else None,
                                  "median": float(np.median(errs)) if errs else None,
                                  "max": float(np.max(errs)) if errs else None},
            "yaw_error_deg": stats(dyaw), "pitch_error_deg": stats(dpitch), "rows": rows}


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("invert")
    a.add_argument("--ckpt", default=os.environ.get("PV3D_DEFAULT_CKPT"))
    a.add_argument("--random", action="store_true", help="an untrained tiny model instead of the default one")
    a.add_argument("--photos", default="astronaut,astronaut_mirror,tennis")
    a.add_argument("--w-steps", type=int)
    a.add_argument("--pti-steps", type=int)
    a.add_argument("--pti-lr", type=float)
    a.add_argument("--geometry-weight", type=float)
    a.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    a.add_argument("--save-dir")
    a.add_argument("-o", "--output")
    b = sub.add_parser("pnp")
    b.add_argument("--heads", type=int, default=8)
    b.add_argument("--yaw-deg", type=float, default=25.0, help="true yaw uniform in ±this (default 25)")
    b.add_argument("--pitch-deg", type=float, default=10.0, help="true pitch uniform in ±this (default 10)")
    b.add_argument("--res", type=int, default=256)
    b.add_argument("--seed", type=int, default=7)
    b.add_argument("-o", "--output")
    args = ap.parse_args()
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    res = run_invert(args) if args.mode == "invert" else run_pnp(args)
    text = json.dumps(res, indent=1)
    print(text)
    if args.output:
        Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
