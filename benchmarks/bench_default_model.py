"""How good is a model of the procedural family? The default model's acceptance figures (issue 13).

    python benchmarks/bench_default_model.py [--ckpt CKPT] [--seeds 48] [--out DIR] [--json out.json]
    python benchmarks/bench_default_model.py --curve RUN/snapshots [--seeds 24] [--json curve.json]

On ``--seeds`` random seeds (1000, 1001, ...; motion seed = seed; psi 0.7), each seen at one of
yaw -20 / 0 / +20 degrees and t 0 / 0.5 / 1 in turn, the model's frame is compared with the
teacher's render of the same codes, truncation, t and camera (pv3d_core.data.head_codes: the
procedural head the model was trained to reproduce):

- faces found: dlib's HOG detector, then its CNN detector (pv3d_core.faces.find_face);
- sharpness: variance of the Laplacian of the grey image, the model's mean over the teacher's mean
  (with two references: the teacher's renders blurred by a 0.7 px and a 2 px Gaussian);
- skin-toned: the colour at the nose bridge (landmark 29, or the image centre when no face is found),
  median of a small patch, inside the YCbCr skin box of Chai & Ngan (Cb 77-127, Cr 133-173);
- identity across views: dlib descriptor distance between yaw 0 and yaw +-30 degrees of the same seed,
  t and motion; a seed passes when both distances are below 0.5 (no face found = fails);
- one head: the mesh (pv3d_core.mesh, 128^3) of the first few seeds has one component holding
  >= 99 % of the faces;
- speed: FrameRenderer milliseconds per frame at 128^2, orbit with cached tri-planes and scrub (new t).

``--out`` writes the sample grid beside the teacher's grid (same cameras) as PNGs.
``--curve`` runs the image figures on every snapshot of a distillation run (the training curve).
``--ceiling`` measures what the preset's resolutions allow: the teacher rendered at the model's neural
resolution (and twice it) and upsampled to the output size, and the model rendered at larger neural
resolutions than it was trained at, each as a share of the teacher's sharpness.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

YAWS = (-20.0, 0.0, 20.0)
TS = (0.0, 0.5, 1.0)
PSI = 0.7
SEED0 = 1000


def lap_var(img: np.ndarray) -> float:
    from scipy.ndimage import laplace

    grey = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return float(laplace(grey).var())


def skin_toned(img: np.ndarray, landmarks) -> bool:
    h, w = img.shape[:2]
    if landmarks is not None:
        x, y = landmarks[29]
    else:
        x, y = w / 2, h * 0.55
    r = max(2, w // 40)
    x, y = int(np.clip(x, r, w - r - 1)), int(np.clip(y, r, h - r - 1))
    patch = img[y - r:y + r + 1, x - r:x + r + 1].reshape(-1, 3).astype(np.float64)
    R, G, B = np.median(patch, 0)
    cb = 128 - 0.168736 * R - 0.331264 * G + 0.5 * B
    cr = 128 + 0.5 * R - 0.418688 * G - 0.081312 * B
    return bool(77 <= cb <= 127 and 133 <= cr <= 173)


def face(img):
    from pv3d_core.faces.detect import FaceError, find_face

    try:
        return find_face(img, min_face=20)
    except FaceError:
        return None


def descriptor(img, f):
    from pv3d_core.faces.embed import descriptor as desc

    return None if f is None else desc(img, f.landmarks)


def views(n: int):
    """(seed, motion seed, t, yaw degrees) of the n benchmark images."""
    out = []
    for i in range(n):
        out.append((SEED0 + i, SEED0 + i, TS[(i // 3) % 3], YAWS[i % 3]))
    return out


class Pair:
    """The model and its teacher, rendering the same (seed, motion seed, t, yaw)."""

    def __init__(self, G):
        from pv3d_core.pipeline import FrameRenderer

        self.G = G
        self.r = FrameRenderer(G, plane_cache=4)

    def model(self, seed, mseed, t, yaw_deg):
        from pv3d_core.pipeline import RenderSettings

        return self.r.render(RenderSettings(seed=seed, motion_seed=mseed, t=t, yaw=math.radians(yaw_deg),
                                            psi=PSI)).numpy()

    def teacher(self, seed, mseed, t, yaw_deg, res=None):
        from pv3d_core.data import head_codes
        from pv3d_core.pipeline import RenderSettings, seed_latent

        s = RenderSettings(seed=seed, motion_seed=mseed, t=t, yaw=math.radians(yaw_deg), psi=PSI)
        z = seed_latent(seed, self.G.z_dim)
        zm = self.r.motion_for(mseed).cpu()
        c = torch.from_numpy(s.camera(self.r.pivot))[None]
        img = head_codes.render(z, zm, torch.tensor([float(t)]), c, res or self.G.img_resolution, 2, psi=PSI)["image"]
        return ((img[0].permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).round().byte().numpy()


def image_figures(pair: Pair, n: int, identity: bool = True) -> dict:
    from scipy.ndimage import gaussian_filter

    found = {"model": 0, "teacher": 0}
    skin = {"model": 0, "teacher": 0}
    lap = {"model": [], "teacher": [], "teacher_blur0.7": [], "teacher_blur2": []}
    id_pass, id_dists, per = 0, [], []
    for seed, mseed, t, yaw in views(n):
        row = {"seed": seed, "t": t, "yaw": yaw}
        for who, img in (("model", pair.model(seed, mseed, t, yaw)), ("teacher", pair.teacher(seed, mseed, t, yaw))):
            f = face(img)
            found[who] += f is not None
            skin[who] += skin_toned(img, f.landmarks if f is not None else None)
            lap[who].append(lap_var(img))
            row[who] = {"face": f is not None, "lap": round(lap[who][-1], 1)}
            if who == "teacher":
                for s in (0.7, 2):
                    lap[f"teacher_blur{s}"].append(lap_var(gaussian_filter(img.astype(np.float64), (s, s, 0))))
        if identity:
            d0 = descriptor(*(lambda im: (im, face(im)))(pair.model(seed, mseed, t, 0.0)))
            ds = []
            for y in (-30.0, 30.0):
                im = pair.model(seed, mseed, t, y)
                d = descriptor(im, face(im))
                ds.append(float(np.linalg.norm(d - d0)) if d is not None and d0 is not None else None)
            ok = all(x is not None and x < 0.5 for x in ds)
            id_pass += ok
            id_dists += [x for x in ds if x is not None]
            row["identity_30"] = ds
        per.append(row)
    mt = statistics.mean(lap["teacher"])
    out = {
        "images": n,
        "faces_found": {k: round(v / n, 3) for k, v in found.items()},
        "sharpness_vs_teacher": round(statistics.mean(lap["model"]) / mt, 3),
        "sharpness_refs": {"teacher_blur_0.7px": round(statistics.mean(lap["teacher_blur0.7"]) / mt, 3),
                           "teacher_blur_2px": round(statistics.mean(lap["teacher_blur2"]) / mt, 3)},
        "skin_toned": {k: round(v / n, 3) for k, v in skin.items()},
        "per_image": per,
    }
    if identity:
        out["identity_30deg_pass"] = round(id_pass / n, 3)
        out["identity_30deg_distance_median"] = round(statistics.median(id_dists), 3) if id_dists else None
    return out


def mesh_figures(pair: Pair, n: int = 4) -> dict:
    from pv3d_core.mesh import extract_mesh

    G, r = pair.G, pair.r
    rows = []
    for seed, mseed, t, _ in views(n):
        ws = r.ws_for(seed, PSI)
        zm = r.motion_for(mseed)
        m = extract_mesh(G, ws, zm, t, resolution=128, largest_component=False, colours=False)
        parts = sorted((len(p.faces) for p in m.split(only_watertight=False)), reverse=True)
        ext = (m.bounds[1] - m.bounds[0]).round(3).tolist()
        rows.append({"seed": seed, "components": len(parts), "largest_share": round(parts[0] / sum(parts), 4),
                     "extent": ext})
    return {"one_head": sum(r_["largest_share"] >= 0.99 for r_ in rows) / len(rows), "meshes": rows}


def speed_figures(pair: Pair, frames: int = 12) -> dict:
    from pv3d_core.pipeline import RenderSettings

    r = pair.r
    r.render(RenderSettings(seed=1, motion_seed=1, t=0.3))
    orbit, scrub = [], []
    for i in range(frames):
        t0 = time.perf_counter()
        r.render(RenderSettings(seed=1, motion_seed=1, t=0.3, yaw=0.5 * math.sin(i / 3)))
        orbit.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        r.render(RenderSettings(seed=1, motion_seed=1, t=0.31 + i / 100))
        scrub.append((time.perf_counter() - t0) * 1e3)
    return {"orbit_cached_ms": round(statistics.median(orbit), 1), "scrub_ms": round(statistics.median(scrub), 1),
            "threads": torch.get_num_threads()}


def grids(pair: Pair, out: Path, seeds=8) -> None:
    from pv3d_core.export import write_png

    rows_m, rows_t = [], []
    for i in range(seeds):
        seed = SEED0 + i
        cm, ct = [], []
        for t in TS:
            for y in YAWS:
                cm.append(pair.model(seed, seed, t, y))
                ct.append(pair.teacher(seed, seed, t, y))
        rows_m.append(np.concatenate(cm, 1))
        rows_t.append(np.concatenate(ct, 1))
    out.mkdir(parents=True, exist_ok=True)
    write_png(out / "model_grid.png", np.concatenate(rows_m, 0))
    write_png(out / "teacher_grid.png", np.concatenate(rows_t, 0))


def ceiling_figures(pair: Pair, n: int) -> dict:
    """Sharpness (share of the teacher's at the output size) of the teacher rendered at low resolution and
    upsampled (bilinear and bicubic), and of the model rendered at 1, 1.5 and 2 times its neural
    resolution: how much of the goal the preset's resolutions leave reachable."""
    from PIL import Image

    from pv3d_core.pipeline import RenderSettings

    G = pair.G
    out_res, nr = G.img_resolution, G.neural_rendering_resolution
    rows = {}
    views_ = views(n)
    teacher = statistics.mean(lap_var(pair.teacher(*v)) for v in views_)
    for r in (nr, 2 * nr):
        for name, mode in (("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)):
            lap = [lap_var(np.asarray(Image.fromarray(pair.teacher(*v, res=r)).resize((out_res, out_res), mode)))
                   for v in views_]
            rows[f"teacher_at_{r}_{name}_to_{out_res}"] = round(statistics.mean(lap) / teacher, 4)
    for r in (nr, nr * 3 // 2, 2 * nr):
        lap = [lap_var(pair.r.render(RenderSettings(seed=s, motion_seed=m, t=t, yaw=math.radians(y), psi=PSI,
                                                    neural_resolution=r)).numpy()) for s, m, t, y in views_]
        rows[f"model_at_neural_{r}"] = round(statistics.mean(lap) / teacher, 4)
    return {"images": n, "neural_resolution": nr, "plane_resolution": int(G.config.plane_resolution), **rows}


def load(ckpt):
    from pv3d_core.io import load_generator
    from pv3d_core.paths import default_checkpoint

    return load_generator(ckpt or default_checkpoint()).eval().requires_grad_(False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", help="model (default: the embedded default model)")
    ap.add_argument("--seeds", type=int, default=48)
    ap.add_argument("--curve", help="a distillation run's snapshots folder: image figures per snapshot")
    ap.add_argument("--ceiling", action="store_true", help="sharpness the preset's resolutions allow (see above)")
    ap.add_argument("--no-identity", action="store_true", help="skip the +-30 degree identity check")
    ap.add_argument("--no-mesh", action="store_true")
    ap.add_argument("--out", help="folder for the model / teacher sample grids")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if not 1 <= a.seeds <= 1000:
        ap.error("--seeds must be within 1..1000")
    with torch.no_grad():
        if a.ceiling:
            result = {"model": str(a.ckpt or "default"), "ceiling": ceiling_figures(Pair(load(a.ckpt)), a.seeds)}
            print(json.dumps(result, indent=1))
        elif a.curve:
            from pv3d_core.io import read_checkpoint

            rows = []
            for snap in sorted(Path(a.curve).glob("*.safetensors")):
                meta = read_checkpoint(snap).meta
                f = image_figures(Pair(load(snap)), a.seeds, identity=not a.no_identity)
                f.pop("per_image")
                rows.append({"snapshot": snap.name, "step": meta.get("step"), "images": meta.get("images"),
                             "hours": round(meta.get("seconds", 0) / 3600, 2), **f})
                print(json.dumps(rows[-1]), flush=True)
            result = {"curve": rows}
        else:
            pair = Pair(load(a.ckpt))
            result = {"model": str(a.ckpt or "default"), "psi": PSI,
                      "images": image_figures(pair, a.seeds, identity=not a.no_identity)}
            if not a.no_mesh:
                result["mesh"] = mesh_figures(pair)
            result["speed"] = speed_figures(pair)
            if a.out:
                grids(pair, Path(a.out))
            summary = {k: v for k, v in result["images"].items() if k != "per_image"}
            print(json.dumps({**summary, "mesh_one_head": result.get("mesh", {}).get("one_head"),
                              **result["speed"]}, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
