"""`pv3d eval`: the paper's metrics for one model, with the official protocol's renders and settings.

Multi-view renders (shared by identity consistency, Chamfer distance and warping error; the official
``generating_multiview_loop``): per video one appearance code z and one motion code z_m (standard
normal), two timestamps t_a, t_b drawn from the 16 evenly spaced times in [0, 1], and four renders

    0: frontal at t_a    1: side at t_b    2: side at t_a    3: frontal at t_b

with the mapping conditioned on the canonical camera, no truncation (psi 1), constant noise,
deterministic ray sampling. Frontal = the canonical camera, the one the mapping is conditioned on
(:func:`pv3d_core.render.cameras.conditioning_camera`: at (0, 0, 2.7) looking down −z, focal 4.2647); side = EG3D's look-at sampler at (π/2 + yaw, π/2 − 0.05 + pitch) around (0, 0, 0.2),
radius 2.7, yaw 30°, pitch 0.

FVD (``--data`` real clips and ``--i3d`` weights): real = one random 16-frame window per clip (at most
``--fvd-videos``); generated = ``--fvd-videos`` clips, each with t = 16 evenly spaced times in [0, 1]
seen by the 16 consecutive cameras of a random window of a random real clip, the mapping conditioned
on the window's first camera (the official ``compute_feature_stats_for_generator``). The official
protocol uses 5,000 of each at 512².

Geometry error (``--data`` made by ``pv3d data synth``): :mod:`.geometry`.
"""
from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np

from ..render import cameras
from . import MetricError

NUM_TIMES = 16


def side_camera(yaw_deg: float = 30.0, pitch_deg: float = 0.0) -> np.ndarray:
    m = cameras.lookat_sampler(math.pi / 2 + math.radians(yaw_deg), math.pi / 2 - 0.05 + math.radians(pitch_deg),
                               (0.0, 0.0, 0.2), 2.7)
    return cameras.pack(m, 4.2647)


# ------------------------------------------------------------------------------------ renders

def multiview_renders(G, n_videos: int, seed: int = 0, psi: float = 1.0, yaw: float = 30.0, pitch: float = 0.0,
                      cancel: threading.Event | None = None):
    """Yield per video: images (4, H, W, 3) uint8, depth/alpha (4, r, r), points (4, r*r, 3), cameras."""
    import torch

    from ..errors import Cancelled
    from ..render.rays import pixel_rays, split_camera
    from .chamfer import depth_points

    dev = next(G.parameters()).device
    gen = torch.Generator().manual_seed(int(seed))
    front = np.asarray(cameras.conditioning_camera(G.rendering_kwargs), np.float32)
    side = side_camera(yaw, pitch)
    cams = [front, side, side, front]
    c0 = torch.from_numpy(front).to(dev)[None]
    r = G.neural_rendering_resolution
    rays = {}
    for key, c in (("front", front), ("side", side)):
        o, d = pixel_rays(*split_camera(torch.from_numpy(c)[None]), r)
        rays[key] = (o[0].numpy(), d[0].numpy())
    ray_end = float(G.rendering_kwargs["ray_end"])
    for _ in range(n_videos):
        if cancel is not None and cancel.is_set():
            raise Cancelled("evaluation cancelled")
        z = torch.randn(1, G.z_dim, generator=gen).to(dev)
        zm = torch.randn(1, G.motion_dim, generator=gen).to(dev)
        idx = torch.randint(0, NUM_TIMES, (2,), generator=gen).tolist()
        ts = [i / (NUM_TIMES - 1) for i in idx]
        with torch.no_grad():
            ws = G.mapping(z, c0, truncation_psi=psi)
            planes = {ti: G.planes(ws, zm, torch.tensor([ti], device=dev), noise_mode="const") for ti in set(ts)}
            imgs, depths, alphas, points = [], [], [], []
            for k, (ti, c) in enumerate(zip([ts[0], ts[1], ts[0], ts[1]], cams)):
                out = G.render_planes(planes[ti], ws, torch.from_numpy(c).to(dev)[None])
                # uint8 by truncation, as the official loop saves its PNGs
                img = ((out["image"][0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).byte().cpu().numpy()
                dep = out["image_depth"][0, 0].float().cpu().numpy()
                alp = out["image_alpha"][0, 0].float().cpu().numpy()
                o, d = rays["front" if k in (0, 3) else "side"]
                imgs.append(img)
                depths.append(dep)
                alphas.append(alp)
                points.append(depth_points(o, d, dep, alp, ray_end))
        yield {"images": np.stack(imgs), "depth": np.stack(depths), "alpha": np.stack(alphas),
               "points": np.stack(points), "t": ts, "cameras": (front, side)}


def _real_windows(root, n: int, rng: np.random.Generator):
    """Up to n random 16-frame windows (one per clip) and every clip's cameras."""
    from ..data import layout

    names = layout.list_clips(root)
    order = rng.permutation(len(names))
    cams = {nm: layout.read_cameras(Path(root) / layout.CAMERA_DIR / f"{nm}.json") for nm in names}
    windows, short = [], 0
    for i in order:
        if len(windows) >= n:
            break
        frames = layout.read_video(Path(root) / layout.VIDEO_DIR / f"{names[i]}.mp4")
        if len(frames) < NUM_TIMES:
            short += 1
            continue
        s = int(rng.integers(0, len(frames) - NUM_TIMES + 1))
        windows.append(frames[s:s + NUM_TIMES])
    usable = [c for c in cams.values() if len(c) >= NUM_TIMES]
    if not windows or not usable:
        raise MetricError(f"FVD needs clips of at least {NUM_TIMES} frames in {root}; none found "
                          f"({short} shorter)")
    return windows, usable, short


def compute_fvd(G, root, net, n_videos: int, seed: int = 0, progress=None, cancel=None) -> dict:
    import torch

    from ..errors import Cancelled
    from .fvd import FeatureStats, frechet_distance, i3d_features

    rng = np.random.default_rng(seed + 1)
    real, cam_sets, short = _real_windows(root, n_videos, rng)
    dev = next(G.parameters()).device
    rs, fs = FeatureStats(), FeatureStats()
    total = len(real) + n_videos
    done = 0
    for v in real:
        rs.append(i3d_features(net, v[None]))
        done += 1
        if progress:
            progress(done, total)
    gen = torch.Generator().manual_seed(int(seed) + 7)
    ts = torch.linspace(0, 1, NUM_TIMES)
    for _ in range(n_videos):
        if cancel is not None and cancel.is_set():
            raise Cancelled("evaluation cancelled")
        cs = cam_sets[int(rng.integers(0, len(cam_sets)))]
        s = int(rng.integers(0, len(cs) - NUM_TIMES + 1))
        win = torch.from_numpy(np.asarray(cs[s:s + NUM_TIMES], np.float32)).to(dev)
        z = torch.randn(1, G.z_dim, generator=gen).to(dev)
        zm = torch.randn(1, G.motion_dim, generator=gen).to(dev)
        frames = []
        with torch.no_grad():
            ws = G.mapping(z, win[:1])
            for k in range(NUM_TIMES):
                out = G.synthesis(ws, zm, ts[k:k + 1].to(dev), win[k:k + 1], noise_mode="const")
                frames.append(((out["image"][0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).byte().cpu().numpy())
        fs.append(i3d_features(net, np.stack(frames)[None]))
        done += 1
        if progress:
            progress(done, total)
    value = frechet_distance(*fs.mean_cov(), *rs.mean_cov())
    return {"fvd": value, "real_videos": rs.n, "generated_videos": fs.n, "frames": NUM_TIMES,
            "clips_too_short": short, "network": "Inception-I3D Kinetics-400 logits (VideoGPT weights)",
            "input": "224² centre crop in [-1, 1]"}


# ------------------------------------------------------------------------------------ report

def plot_report(report: dict, size=(720, 420)) -> np.ndarray:
    """A small PNG-able summary (uint8 image): per-pair bars of each multi-view metric, FVD/geometry text."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, (255, 255, 255))
    dr = ImageDraw.Draw(img)
    panels = []
    if "per_pair" in report.get("identity", {}):
        panels.append(("identity cosine (" + report["identity"].get("backbone", "?") + ")",
                       report["identity"]["per_pair"], [f"{a}-{b}" for a, b in report["identity"]["pairs"]]))
    if "per_pair" in report.get("chamfer", {}):
        panels.append(("Chamfer (median sq. dist)", report["chamfer"]["per_pair"],
                       [f"{a}-{b}" for a, b in report["chamfer"]["pairs"]]))
    if "per_pair" in report.get("warping", {}):
        panels.append(("warping error (0..255)", report["warping"]["per_pair"],
                       [f"{a}-{b}" for a, b in report["warping"]["pairs"]]))
    w = size[0] // max(len(panels), 1)
    top, bottom = 40, size[1] - 90
    for p, (title, vals, labels) in enumerate(panels):
        x0 = p * w + 20
        dr.text((x0, 10), title, fill=(0, 0, 0))
        vals = [0.0 if v is None or not np.isfinite(v) else float(v) for v in vals]
        hi = max(max(abs(v) for v in vals), 1e-12)
        bw = (w - 40) / max(len(vals), 1)
        for k, v in enumerate(vals):
            h = (bottom - top) * abs(v) / hi
            bx = x0 + k * bw
            dr.rectangle([bx + 2, bottom - h, bx + bw - 4, bottom], fill=(70, 110, 180))
            dr.text((bx + 2, bottom + 4), labels[k], fill=(0, 0, 0))
            dr.text((bx + 2, max(top, bottom - h - 12)), f"{v:.3g}", fill=(0, 0, 0))
    lines = []
    f = report.get("fvd", {})
    lines.append(f"FVD: {f['fvd']:.2f} ({f['generated_videos']} vs {f['real_videos']} clips)" if "fvd" in f
                 else f"FVD: not computed ({f.get('skipped', '?')[:90]})")
    g = report.get("geometry", {})
    lines.append(f"geometry: depth |err| {g['input_view']['mean_abs']:.4f} (input view), "
                 f"{g['other_view']['mean_abs']:.4f} (other view), {g['clips']} clips" if "input_view" in g
                 else f"geometry: not computed ({g.get('skipped', '?')[:90]})")
    lines.append(f"model: {report.get('model', {}).get('path', '?')[-80:]}; {report['settings']['videos']} videos")
    for i, ln in enumerate(lines):
        dr.text((20, size[1] - 60 + 16 * i), ln, fill=(0, 0, 0))
    return np.asarray(img)


def evaluate(G, *, videos: int = 1000, seed: int = 0, psi: float = 1.0, yaw: float = 30.0, pitch: float = 0.0,
             size: int = 256, data=None, i3d=None, arcface=None, fvd_videos: int = 5000, geo_clips: int = 4,
             geo_steps: int = 150, bar=None, cancel=None, device="cpu") -> dict:
    """All metrics as a JSON-able dict (see the module doc); ``bar`` is a tqdm-like progress object."""
    from . import chamfer, identity, warping

    if videos < 1:
        raise MetricError("--videos must be at least 1")
    t_start = time.perf_counter()
    # validate every input before the long part
    embed = identity.embedder(arcface, device)
    i3d_net = None
    if i3d is not None:
        from .fvd import load_i3d

        i3d_net = load_i3d(i3d, device)
    if data is not None:
        from ..data import layout

        layout.list_clips(data)   # clear error for a missing or empty folder
    report: dict = {"settings": {
        "videos": videos, "seed": seed, "truncation_psi": psi, "noise_mode": "const", "sampling": "deterministic",
        "renders": ["frontal t_a", "side t_b", "side t_a", "frontal t_b"],
        "timestamps": f"two of linspace(0, 1, {NUM_TIMES}) drawn per video",
        "frontal_camera": [float(v) for v in cameras.conditioning_camera(G.rendering_kwargs)], "side_camera": {"yaw_deg": yaw, "pitch_deg": pitch, "radius": 2.7,
                                                            "lookat": [0, 0, 0.2], "focal": 4.2647,
                                                            "c": [float(v) for v in side_camera(yaw, pitch)]},
        "neural_resolution": G.neural_rendering_resolution, "image_resolution": G.img_resolution,
        "warping_size": size, "chamfer_opacity_threshold": 0.5}}
    id_rows, ch_rows, wp_rows = [], [], []
    t0 = time.perf_counter()
    for k, v in enumerate(multiview_renders(G, videos, seed, psi, yaw, pitch, cancel)):
        id_rows.append(identity.pair_scores(embed(v["images"])))
        ch_rows.append(chamfer.video_chamfer(v["points"], v["alpha"]))
        front, side = v["cameras"]
        wp_rows.append(warping.video_errors(v["images"], v["depth"], front, side, size))
        if bar is not None:
            bar.update(1)
    report["timings_s"] = {"multiview": round(time.perf_counter() - t0, 1)}
    idr = identity.summarise(id_rows)
    idr["backbone"] = embed.name
    idr["faces_detected"] = (f"{embed.detected}/{embed.images}" if embed.name.startswith("dlib")
                             else "n/a (whole image, as the official script)")
    idr["per_pair"] = np.mean([r["cosine"] for r in id_rows], 0).tolist()
    report["identity"] = idr
    chr_ = chamfer.summarise(ch_rows)
    d = np.array(ch_rows, np.float64)
    chr_["per_pair"] = [float(np.nanmean(d[:, j])) if (~np.isnan(d[:, j])).any() else None for j in range(d.shape[1])]
    report["chamfer"] = chr_
    wpr = warping.summarise(wp_rows)
    e = np.array(wp_rows, np.float64)[..., 0]
    wpr["per_pair"] = [float(np.nanmean(e[:, j])) if (~np.isnan(e[:, j])).any() else None for j in range(e.shape[1])]
    wpr["official_quirks"] = True
    report["warping"] = wpr
    # FVD
    if i3d_net is None or data is None:
        why = []
        if i3d_net is None:
            why.append("no I3D weights (--i3d FILE: the standard Kinetics-400 I3D, i3d_pretrained_400.pt)")
        if data is None:
            why.append("no real clips (--data DIR)")
        report["fvd"] = {"skipped": "; ".join(why)}
    else:
        from .fvd import file_digest

        t0 = time.perf_counter()
        if bar is not None:
            bar.set_description("FVD")
            bar.unit = "clip"
            bar.reset(total=fvd_videos * 2)
        report["fvd"] = compute_fvd(G, data, i3d_net, fvd_videos, seed,
                                    progress=(lambda i, n: (setattr(bar, "total", n), bar.update(i - bar.n)))
                                    if bar is not None else None, cancel=cancel)
        report["fvd"]["weights_sha256"] = file_digest(i3d)
        report["timings_s"]["fvd"] = round(time.perf_counter() - t0, 1)
    # geometry
    if data is not None and (Path(data) / "groundtruth").is_dir():
        from ..invert import InversionConfig
        from .geometry import evaluate_geometry

        t0 = time.perf_counter()
        if bar is not None:
            bar.set_description("geometry (reconstructing GT frames)")
            bar.unit = "clip"
            bar.reset(total=geo_clips)
        report["geometry"] = evaluate_geometry(
            G, data, max_clips=geo_clips, inversion=InversionConfig(w_steps=geo_steps, pti_steps=0, w_avg_samples=500),
            progress=(lambda i, n: (setattr(bar, "total", n), bar.update(i - bar.n))) if bar is not None else None,
            cancel=cancel)
        report["timings_s"]["geometry"] = round(time.perf_counter() - t0, 1)
    else:
        report["geometry"] = {"skipped": "no synthetic ground truth (--data DIR made by `pv3d data synth`)"}
    report["timings_s"]["total"] = round(time.perf_counter() - t_start, 1)
    return report
