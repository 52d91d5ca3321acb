"""`pv3d data prepare`: real talking-head videos → the official processed-VoxCeleb layout.

Per frame: dlib detection and 68 landmarks (the largest face); landmarks smoothed over time
(Gaussian, sigma 1.5 frames) before the crop is placed with the training framing rule, and the
camera angles from the PnP fit smoothed the same way (see :mod:`pv3d_core.faces`). Frames without a
usable face are dropped and counted; where they break a video, it is split into clips at the gap
(so every clip is continuous in time, as the two-frame sampler assumes). Every video is checked
for readability before any work is done, so a broken file fails fast with a clear DatasetError.
"""
from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path

from ..files import atomic_write_bytes
from .layout import LIST_FILE, DatasetError, read_video, write_clip, write_list

MIN_CLIP_FRAMES = 2
log = logging.getLogger(__name__)


def _probe(path: Path) -> float:
    """The video's fps; DatasetError when it cannot be opened or decoded."""
    import imageio.v2 as imageio

    if not path.is_file():
        raise DatasetError(f"video not found: {path}")
    try:
        with imageio.get_reader(path, format="ffmpeg") as r:
            fps = float(r.get_meta_data().get("fps") or 25.0)
            r.get_data(0)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DatasetError(f"cannot read video {path}: {msg}") from None
    return fps if fps > 0 and math.isfinite(fps) else 25.0


def _clip_base(path: Path, used: set) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem) or "clip"
    name, k = base, 1
    while name in used:
        k += 1
        name = f"{base}_{k}"
    used.add(name)
    return name


def _segments(kept: list[int]) -> list[tuple[int, int]]:
    """[start, end) positions in ``kept`` of runs of consecutive frame indices."""
    out, start = [], 0
    for j in range(1, len(kept) + 1):
        if j == len(kept) or kept[j] != kept[j - 1] + 1:
            out.append((start, j))
            start = j
    return out


def prepare_videos(videos, output, resolution: int = 256, progress=None, smooth_sigma: float = 1.5,
                   min_face: int = 40, max_frames: int | None = None) -> dict:
    """Prepare ``videos`` into the dataset folder ``output``; returns a summary dict (also written to
    ``output/summary.json``). DatasetError when a video cannot be read or no face is found at all.
    ``progress(video_name, frame, frames)`` follows the face tracking of each video."""
    from ..faces import align_frames

    if not 32 <= int(resolution) <= 1024:
        raise DatasetError(f"crop resolution must be between 32 and 1024, got {resolution}")
    paths = [Path(v) for v in videos]
    if not paths:
        raise DatasetError("no videos given")
    fps_of = {p: _probe(p) for p in paths}           # fail fast on any unreadable file
    root = Path(output)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    used: set = set()
    lst = root / LIST_FILE
    existing = [ln.strip()[:-4] for ln in lst.read_text().splitlines() if ln.strip()] if lst.is_file() else []
    used.update(existing)
    names, per_video = [], []
    totals = {"frames": 0, "kept": 0, "dropped": 0, "short_segments_dropped": 0}
    for p in paths:
        frames = read_video(p)
        if max_frames:
            frames = frames[:max_frames]
        cb = (lambda i, n, name=p.name: progress(name, i, n)) if progress else None
        tr = align_frames(frames, size=int(resolution), sigma=smooth_sigma, min_face=min_face, progress=cb)
        base = _clip_base(p, used)
        clips = []
        segs = _segments(tr["kept"])
        short = 0
        for k, (a, b) in enumerate(segs):
            if b - a < MIN_CLIP_FRAMES:
                short += b - a
                continue
            name = base if len(segs) == 1 else f"{base}_{k:03d}"
            used.add(name)
            write_clip(root, name, tr["crops"][a:b], tr["cameras"][a:b], fps=fps_of[p])
            clips.append(name)
        names.extend(clips)
        yaws = [math.degrees(y) for y, _ in tr["poses"]]
        pitches = [math.degrees(q) for _, q in tr["poses"]]
        reasons: dict = {}
        for r in tr["dropped"].values():
            reasons[r] = reasons.get(r, 0) + 1
        per_video.append({"video": str(p), "frames": int(len(frames)), "kept": len(tr["kept"]),
                          "dropped": len(tr["dropped"]), "drop_reasons": reasons, "clips": clips,
                          "yaw_deg": [round(min(yaws), 1), round(max(yaws), 1)] if yaws else None,
                          "pitch_deg": [round(min(pitches), 1), round(max(pitches), 1)] if pitches else None})
        totals["frames"] += len(frames)
        totals["kept"] += len(tr["kept"]) - short
        totals["dropped"] += len(tr["dropped"])
        totals["short_segments_dropped"] += short
        log.info("%s: %d of %d frames with a face, %d clip(s)", p.name, len(tr["kept"]), len(frames), len(clips))
    if not names and not existing:
        raise DatasetError(f"no face was found in any frame of {len(paths)} video(s); nothing was written")
    write_list(root, existing + [n for n in names if n not in existing])
    summary = {"output": str(root), "videos": len(paths), "clips_written": len(names), "clips": names,
               "frames_total": totals["frames"], "frames_kept": totals["kept"],
               "frames_without_face": totals["dropped"], "frames_in_too_short_segments": totals["short_segments_dropped"],
               "resolution": int(resolution), "seconds": round(time.perf_counter() - t0, 2), "per_video": per_video}
    import json

    atomic_write_bytes(root / "summary.json", json.dumps(summary, indent=1).encode())
    return summary
