"""The official processed-VoxCeleb layout, which every data source of ours writes and one loader reads.

```
DIR/recrop_faces/<clip>.mp4                 the face-cropped clip
DIR/smoothed_camera2world/<clip>.json       [[frame_name, [25 floats]], ...] one entry per frame
DIR/voxceleb.list                           clip file names (<clip>.mp4), one per line
```
Extra, ours: ``DIR/groundtruth/`` (synthetic data: depth, geometry) and ``DIR/summary.json``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .. import files
from ..errors import DatasetError

VIDEO_DIR = "recrop_faces"
CAMERA_DIR = "smoothed_camera2world"
LIST_FILE = "voxceleb.list"


def write_video(path: str | os.PathLike, frames, fps: float = 25.0, quality: int = 9) -> None:
    """Write uint8 frames (T, H, W, 3) as an h264 mp4, atomically (the exporter's encoder)."""
    from ..export import write_mp4

    write_mp4(path, frames, fps=fps, quality=quality)


#: the most decoded video read into memory at once (uint8 RGB): 4 GiB, e.g. 3 minutes of 1080p at 25 fps
MAX_VIDEO_BYTES = 4 << 30


def read_video(path: str | os.PathLike, max_frames: int | None = None,
               max_bytes: int = MAX_VIDEO_BYTES) -> np.ndarray:
    """The frames (at most ``max_frames``) of a video as uint8 (T, H, W, 3); a clear error when it
    cannot be decoded, or when its decoded frames would exceed ``max_bytes``."""
    import imageio.v2 as imageio

    path = Path(path)
    if not path.exists():
        raise DatasetError(f"video not found: {path}")
    if not path.is_file():
        raise DatasetError(f"{path} is not a regular file, so not a video")
    frames, size = [], 0
    try:
        with imageio.get_reader(path, format="ffmpeg") as r:
            for f in r:
                frames.append(np.asarray(f)[..., :3])
                size += frames[-1].nbytes
                if max_frames and len(frames) >= max_frames:
                    break
                if size > max_bytes:
                    raise DatasetError(f"video {path} decodes to more than {max_bytes / 2 ** 30:.0f} GiB "
                                       f"({len(frames)} frames of {f.shape[1]}x{f.shape[0]} so far); use fewer "
                                       "frames (--max-frames) or a smaller video")
    except DatasetError:
        raise
    except Exception as e:  # imageio raises several types for broken files
        raise DatasetError(f"cannot decode video {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not frames:
        raise DatasetError(f"video {path} has no frames")
    return np.stack(frames)


def write_cameras(path: str | os.PathLike, cameras, frame_names=None) -> None:
    cameras = np.asarray(cameras, dtype=np.float64)
    if cameras.ndim != 2 or cameras.shape[1] != 25:
        raise ValueError(f"cameras must be (T, 25), got {cameras.shape}")
    names = frame_names or [f"{i:05d}.png" for i in range(len(cameras))]
    entries = [[n, [float(v) for v in c]] for n, c in zip(names, cameras)]
    files.atomic_write_bytes(path, json.dumps(entries).encode())


def read_cameras(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"camera file not found: {path}")
    try:
        entries = json.loads(path.read_text())
        cams = np.array([e[1] for e in entries], dtype=np.float32)
    except Exception:
        raise DatasetError(f"camera file {path} is not a list of [frame_name, [25 floats]]") from None
    if cams.ndim != 2 or cams.shape[1] != 25 or len(cams) == 0:
        raise DatasetError(f"camera file {path} must hold one 25-vector per frame, got shape {cams.shape}")
    return cams


def write_clip(root: str | os.PathLike, name: str, frames, cameras, fps: float = 25.0) -> None:
    """Write one clip (video + cameras) into the layout; the list is written by :func:`write_list`."""
    root = Path(root)
    if len(frames) != len(cameras):
        raise ValueError(f"{len(frames)} frames but {len(cameras)} cameras")
    write_video(root / VIDEO_DIR / f"{name}.mp4", frames, fps=fps)
    write_cameras(root / CAMERA_DIR / f"{name}.json", cameras)


def write_list(root: str | os.PathLike, names) -> None:
    files.atomic_write_bytes(Path(root) / LIST_FILE, "".join(f"{n}.mp4\n" for n in names).encode())


def list_clips(root: str | os.PathLike) -> list[str]:
    """Clip names (without .mp4) of a dataset folder, validated; DatasetError says what is wrong."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    lst = root / LIST_FILE
    if lst.is_file():
        names = [ln.strip() for ln in lst.read_text().splitlines() if ln.strip()]
    elif (root / VIDEO_DIR).is_dir():
        names = sorted(p.name for p in (root / VIDEO_DIR).glob("*.mp4"))
    else:
        raise DatasetError(
            f"{root} is not a PV3D dataset: expected {LIST_FILE} or {VIDEO_DIR}/*.mp4 with "
            f"{CAMERA_DIR}/*.json (make one with `pv3d data synth` or `pv3d data prepare`)")
    names = [os.path.basename(n)[:-4] if n.endswith(".mp4") else os.path.basename(n) for n in names]
    if not names:
        raise DatasetError(f"dataset folder {root} lists no clips")
    missing = [n for n in names if not (root / CAMERA_DIR / f"{n}.json").is_file()
               or not (root / VIDEO_DIR / f"{n}.mp4").is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} of {len(names)} clips in {root} lack a video or a camera file "
                           f"(first: {missing[0]})")
    return names
