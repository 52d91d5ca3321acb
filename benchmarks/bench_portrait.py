"""Portrait figures: inversion quality, identity at novel views and over the animation, time per stage,
the encoder against today's optimisation side by side, video reconstruction, and the PnP camera error
on synthetic heads with known cameras.

    python benchmarks/bench_portrait.py invert [--ckpt CKPT | --random] [--photos astronaut,tennis]
        [--methods legacy,encoder] [--repeats 1] [--anim-frames 64] [--set FIELD=VALUE ...] [-o out.json]
    python benchmarks/bench_portrait.py video [--ckpt CKPT] [--frames 16] [--methods legacy,encoder]
    python benchmarks/bench_portrait.py pnp [--heads 8] [--yaw-deg 25] [--pitch-deg 10] [--oracle-views 0]
    python benchmarks/bench_portrait.py pnp-clips [--clips 12] [--frames 25] [--seed 5000]

`invert` runs on real photographs that ship inside installed packages: scikit-image's astronaut
(frontal, 88 px face), its mirror, imgui-bundle's tennis demo photo (a 44 px face turned about
30°, when imgui-bundle is installed) and matplotlib's sample photo of Grace Hopper (``hopper``: a
frontal 160 px face in uniform, when matplotlib is installed; not in the default set). Methods, run alternately per photo in one process:

- ``legacy``: today's optimisation before issue 15 (200 w + 300 PTI steps from the mean latent, no
  motion term: ``InversionConfig.legacy()``);
- ``optimise``: the same start with the motion fix (what a model without an encoder gets now);
- ``encoder``: the model's portrait encoder (``--encoder`` or the file beside the model), then
  ``InversionConfig.after_encoder()`` (a short w+ refinement and fewer PTI steps).

Per photo and method: PSNR/SSIM at the input view; dlib face distance between the aligned input and
renders at yaw ±20° from the photo's camera (t = 0); over the animation `pv3d animate` makes (default
motion seed 0, t from 0 to 1, ``--anim-frames`` frames at the photo's camera) the largest distance
and the frames where dlib finds no face; at t = 0.5 the distance at yaw ±20°. dlib's same-person
threshold is 0.6. Seconds per stage (align, encoder, w, w+, PTI), to the first result, in all; with
``--repeats`` > 1 the times are medians (the fits are deterministic, so the figures are not).
``--set FIELD=VALUE`` overrides an ``InversionConfig`` field of every method (e.g. preserve_motion=false).

`video` makes a talking-head clip from the model itself (a random identity and motion, a gentle yaw
track, ``--frames`` frames), runs ``pv3d reconstruct`` (:func:`pv3d_core.portrait.reconstruct_video`) with
each method and reports PSNR and seconds per stage.

`pnp` with ``--oracle-views N`` (N >= 2) also measures the floor of a one-view landmark fit: each head's
own 68-point face is fitted to N other views of it (true cameras, yaw ±30°, pitch ±15°, the fit
``fit_pnp_template.py`` makes of its training heads) and the benchmark view is solved with that face
held rigid. What is left is the landmarks' own error (dlib's reading of the render, the lighting);
the gap to the shipped model is what a better shape prior could still win from one view.

`pnp-clips` measures the same error on talking-head frames: `pv3d data synth`'s clips (a head's
expression track, mouth, smile, blinks and brows moving, and its camera track, yaw within ±35° and pitch
within ±20°), each frame aligned on its own by ``align_face`` as a photo is.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
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


def _overrides(items):
    from dataclasses import fields

    from pv3d_core.invert import InversionConfig

    types = {f.name: f.type for f in fields(InversionConfig)}
    out = {}
    for item in items or []:
        k, _, v = item.partition("=")
        if k not in types:
            raise SystemExit(f"--set: unknown InversionConfig field {k!r}")
        t = types[k]
        out[k] = (v.lower() in ("1", "true", "yes")) if "bool" in str(t) else (int(v) if "int" in str(t) else float(v))
    return out


def _config(method, over):
    from pv3d_core.invert import InversionConfig
    from pv3d_core.portrait import PortraitConfig

    if method == "legacy":
        return PortraitConfig(inversion=InversionConfig.legacy(**over), encoder=None)
    if method == "optimise":
        return PortraitConfig(inversion=InversionConfig(**over), encoder=None)
    if method == "encoder":
        return PortraitConfig(overrides=over)
    raise SystemExit(f"unknown method {method!r} (legacy, optimise, encoder)")


def _distance(img, d_in):
    """dlib distance of the largest face in a uint8 render to descriptor ``d_in`` (None: no face found)."""
    from PIL import Image

    from pv3d_core.faces import FaceError, descriptor, find_face

    if img.shape[0] < 256:
        img = np.asarray(Image.fromarray(img).resize((256, 256), Image.BICUBIC))
    try:
        face = find_face(img, min_face=20)
    except FaceError:
        return None, None
    return round(float(np.linalg.norm(descriptor(img, face.landmarks) - d_in)), 4), face.extra.get("detector")


def identity_figures(por, anim_frames: int = 64, save_dir=None, key="") -> dict:
    """dlib distances of a portrait's renders to its aligned input (see the module doc)."""
    from PIL import Image

    from pv3d_core import portrait as P
    from pv3d_core.faces import descriptor

    d_in = descriptor(por.crop)
    yaw, pitch = por.yaw_pitch
    r = por.renderer()
    out = {}
    for dy in (-20, 0, 20):
        img = r.render(por.settings(yaw=yaw + math.radians(dy), resolution=256)).numpy()
        out[f"yaw{dy:+d}"], out[f"yaw{dy:+d}_detector"] = _distance(img, d_in)
        if save_dir:
            Image.fromarray(img).save(Path(save_dir) / f"{key}_yaw{dy:+d}.png")
    for dy in (-20, 20):
        img = r.render(por.settings(t=0.5, yaw=yaw + math.radians(dy), resolution=256)).numpy()
        out[f"t0.5_yaw{dy:+d}"], _ = _distance(img, d_in)
        if save_dir:
            Image.fromarray(img).save(Path(save_dir) / f"{key}_t0.5_yaw{dy:+d}.png")
    frames = P.animate(por, None, motion_seed=0, frames=anim_frames)
    dists = [_distance(f, d_in)[0] for f in frames]
    found = [d for d in dists if d is not None]
    out["animation"] = {"frames": len(frames), "no_face": [i for i, d in enumerate(dists) if d is None],
                        "max_distance": max(found) if found else None,
                        "median_distance": round(float(np.median(found)), 4) if found else None,
                        "over_0.6": sum(d >= 0.6 for d in found)}
    if save_dir:
        pick = [0, len(frames) // 4, len(frames) // 2, 3 * len(frames) // 4, len(frames) - 1]
        Image.fromarray(np.concatenate([frames[i] for i in pick], 1)).save(Path(save_dir) / f"{key}_animation.png")
    return out


def _photos(keys):
    import skimage.data

    photos = {}
    for key in keys.split(","):
        if key == "astronaut":
            photos[key] = skimage.data.astronaut()
        elif key == "astronaut_mirror":
            photos[key] = np.ascontiguousarray(skimage.data.astronaut()[:, ::-1])
        elif key in PACKAGE_PHOTOS:
            img = _package_photo(key)
            if img is None:
                print(f"{key}: {PACKAGE_PHOTOS[key][0]} is not installed, skipped", flush=True)
                continue
            photos[key] = img
        else:
            raise SystemExit(f"unknown photo {key!r}")
    return photos


def _load():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def run_invert(args):
    from pv3d_core import portrait as P

    G, d_img, name = _model(args.ckpt, args.random)
    over = _overrides(args.set)
    methods = args.methods.split(",")
    encoder = None
    if "encoder" in methods:
        encoder, why = P.find_encoder(G, args.encoder or "auto")
        if encoder is None:
            raise SystemExit(f"method 'encoder': {why}")
    if args.save_dir:
        Path(args.save_dir).mkdir(parents=True, exist_ok=True)
    rows = {}
    for key, img in _photos(args.photos).items():
        rows[key] = {}
        runs = {m: [] for m in methods}
        for rep in range(args.repeats):
            for m in methods:          # alternate, so that the machine's load falls on both alike
                load0 = _load()
                t0 = time.perf_counter()
                por = P.prepare_and_invert(img, G, config=_config(m, over), d_img=d_img,
                                           encoder=encoder if m == "encoder" else None)
                wall = time.perf_counter() - t0
                runs[m].append((por, wall, load0, _load()))
                print(f"{key} {m} run {rep + 1}: {wall:.1f} s, PSNR {por.metrics['psnr']:.2f}", flush=True)
        for m in methods:
            por = runs[m][-1][0]
            tm = [r[0].timings for r in runs[m]]

            def med(k):
                v = [t[k] for t in tm if k in t]
                return round(statistics.median(v), 2) if v else None
            row = {"psnr": round(por.metrics["psnr"], 3), "ssim": round(por.metrics["ssim"], 4),
                   "seconds": round(statistics.median(r[1] for r in runs[m]), 1),
                   "stages_s": {k: med(k) for k in ("align_s", "encode_s", "w_s", "wplus_s", "pti_s", "first_result_s",
                                                   "total_s")},
                   "load_avg_1min_before_after": [[r[2][0], r[3][0]] for r in runs[m] if r[2]],
                   "camera_yaw_deg": round(por.transform["yaw_deg"], 2),
                   "camera_pitch_deg": round(por.transform["pitch_deg"], 2)}
            if "encoder_pose_deg" in por.timings:
                row["encoder_yaw_pitch_deg"] = [round(v, 2) for v in por.timings["encoder_pose_deg"]]
            row["identity"] = identity_figures(por, args.anim_frames, args.save_dir, f"{key}_{m}")
            rows[key][m] = row
            print(key, m, json.dumps(row), flush=True)
        if "legacy" in methods:
            for m in methods:
                if m != "legacy":
                    rows[key][f"{m}_vs_legacy_time_ratio"] = round(rows[key][m]["seconds"] / rows[key]["legacy"]["seconds"], 4)
    return {"model": name, "methods": methods, "overrides": over, "threads": torch.get_num_threads(),
            "repeats": args.repeats, "photos": rows}


def run_video(args):
    """A clip of the model's own: pv3d reconstruct with each method, side by side."""
    from pv3d_core import portrait as P
    from pv3d_core.data.layout import write_video
    from pv3d_core.pipeline import FrameRenderer, RenderSettings

    G, d_img, name = _model(args.ckpt, False)
    r = FrameRenderer(G)
    n = args.frames
    frames = [r.render(RenderSettings(seed=args.seed, motion_seed=args.seed, t=i / (n - 1), psi=0.7,
                                      yaw=math.radians(15) * math.sin(2 * math.pi * i / n), resolution=256)).numpy()
              for i in range(n)]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        write_video(clip, frames, fps=25)
        for m in args.methods.split(","):
            cfg = _config(m, _overrides(args.set))
            load0 = _load()
            t0 = time.perf_counter()
            s = P.reconstruct_video(clip, G, Path(tmp) / m, cfg, motion_steps=args.motion_steps, d_img=d_img,
                                    encoder=cfg.encoder)
            out[m] = {"seconds": round(time.perf_counter() - t0, 1), "psnr_mean": round(s["metrics"]["psnr_mean"], 3),
                      "psnr_min": round(s["metrics"]["psnr_min"], 3), "frames_used": s["frames_used"],
                      "start": s["start"], "stages_s": s["seconds"], "load_avg_1min_before_after": [load0, _load()]}
            print(m, json.dumps(out[m]), flush=True)
    if "legacy" in out:
        for m in list(out):
            if m != "legacy":
                out[f"{m}_speedup_vs_legacy"] = round(out["legacy"]["seconds"] / out[m]["seconds"], 3)
    return {"model": name, "frames": n, "motion_steps": args.motion_steps, "results": out}


#: photos that ship inside optional packages: key -> (package, path inside it)
PACKAGE_PHOTOS = {
    "tennis": ("imgui_bundle", "demos_assets/images/tennis.jpg"),   # two tennis players; the larger face is used
    "hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}


def _package_photo(key):
    """The RGB array of a :data:`PACKAGE_PHOTOS` photo, or None when its package is not installed."""
    import importlib.util

    from PIL import Image

    package, rel = PACKAGE_PHOTOS[key]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / rel
        if p.is_file():
            return np.asarray(Image.open(p).convert("RGB"))
    return None


def run_pnp(args):
    """Procedural heads (pv3d data synth's renderer) seen by known cameras, yaw uniform in
    ±--yaw-deg and pitch in ±--pitch-deg; each render goes through align_face (what `pv3d align`
    runs) and the estimated camera's viewing direction is compared with the true one."""
    from pv3d_core.data import synth
    from pv3d_core.faces import FaceError, align_face, angle_between
    from pv3d_core.faces.aligned import load_image
    from pv3d_core.faces.detect import symmetric_landmarks
    from pv3d_core.faces.pose import MODEL, FaceModel, solve_camera
    from pv3d_core.render import cameras

    rng = np.random.default_rng(args.seed)
    view_rng = np.random.default_rng(args.seed + 99)     # the oracle's views; the heads stay the benchmark's
    errs, oracle, misses, rows = [], [], 0, []
    for i in range(args.heads):
        ident = synth.Identity.sample(synth.clip_rng(args.seed, i))
        yaw = math.radians(rng.uniform(-args.yaw_deg, args.yaw_deg))
        pitch = math.radians(rng.uniform(-args.pitch_deg, args.pitch_deg))
        c = cameras.pack(cameras.orbit_cam2world(yaw, pitch))
        img = synth.render_head(ident, synth.Expression(), c, args.res)["image"]
        views = [(math.radians(view_rng.uniform(-30, 30)), math.radians(view_rng.uniform(-15, 15)))
                 for _ in range(args.oracle_views)]
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
                     "error_deg": round(e, 2), **{k: round(getattr(ident, k), 3) for k in _SHAPE}})
        if views:
            own = _own_face(ident, views, args.res)
            if own is not None:
                work, _ = load_image(img)           # the image align_face found the face in
                cam, _ = solve_camera(a.frame.to_crop(symmetric_landmarks(work, a.face.box, a.face.landmarks)),
                                      model=FaceModel(own, np.zeros((0, 68, 3)), MODEL.noise, MODEL.prior))
                oracle.append(angle_between(cam, c))
                rows[-1]["own_face_error_deg"] = round(oracle[-1], 2)
        print(rows[-1], flush=True)
    found = [r for r in rows if "error_deg" in r]
    dyaw = [r["est_yaw"] - r["yaw"] for r in found]
    dpitch = [r["est_pitch"] - r["pitch"] for r in found]

    def stats(v):
        return {"mean": float(np.mean(v)), "median": float(np.median(v)), "max": float(np.max(np.abs(v)))} if v else None
    # the error pose.py's face model still reads as pitch: the heads' vertical proportions (nose length,
    # jaw length, eye height) move the landmarks as a change of pitch would
    shape_corr = {k: round(float(np.corrcoef([r[k] for r in found], dpitch)[0, 1]), 2)
                  for k in _SHAPE} if len(found) > 2 else None
    return {"heads": args.heads, "yaw_deg": args.yaw_deg, "pitch_deg": args.pitch_deg, "seed": args.seed,
            "detected": len(errs), "missed": misses,
            "angular_error_deg": {"mean": float(np.mean(errs)) if errs else None,
                                  "median": float(np.median(errs)) if errs else None,
                                  "max": float(np.max(errs)) if errs else None},
            "yaw_error_deg": stats(dyaw), "pitch_error_deg": stats(dpitch),
            "own_face_error_deg": {"views": args.oracle_views, "heads": len(oracle), "median": float(np.median(oracle)),
                                   "max": float(np.max(oracle)), "mean": float(np.mean(oracle))} if oracle else None,
            "pitch_error_correlation_with_shape": shape_corr, "rows": rows}


def _own_face(ident, views, res):
    """A head's own 68-point face (68, 3) fitted to its landmarks in ``views`` [(yaw, pitch)] with the
    true cameras (``fit_pnp_template.fit_head``), or None when dlib finds it in fewer than two."""
    from fit_pnp_template import PULL, fit_head

    from pv3d_core.data import synth
    from pv3d_core.faces import FaceError, crop_frame, find_face
    from pv3d_core.faces.detect import symmetric_landmarks
    from pv3d_core.faces.pose import MODEL
    from pv3d_core.render import cameras

    lms, c2ws = [], []
    for yaw, pitch in views:
        c2w = cameras.orbit_cam2world(yaw, pitch)
        img = synth.render_head(ident, synth.Expression(), cameras.pack(c2w), res)["image"]
        try:
            f = find_face(img, min_face=20)
        except FaceError:
            continue
        lms.append(crop_frame(f.landmarks).to_crop(symmetric_landmarks(img, f.box, f.landmarks)))
        c2ws.append(c2w)
    if len(lms) < 2:
        return None
    return fit_head(np.stack(lms), np.stack(c2ws), MODEL.mean, MODEL.landmark_weights, cameras.DEFAULT_FOCAL, PULL)


def run_pnp_clips(args):
    """Camera-direction error of align_face on each frame of synthetic talking-head clips."""
    from pv3d_core.data import synth
    from pv3d_core.faces import FaceError, align_face, angle_between

    errs, per_clip, misses = [], [], 0
    for i in range(args.clips):
        rng = synth.clip_rng(args.seed, i)
        ident = synth.Identity.sample(rng)
        exprs, cams = synth.expression_track(rng, args.frames), synth.camera_track(rng, args.frames)
        clip = []
        for e, c in zip(exprs, cams):
            try:
                a = align_face(synth.render_head(ident, e, c, args.res)["image"], 64, min_face=20)
            except FaceError:
                misses += 1
                continue
            clip.append(angle_between(a.camera, c))
        errs += clip
        per_clip.append({"clip": i, "frames": len(clip), "median": float(np.median(clip)) if clip else None,
                         "max": float(np.max(clip)) if clip else None})
        print(per_clip[-1], flush=True)
    return {"clips": args.clips, "frames": args.frames, "seed": args.seed, "found": len(errs), "missed": misses,
            "angular_error_deg": {"mean": float(np.mean(errs)), "median": float(np.median(errs)),
                                  "max": float(np.max(errs))}, "per_clip": per_clip}


_SHAPE = ("nose_len", "jaw_len", "eye_y", "mouth_y", "head_h")   # synth.Identity fields set per head


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("invert")
    a.add_argument("--ckpt", default=os.environ.get("PV3D_DEFAULT_CKPT"))
    a.add_argument("--random", action="store_true", help="an untrained tiny model instead of the default one")
    a.add_argument("--photos", default="astronaut,tennis")
    a.add_argument("--methods", default="legacy,encoder", help="legacy, optimise, encoder (comma-separated)")
    a.add_argument("--encoder", help="encoder file (default: the one beside the model)")
    a.add_argument("--repeats", type=int, default=1)
    a.add_argument("--anim-frames", type=int, default=64)
    a.add_argument("--set", action="append", metavar="FIELD=VALUE", help="InversionConfig override (every method)")
    a.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    a.add_argument("--save-dir")
    a.add_argument("-o", "--output")
    v = sub.add_parser("video")
    v.add_argument("--ckpt", default=os.environ.get("PV3D_DEFAULT_CKPT"))
    v.add_argument("--frames", type=int, default=16)
    v.add_argument("--seed", type=int, default=3)
    v.add_argument("--motion-steps", type=int, default=200)
    v.add_argument("--methods", default="legacy,encoder")
    v.add_argument("--set", action="append", metavar="FIELD=VALUE")
    v.add_argument("--threads", type=int)
    v.add_argument("-o", "--output")
    b = sub.add_parser("pnp")
    b.add_argument("--heads", type=int, default=8)
    b.add_argument("--yaw-deg", type=float, default=25.0, help="true yaw uniform in ±this (default 25)")
    b.add_argument("--pitch-deg", type=float, default=10.0, help="true pitch uniform in ±this (default 10)")
    b.add_argument("--res", type=int, default=256)
    b.add_argument("--seed", type=int, default=7)
    b.add_argument("--oracle-views", type=int, default=0, choices=[0] + list(range(2, 13)), metavar="N",
                   help="also solve each head with its own face, fitted to N (2-12) other views (default 0: off)")
    b.add_argument("-o", "--output")
    c = sub.add_parser("pnp-clips")
    c.add_argument("--clips", type=int, default=12)
    c.add_argument("--frames", type=int, default=25)
    c.add_argument("--res", type=int, default=256)
    c.add_argument("--seed", type=int, default=5000)
    c.add_argument("-o", "--output")
    args = ap.parse_args()
    if args.mode == "pnp-clips" and not (1 <= args.clips <= 1000 and 1 <= args.frames <= 1000
                                         and 64 <= args.res <= 2048):
        ap.error("pnp-clips: --clips and --frames 1-1000, --res 64-2048")
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    res = {"invert": run_invert, "video": run_video, "pnp": run_pnp, "pnp-clips": run_pnp_clips}[args.mode](args)
    text = json.dumps(res, indent=1)
    print(text)
    if args.output:
        Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
