"""Geometry error against the ground truth of synthetic talking heads (``pv3d data synth``).

A generated identity has no ground truth, so the model is asked to *reconstruct* a ground-truth frame:
the frame is projected into the generator (:func:`pv3d_core.invert.invert`, latent optimisation at the
canonical time t = 0 seen from the frame's camera; pivotal tuning off by default so the score measures
the model's own shape prior, not a fine-tuned copy), then the reconstruction's depth is rendered from

- the same camera (``input_view``): how well the fitted 3D shape explains the frame's geometry;
- the camera of the clip's frame farthest in yaw (``other_view``): whether the shape holds from
  another viewpoint. That frame's expression differs (blinks, mouth), so a small part of this error
  is motion, not shape; the eyes and mouth cover a few percent of the face.

Depth convention, shared with the ground truth (``groundtruth/depth.json`` kind "distance"): distance
along the unit camera ray from the camera centre, in scene units; ours is the renderer's
opacity-normalised expected distance at the ground truth's resolution.

Per frame: over ground-truth foreground pixels (mask > 0.5): mean, median and RMS of
|depth − gt|, and the silhouette IoU of rendered opacity > 0.5 vs the mask. Averaged over clips.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import torch

from . import MetricError


def depth_error(pred_depth, gt_depth, gt_mask, pred_alpha=None, threshold: float = 0.5) -> dict:
    """Depth error (scene units) over the ground truth's foreground; silhouette IoU when alpha is given."""
    pred = np.asarray(pred_depth, np.float64)
    gt = np.asarray(gt_depth, np.float64)
    mask = np.asarray(gt_mask, np.float64)
    if pred.shape != gt.shape or gt.shape != mask.shape:
        raise ValueError(f"depth maps must have one shape, got {pred.shape}, {gt.shape}, {mask.shape}")
    fg = (mask > threshold) & (gt > 0)
    if not fg.any():
        raise MetricError("the ground truth frame has no foreground pixels")
    err = np.abs(pred[fg] - gt[fg])
    out = {"mean_abs": float(err.mean()), "median_abs": float(np.median(err)),
           "rmse": float(np.sqrt((err ** 2).mean())), "pixels": int(fg.sum())}
    if pred_alpha is not None:
        sil = np.asarray(pred_alpha, np.float64) > threshold
        out["silhouette_iou"] = float((sil & fg).sum() / max((sil | fg).sum(), 1))
    return out


# ------------------------------------------------------------------------------------ ground truth

def groundtruth_clips(root) -> list[str]:
    """Clip names with ground truth in a synthetic dataset folder; MetricError says what is missing."""
    root = Path(root)
    gt = root / "groundtruth"
    if not root.is_dir():
        raise MetricError(f"dataset folder not found: {root}")
    if not gt.is_dir():
        raise MetricError(f"{root} has no groundtruth/ folder: geometry error needs a synthetic dataset made "
                          f"with `pv3d data synth`")
    conv = gt / "depth.json"
    if conv.is_file():
        kind = json.loads(conv.read_text()).get("kind")
        if kind != "distance":
            raise MetricError(f"{conv} says depth kind {kind!r}; geometry error expects 'distance' "
                              f"(along the unit ray)")
    names = sorted(p.stem for p in gt.glob("*.npz"))
    if not names:
        raise MetricError(f"{gt} holds no <clip>.npz ground truth files")
    return names


def load_clip(root, name: str) -> dict:
    """frames (F, H, W, 3) uint8, cameras (F, 25), depth (F, H, W), mask (F, H, W) in [0, 1]."""
    from ..data import layout

    root = Path(root)
    with np.load(root / "groundtruth" / f"{name}.npz") as z:
        depth = z["depth"].astype(np.float32)
        mask = z["mask"].astype(np.float32)
        if z["mask"].dtype == np.uint8:
            mask /= 255.0
    cams = layout.read_cameras(root / layout.CAMERA_DIR / f"{name}.json")
    frames = layout.read_video(root / layout.VIDEO_DIR / f"{name}.mp4")
    if not (len(frames) == len(cams) == len(depth) == len(mask)):
        raise MetricError(f"clip {name}: {len(frames)} frames, {len(cams)} cameras, {len(depth)} depth maps")
    if not np.isfinite(depth).all():
        raise MetricError(f"clip {name}: ground truth depth has non-finite values")
    return {"frames": frames, "cameras": cams, "depth": depth, "mask": mask}


# ------------------------------------------------------------------------------------ model side

@torch.no_grad()
def render_depth(G, planes, camera, res: int):
    """(depth (res, res), opacity (res, res)) of tri-planes from one camera (deterministic sampling)."""
    c = torch.as_tensor(np.asarray(camera, np.float32), device=planes.device).reshape(1, 25)
    out = G.ray_march(planes, c, res, deterministic=True)
    return out["image_depth"].reshape(res, res).cpu().numpy(), out["image_alpha"].reshape(res, res).cpu().numpy()


def _yaw(c) -> float:
    from ..render import cameras

    return cameras.yaw_pitch_of(c)[0]


def evaluate_geometry(G, root, max_clips: int = 4, frame: int = 0, inversion=None, progress=None,
                      cancel: threading.Event | None = None) -> dict:
    """Reconstruct ``frame`` of up to ``max_clips`` clips and score the depth (see the module doc)."""
    import torch.nn.functional as F

    from ..invert import InversionConfig, invert

    cfg = inversion or InversionConfig(w_steps=150, pti_steps=0)
    names = groundtruth_clips(root)[:max_clips]
    dev = next(G.parameters()).device
    per = {"input_view": [], "other_view": []}
    for k, name in enumerate(names):
        clip = load_clip(root, name)
        i = min(max(frame, 0), len(clip["frames"]) - 1)
        yaws = np.array([_yaw(c) for c in clip["cameras"]])
        j = int(np.argmax(np.abs(yaws - yaws[i])))
        img = torch.from_numpy(clip["frames"][i]).permute(2, 0, 1)[None].float().to(dev) / 127.5 - 1
        img = F.interpolate(img, size=(G.img_resolution,) * 2, mode="bilinear", align_corners=False,
                            antialias=img.shape[-1] > G.img_resolution)
        res = invert(G, img, clip["cameras"][i], cfg, cancel=cancel)
        zm = torch.zeros(1, G.motion_dim, device=dev)
        with torch.no_grad():
            planes = res.generator.planes(res.ws, zm, torch.zeros(1, device=dev), noise_mode="const")
        r = clip["depth"].shape[-1]
        for key, f in (("input_view", i), ("other_view", j)):
            d, a = render_depth(res.generator, planes, clip["cameras"][f], r)
            e = depth_error(d, clip["depth"][f], clip["mask"][f], a)
            e.update({"clip": name, "frame": f, "yaw_deg": float(np.degrees(yaws[f]))})
            per[key].append(e)
        if progress is not None:
            progress(k + 1, len(names))
    out = {"clips": len(names), "frame": frame, "inversion": cfg.to_dict(),
           "depth": "distance along the unit ray, scene units (camera radius 2.7)"}
    for key, rows in per.items():
        out[key] = {m: float(np.mean([r[m] for r in rows])) for m in ("mean_abs", "median_abs", "rmse",
                                                                        "silhouette_iou")}
    out["per_clip"] = per
    return out
