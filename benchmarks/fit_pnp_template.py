"""Fit the mean 3D face that PnP uses (pv3d_core/faces/pose.py) to procedural heads with known cameras.

    python benchmarks/fit_pnp_template.py [--identities 24] [--views 6] [--seed 1000] [--cache lm.npz]

Procedural heads (`pv3d data synth`'s renderer) are rendered from known orbit cameras (yaw within
±30°, pitch within ±15°), dlib finds their 68 landmarks, and each render is aligned as a photo is
(the FFHQ crop). Then one symmetric 68-point face is fitted by least squares so that, seen by each
render's *true* camera rotation (and a free translation per render, which absorbs the crop's framing),
it projects onto the landmarks in crop coordinates with the model's intrinsics, exactly the model
:func:`pv3d_core.faces.pose.solve_camera` inverts. Landmarks weigh as in the PnP fit. The seeds are
disjoint from `bench_portrait.py pnp`'s (7), so that benchmark measures identities the fit never saw.

Prints the template as the Python table pose.py holds (world units), and the training residual.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def collect(identities: int, views: int, seed: int, res: int):
    from pv3d_core.data import synth
    from pv3d_core.faces import FaceError, crop_frame, find_face
    from pv3d_core.render import cameras

    rng = np.random.default_rng(seed)
    lms, c2ws = [], []
    for i in range(identities):
        ident = synth.Identity.sample(synth.clip_rng(seed, i))
        for v in range(views):
            yaw, pitch = math.radians(rng.uniform(-30, 30)), math.radians(rng.uniform(-15, 15))
            c2w = cameras.orbit_cam2world(yaw, pitch)
            img = synth.render_head(ident, synth.Expression(), cameras.pack(c2w), res)["image"]
            try:
                face = find_face(img, min_face=20)
            except FaceError:
                continue
            lms.append(crop_frame(face.landmarks).to_crop(face.landmarks))
            c2ws.append(c2w)
        print(f"identity {i + 1}/{identities}: {len(lms)} renders with a face", flush=True)
    return np.stack(lms), np.stack(c2ws)


def fit(lms: np.ndarray, c2ws: np.ndarray, init: np.ndarray, weights: np.ndarray, focal: float):
    from scipy.optimize import least_squares

    from pv3d_core.faces.landmarks import MIRROR

    reps = [i for i in range(68) if i <= MIRROR[i]]          # one point per mirror pair (and the midline)
    mid = {i for i in reps if MIRROR[i] == i}
    n = len(lms)
    w2cs = np.linalg.inv(c2ws)
    R, t_true = w2cs[:, :3, :3], w2cs[:, :3, 3]

    def unpack(p):
        X = np.zeros((68, 3))
        k = 0
        for i in reps:
            if i in mid:
                X[i] = (0.0, p[k], p[k + 1])
                k += 2
            else:
                X[i] = p[k:k + 3]
                X[MIRROR[i]] = (-p[k], p[k + 1], p[k + 2])
                k += 3
        return X, p[k:].reshape(n, 3)

    def pack(X, dt):
        out = []
        for i in reps:
            out.extend(X[i, 1:] if i in mid else X[i])
        return np.r_[out, dt.reshape(-1)]

    def resid(p):
        X, dt = unpack(p)
        q = np.einsum("nij,mj->nmi", R, X) + (t_true + dt)[:, None, :]
        uv = q[..., :2] / q[..., 2:3] * focal + 0.5
        r = ((uv - lms) * weights[None, :, None]).reshape(-1)
        return np.r_[r, 1e-3 * dt.mean(0)]                 # fixes the gauge (a shift of X against every t)

    sol = least_squares(resid, pack(init, np.zeros((n, 3))), method="trf", x_scale="jac")
    X, dt = unpack(sol.x)
    r = resid(sol.x)[:-3].reshape(n, 68, 2) / weights[None, :, None]
    # PnP rotations do not change under a scale and a shift of the template (the translation absorbs
    # them), and the fit leaves both loosely determined: give the face the size and place of ``init``
    A = np.c_[X.reshape(-1), np.tile(np.eye(3), (68, 1))]
    coef, *_ = np.linalg.lstsq(A, init.reshape(-1), rcond=None)
    X = X * coef[0] + coef[1:]
    X[sorted(mid), 0] = 0.0
    return X, r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--identities", type=int, default=24)
    ap.add_argument("--views", type=int, default=6)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--cache", help="landmarks .npz: written after collecting, read when it exists")
    ap.add_argument("--save", help="also save the (68, 3) template as .npy")
    args = ap.parse_args()
    from pv3d_core.faces import pose
    from pv3d_core.render import cameras

    if args.cache and Path(args.cache).is_file():
        z = np.load(args.cache)
        lms, c2ws = z["landmarks"], z["c2w"]
    else:
        lms, c2ws = collect(args.identities, args.views, args.seed, args.res)
        if args.cache:
            np.savez(args.cache, landmarks=lms, c2w=c2ws)
    from pv3d_core.faces.landmarks import MIRROR

    # 1) equal weights; 2) each landmark weighted by the inverse of its spread around that fit (mirror
    # pairs share one weight), i.e. how well one rigid mean face can explain it; refit with them
    X, r = fit(lms, c2ws, pose.template(), np.ones(68), cameras.DEFAULT_FOCAL)
    spread = np.sqrt((r.std(0) ** 2).sum(-1))
    spread = (spread + spread[MIRROR]) / 2
    weights = spread.min() / spread
    X, r = fit(lms, c2ws, X, weights, cameras.DEFAULT_FOCAL)
    print(f"{len(lms)} renders; landmark rms after the fit {np.sqrt((r ** 2).sum(-1).mean()):.4f} of the crop side")
    if args.save:
        np.save(args.save, X)
        np.save(str(args.save).replace(".npy", "_weights.npy"), weights)
    print("# landmark: (x, y, z) world units, weight; the image-left half and the midline")
    print("_POINTS = {")
    for i in range(68):
        if i <= MIRROR[i]:
            x = 0.0 if MIRROR[i] == i else X[i, 0]
            print(f"    {i}: (({x:.4f}, {X[i, 1]:.4f}, {X[i, 2]:.4f}), {weights[i]:.2f}),")
    print("}")


if __name__ == "__main__":
    main()
