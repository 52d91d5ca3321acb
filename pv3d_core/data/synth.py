"""Synthetic talking heads: procedural 3D heads, sphere-traced, with ground-truth depth and geometry.

Each clip is one identity (a :class:`Identity`: head proportions, nose, ears, hair style and colour,
skin tone, eye colour, brows, lips, background) whose face moves over time (an :class:`Expression`
per frame: eye blinks, mouth opening and lip shape, brow raise), seen by a near-frontal camera
trajectory in the EG3D convention (yaw within about ±35°, pitch within about ±20°; head turns are
carried by the camera, as in processed real talking-head data).

The geometry, materials and renderer are :mod:`.heads` (batched PyTorch); this module draws
identities and tracks for clips and writes datasets. :mod:`.head_codes` draws the same family from
Gaussian codes instead (the default model's teacher).

Outputs follow the official layout (:mod:`.layout`) plus ``groundtruth/``:
``<clip>.npz`` (``depth``: distance along the unit ray, 0 on background, float32; ``mask``: uint8),
``<clip>.json`` (identity and per-frame expressions: the exact SDF can be rebuilt with
:func:`head_sdf`), ``<clip>.ply`` (the identity's neutral surface, marching cubes of the SDF) and
``depth.json`` (the depth convention).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from .. import files
from ..render import cameras as cams
from . import heads, layout

# ---------------------------------------------------------------------------- parameters

SKIN_TONES = np.array([[0.96, 0.80, 0.69], [0.92, 0.72, 0.58], [0.85, 0.64, 0.50], [0.76, 0.54, 0.40],
                       [0.62, 0.42, 0.30], [0.47, 0.31, 0.21], [0.98, 0.85, 0.76]], np.float32)
HAIR_COLOURS = np.array([[0.08, 0.06, 0.05], [0.22, 0.14, 0.08], [0.40, 0.26, 0.14], [0.65, 0.48, 0.26],
                         [0.85, 0.72, 0.45], [0.55, 0.20, 0.08], [0.60, 0.60, 0.62], [0.15, 0.15, 0.18]],
                        np.float32)
EYE_COLOURS = np.array([[0.30, 0.18, 0.08], [0.15, 0.35, 0.60], [0.25, 0.45, 0.25], [0.45, 0.30, 0.12],
                        [0.20, 0.20, 0.25]], np.float32)


@dataclass
class Identity:
    skin: tuple
    hair: tuple
    eyes: tuple
    lips: tuple
    background: tuple
    background2: tuple
    head_w: float = 1.0
    head_h: float = 1.0
    head_d: float = 1.0
    jaw_w: float = 1.0
    jaw_len: float = 1.0
    nose_len: float = 1.0
    nose_w: float = 1.0
    eye_sep: float = 0.075
    eye_y: float = 0.045
    eye_size: float = 1.0
    mouth_w: float = 0.045
    mouth_y: float = -0.115
    ear_size: float = 1.0
    hair_style: int = 0          # 0 short, 1 long, 2 very short (buzz), 3 fringe
    hairline: float = 0.15
    brow_thick: float = 1.0

    @staticmethod
    def sample(rng: np.random.Generator) -> "Identity":
        skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.94, 1.05, 3)
        hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.85, 1.15, 3)
        eyes = EYE_COLOURS[rng.integers(len(EYE_COLOURS))] * rng.uniform(0.85, 1.15, 3)
        lips = np.clip(skin * np.array([0.85, 0.55, 0.55]) + rng.uniform(-0.04, 0.06), 0, 1)
        hue = rng.uniform(0, 1)
        bg = _hsv(hue, rng.uniform(0.15, 0.55), rng.uniform(0.45, 0.9))
        bg2 = np.clip(bg * rng.uniform(0.7, 0.95), 0, 1)
        return Identity(
            skin=_tup(np.clip(skin, 0, 1)), hair=_tup(np.clip(hair, 0, 1)), eyes=_tup(np.clip(eyes, 0, 1)),
            lips=_tup(lips), background=_tup(bg), background2=_tup(bg2),
            head_w=rng.uniform(0.92, 1.08), head_h=rng.uniform(0.94, 1.06), head_d=rng.uniform(0.95, 1.05),
            jaw_w=rng.uniform(0.85, 1.12), jaw_len=rng.uniform(0.9, 1.1), nose_len=rng.uniform(0.8, 1.25),
            nose_w=rng.uniform(0.8, 1.3), eye_sep=rng.uniform(0.068, 0.082), eye_y=rng.uniform(0.035, 0.055),
            eye_size=rng.uniform(0.9, 1.12), mouth_w=rng.uniform(0.038, 0.052), mouth_y=rng.uniform(-0.125, -0.105),
            ear_size=rng.uniform(0.85, 1.15), hair_style=int(rng.integers(4)), hairline=rng.uniform(0.12, 0.17),
            brow_thick=rng.uniform(0.7, 1.4))


@dataclass
class Expression:
    blink: float = 0.0      # 0 open .. 1 closed
    mouth: float = 0.0      # 0 closed .. 1 wide open
    smile: float = 0.0      # -1 .. 1, lip corners
    brow: float = 0.0       # 0 rest .. 1 raised


def _tup(a) -> tuple:
    return tuple(float(x) for x in a)


def _hsv(h, s, v) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32)


def expression_track(rng: np.random.Generator, n_frames: int, fps: float = 25.0) -> list[Expression]:
    """Per-frame expressions of a talking clip: blinks, speech-like mouth motion, brow raises."""
    t = np.arange(n_frames) / fps
    # speech: a few syllable-rate sinusoids, rectified; pauses where the envelope is low
    mouth = np.zeros(n_frames)
    for _ in range(3):
        f = rng.uniform(1.5, 4.5)
        mouth += rng.uniform(0.3, 0.7) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    env = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 2 * np.pi))
    mouth = np.clip(mouth * env * rng.uniform(0.5, 0.9), 0, 1)
    smile = np.clip(rng.uniform(-0.2, 0.6) + 0.3 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t
                                                            + rng.uniform(0, 6.3)), -1, 1)
    brow = np.clip(0.5 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t + rng.uniform(0, 6.3))
                   + rng.uniform(-0.2, 0.2), 0, 1)
    # blinks: ~one per 0.7-1.5 s, 5 frames each (close, hold, open)
    blink = np.zeros(n_frames)
    start = rng.uniform(-10, 20)
    while start < n_frames:
        for k, v in enumerate((0.5, 1.0, 1.0, 0.6, 0.2)):
            i = int(round(start)) + k
            if 0 <= i < n_frames:
                blink[i] = max(blink[i], v)
        start += rng.uniform(0.7, 1.5) * fps
    return [Expression(float(b), float(m), float(s), float(w)) for b, m, s, w in zip(blink, mouth, smile, brow)]


def camera_track(rng: np.random.Generator, n_frames: int, fps: float = 25.0) -> np.ndarray:
    """(n, 25) near-frontal cameras: a slowly moving head pose, yaw within ±35°, pitch within ±20°."""
    t = np.arange(n_frames) / fps
    yaw0, pitch0 = rng.uniform(-0.4, 0.4), rng.uniform(-0.18, 0.18)
    yaw = yaw0 + rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * rng.uniform(0.15, 0.6) * t + rng.uniform(0, 6.3))
    pitch = pitch0 + rng.uniform(0.02, 0.1) * np.sin(2 * np.pi * rng.uniform(0.15, 0.6) * t + rng.uniform(0, 6.3))
    yaw = np.clip(yaw, -math.radians(35), math.radians(35))
    pitch = np.clip(pitch, -math.radians(20), math.radians(20))
    return np.stack([cams.pack(cams.orbit_cam2world(float(y), float(p), cams.DEFAULT_RADIUS, cams.DEFAULT_PIVOT),
                               cams.DEFAULT_FOCAL) for y, p in zip(yaw, pitch)]).astype(np.float32)


# ---------------------------------------------------------------------------- geometry and rendering
# (pv3d_core.data.heads: the one implementation, batched in PyTorch)

def head_vector(ident: Identity, expr: Expression | None = None) -> torch.Tensor:
    """The (N_PARAMS,) parameter vector of :mod:`.heads` for an identity and expression."""
    d = asdict(ident)
    d.update(asdict(expr or Expression()))
    style = int(d.pop("hair_style"))
    d["hair_long"], d["hair_fringe"], d["hair_buzz"] = float(style == 1), float(style == 3), float(style == 2)
    v = torch.zeros(heads.N_PARAMS)
    for name, col in heads.PARAMS.items():
        v[col] = torch.as_tensor(d[name], dtype=torch.float32)
    return v


def head_sdf(points: np.ndarray, ident: Identity, expr: Expression | None = None) -> np.ndarray:
    """Signed distance (scene units) of points (N, 3) to the head surface; negative inside."""
    p = torch.from_numpy(np.asarray(points, np.float32).reshape(-1, 3))
    h = heads.HeadBatch(head_vector(ident, expr)[None].expand(len(p), -1))
    with torch.no_grad():
        return heads.sdf(p, h).numpy()


def render_head(ident: Identity, expr: Expression, camera: np.ndarray, res: int = 128, ssaa: int = 2) -> dict:
    """Render one frame: ``image`` (res, res, 3) uint8, ``depth`` (distance along the ray, 0 on the
    background) and ``mask`` (res, res) float32 in [0, 1], supersampled ``ssaa``² per pixel."""
    c = torch.from_numpy(np.asarray(camera, np.float32).reshape(1, 25))
    out = heads.render(heads.HeadBatch(head_vector(ident, expr)[None]), c, res, ssaa)
    img = (out["image"][0].numpy() * 255 + 0.5).astype(np.uint8)
    return {"image": img, "depth": out["depth"][0].numpy(), "mask": out["mask"][0].numpy()}


def neutral_mesh(ident: Identity, grid: int = 96):
    """The identity's neutral surface as a trimesh (marching cubes of the SDF, scene units)."""
    import trimesh
    from skimage.measure import marching_cubes

    lo, hi = np.array([-0.3, -0.45, -0.35]), np.array([0.3, 0.4, 0.35])
    axes = [np.linspace(lo[k], hi[k], grid, dtype=np.float32) for k in range(3)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    vol = np.concatenate([head_sdf(pts[s:s + 200_000], ident) for s in range(0, len(pts), 200_000)])
    vol = vol.reshape(grid, grid, grid)
    spacing = (hi - lo) / (grid - 1)
    v, f, _, _ = marching_cubes(vol, 0.0, spacing=tuple(spacing))
    return trimesh.Trimesh(v + lo, f, process=False)


# ---------------------------------------------------------------------------- datasets

def clip_name(i: int) -> str:
    return f"synth_{i:05d}"


def clip_rng(seed: int, i: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(i), 0x5EED]))


def synthesize_clip(root, i: int, n_frames: int, res: int, seed: int, meshes: bool = True) -> dict:
    rng = clip_rng(seed, i)
    ident = Identity.sample(rng)
    exprs = expression_track(rng, n_frames)
    camtrack = camera_track(rng, n_frames)
    frames, depth, mask = [], [], []
    for k in range(0, n_frames, 8):     # a few frames per call: the renderer is batched
        v = torch.stack([head_vector(ident, e) for e in exprs[k:k + 8]])
        out = heads.render(heads.HeadBatch(v), torch.from_numpy(camtrack[k:k + 8]), res)
        frames += list((out["image"].numpy() * 255 + 0.5).astype(np.uint8))
        depth += list(out["depth"].numpy())
        mask += list(out["mask"].numpy())
    root = Path(root)
    name = clip_name(i)
    layout.write_clip(root, name, np.stack(frames), camtrack)
    gt = root / "groundtruth"
    gt.mkdir(parents=True, exist_ok=True)
    import io as _io

    buf = _io.BytesIO()
    np.savez_compressed(buf, depth=np.stack(depth), mask=(np.stack(mask) * 255).round().astype(np.uint8))
    files.atomic_write_bytes(gt / f"{name}.npz", buf.getvalue())
    meta = {"identity": asdict(ident), "expressions": [asdict(e) for e in exprs], "seed": seed, "index": i}
    files.atomic_write_bytes(gt / f"{name}.json", json.dumps(meta).encode())
    if meshes:
        mesh = neutral_mesh(ident)
        files.atomic_write_bytes(gt / f"{name}.ply", mesh.export(file_type="ply"))
    return {"name": name, "frames": n_frames}


def load_groundtruth(root, name: str) -> dict:
    """Depth (float32, distance along the unit ray), mask (float32 0..1), identity and expressions."""
    gt = Path(root) / "groundtruth"
    with np.load(gt / f"{name}.npz") as z:
        depth = z["depth"].astype(np.float32)
        mask = z["mask"].astype(np.float32) / (255.0 if z["mask"].dtype == np.uint8 else 1.0)
    meta = json.loads((gt / f"{name}.json").read_text())
    ident = Identity(**{f.name: meta["identity"][f.name] for f in fields(Identity)})
    exprs = [Expression(**e) for e in meta["expressions"]]
    return {"depth": depth, "mask": mask, "identity": ident, "expressions": exprs}


def _work(job):
    root, i, n_frames, res, seed, meshes = job
    torch.set_num_threads(1)
    return synthesize_clip(root, i, n_frames, res, seed, meshes)


def synthesize_dataset(output, n_clips: int, n_frames: int = 32, res: int = 128, seed: int = 0,
                       workers: int | None = None, progress=None, meshes: bool = True,
                       cancel=None) -> dict:
    """Write ``n_clips`` synthetic talking-head clips into ``output`` (official layout + ground truth).

    Clips already complete in ``output`` (same seed) are kept, so an interrupted run resumes.
    Deterministic: clip i depends only on (seed, i, n_frames, res). ``progress(done, total)`` is
    called with the clips done so far (those kept from an earlier run count as done).
    """
    import time
    from concurrent.futures import ProcessPoolExecutor

    if n_clips < 1 or n_frames < 2:
        raise ValueError("need at least one clip of two frames")
    root = Path(output)
    files.check_writable(root / "summary.json")
    summary_path = root / "summary.json"
    old = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    same = old.get("seed") == seed and old.get("frames") == n_frames and old.get("res") == res
    todo = [i for i in range(n_clips)
            if not (same and (root / "groundtruth" / f"{clip_name(i)}.json").is_file()
                    and (root / layout.VIDEO_DIR / f"{clip_name(i)}.mp4").is_file())]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    # the summary first (without the list), so a resumed run knows the settings
    files.atomic_write_bytes(summary_path, json.dumps({"source": "synthetic talking heads", "seed": seed,
                                                        "frames": n_frames, "res": res}).encode())
    t0 = time.perf_counter()
    jobs = [(str(root), i, n_frames, res, seed, meshes) for i in todo]
    done = n_clips - len(todo)
    if progress:
        progress(done, n_clips)
    if workers == 1:
        for j in jobs:
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt
            _work(j)
            done += 1
            if progress:
                progress(done, n_clips)
    else:
        with ProcessPoolExecutor(workers) as ex:
            for _ in ex.map(_work, jobs):
                done += 1
                if progress:
                    progress(done, n_clips)
    names = [clip_name(i) for i in range(n_clips)]
    layout.write_list(root, names)
    files.atomic_write_bytes(root / "groundtruth" / "depth.json",
                              json.dumps({"kind": "distance", "background": 0.0,
                                          "note": "distance along the unit camera ray, scene units"}).encode())
    summary = {"source": "synthetic talking heads", "seed": seed, "frames": n_frames, "res": res,
               "clips": n_clips, "rendered_now": len(todo), "seconds": round(time.perf_counter() - t0, 1),
               "workers": workers, "folder": str(root)}
    files.atomic_write_bytes(summary_path, json.dumps(summary, indent=1).encode())
    return summary
