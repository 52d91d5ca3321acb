"""Portrait pipelines: a photo or a video becomes an animated 3D portrait.

- :func:`prepare_and_invert`: photo → face (largest), training crop, camera → the model's portrait
  encoder when it has one (a first result in a forward pass; :mod:`pv3d_core.encoder`), else the
  mean latent → inversion (w or w+, then PTI), handing out its current state between steps
  (``on_state``, :mod:`pv3d_core.live`) for a live preview;
- :func:`animate`: an inverted portrait driven by a motion seed over the timeline, fixed or orbiting;
- :func:`reconstruct_video`: a talking-head video → per-frame crops and cameras → one appearance
  latent, a motion code and per-frame timestamps (+ PTI) → re-rendered at the input and new views;
- motion editing of a reconstruction: :func:`remotion` (another motion seed), :func:`transfer_motion`
  (another reconstruction's motion), :func:`retime` (another speed).

Every long step reports progress through ``progress(stage, step, total, loss)`` and stops with
:class:`pv3d_core.errors.Cancelled` when ``cancel`` (a threading.Event) is set. The CLI
(:mod:`pv3d_core.cli.portraits`) and the viewer only call these.
"""
from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .export import Cancelled, ClipSpec, clip_settings, render_clip, write_mp4
from .fit_files import save_portrait
from .invert import InversionConfig, InversionResult, invert, invert_video
from .live import OnState
from .pipeline import FrameRenderer, RenderSettings
from .render import cameras

Progress = Callable[[str, int, int, float], None]


@dataclass
class PortraitConfig:
    """``inversion`` None: :class:`InversionConfig`'s defaults without an encoder,
    :meth:`InversionConfig.after_encoder` with one. ``encoder``: "auto" (the file beside the model,
    :func:`pv3d_core.paths.encoder_for`, when it was trained for these weights), a path, or None (always
    optimise from the mean latent)."""
    inversion: InversionConfig | None = None
    min_face: int = 40
    perceptual: bool = True        # use the image discriminator's features when one is given
    encoder: str | None = "auto"
    overrides: dict = field(default_factory=dict)   # InversionConfig fields set over either default

    def inversion_for(self, has_start: bool, video: bool = False) -> InversionConfig:
        if self.inversion is not None:
            base = self.inversion
        else:
            base = InversionConfig.after_encoder(video=video) if has_start else InversionConfig()
        return replace(base, **self.overrides)


@dataclass
class Portrait:
    """An inverted photo: render it with :meth:`renderer`, save it with :meth:`save`."""
    ws: torch.Tensor
    generator: torch.nn.Module
    camera: np.ndarray                     # (25,) the photo's camera
    crop: np.ndarray                       # (R, R, 3) uint8 target the model was fitted to
    transform: dict                        # crop → photo transform, pose, faces found
    metrics: dict
    notes: list = field(default_factory=list)
    inversion: InversionResult | None = None
    timings: dict = field(default_factory=dict)

    @property
    def yaw_pitch(self) -> tuple[float, float]:
        pivot = tuple(self.generator.rendering_kwargs.get("avg_camera_pivot", cameras.DEFAULT_PIVOT))
        yaw, pitch, _ = cameras.yaw_pitch_of(self.camera, pivot)
        return yaw, pitch

    def renderer(self, device=None) -> FrameRenderer:
        r = FrameRenderer(self.generator, device)
        r.set_appearance(self.ws)
        return r

    def settings(self, **kw) -> RenderSettings:
        """Render settings at the photo's camera (t = 0 is the photo itself); ``kw`` overrides."""
        yaw, pitch = self.yaw_pitch
        return RenderSettings(**{"yaw": yaw, "pitch": pitch, **kw})

    def save(self, path, extra_meta: dict | None = None) -> Path:
        res = self.inversion or InversionResult(ws=self.ws, generator=self.generator, camera=self.camera,
                                                metrics=self.metrics)
        meta = {"crop_transform": self.transform, "notes": self.notes, "timings": self.timings, **(extra_meta or {})}
        return save_portrait(path, res, extra_meta=meta)


def load(path, device="cpu") -> Portrait:
    """A saved portrait (see :meth:`Portrait.save`)."""
    from .fit_files import load_portrait

    G, ws, meta = load_portrait(path, device=device)
    cam = np.asarray(meta.get("camera", cameras.frontal()), dtype=np.float32)
    return Portrait(ws=ws, generator=G, camera=cam, crop=np.zeros((0, 0, 3), np.uint8),
                    transform=meta.get("crop_transform", {}), metrics=meta.get("metrics", {}),
                    notes=list(meta.get("notes", [])))


def image_to_tensor(img: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 (H, W, 3) → (1, 3, R, R) in [-1, 1], resized with antialiasing."""
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 127.5 - 1
    if t.shape[-1] != resolution or t.shape[-2] != resolution:
        t = F.interpolate(t, size=(resolution, resolution), mode="bilinear", align_corners=False,
                          antialias=t.shape[-1] > resolution)
    return t


def _check(cancel):
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled")


def find_encoder(G, which: str | None = "auto"):
    """(encoder or None, note) for ``G``: see :class:`PortraitConfig` ``encoder``."""
    from .encoder import load_encoder_for

    if which is None or which == "none":
        return None, "no encoder asked for: optimising from the mean latent"
    return load_encoder_for(G, None if which == "auto" else which)


def prepare_and_invert(image_path, G, progress: Progress | None = None, cancel: threading.Event | None = None,
                       config: PortraitConfig | InversionConfig | None = None, d_img=None,
                       on_state: OnState | None = None, encoder=None) -> Portrait:
    """Photo (path or uint8 array) → :class:`Portrait`. Raises :class:`pv3d_core.faces.FaceError`
    with a clear message when the photo has no usable face; the largest face is used when there are
    several (``Portrait.notes`` says so).

    With an encoder (``encoder``, or the one ``config.encoder`` finds) the aligned crop's latent comes
    from it in one forward pass: the first ``on_state`` call shows it, before any optimisation step.
    ``Portrait.timings`` holds the seconds of each stage and ``first_result_s`` (photo to first state)."""
    from .faces import align_face

    if isinstance(config, InversionConfig):
        config = PortraitConfig(inversion=config)
    cfg = config or PortraitConfig()
    t_start = time.perf_counter()
    if progress:
        progress("align", 0, 1, 0.0)
    _check(cancel)
    aligned = align_face(image_path, size=G.img_resolution,
                         focal=float(_focal(G)), min_face=cfg.min_face)
    t_align = time.perf_counter() - t_start
    if progress:
        progress("align", 1, 1, 0.0)
    _check(cancel)
    target = image_to_tensor(aligned.crop, G.img_resolution)
    notes = list(aligned.notes)
    timings = {"align_s": t_align}
    if encoder is None:
        encoder, why = find_encoder(G, cfg.encoder)
    else:
        why = "encoder given"
    start = None
    if encoder is not None:
        from .encoder import encode

        t0 = time.perf_counter()
        enc = encode(encoder, target)
        start = enc["ws"]
        timings["encode_s"] = time.perf_counter() - t0
        timings["encoder_pose_deg"] = [math.degrees(enc["yaw"]), math.degrees(enc["pitch"])]
        if progress:
            progress("encoder", 1, 1, 0.0)
    else:
        notes.append(f"{why}; the fit starts from the mean face and takes longer")
    first = {}

    def state(s):
        if "first_result_s" not in first:
            first["first_result_s"] = time.perf_counter() - t_start
        if on_state is not None:
            on_state(s)

    t0 = time.perf_counter()
    res = invert(G, target, aligned.camera, cfg.inversion_for(start is not None),
                 d_img=d_img if cfg.perceptual else None, progress=progress, cancel=cancel, start=start,
                 on_state=state)
    timings.update(res.timings)
    timings.update(invert_s=time.perf_counter() - t0, total_s=time.perf_counter() - t_start, **first)
    res.meta["crop_transform"] = aligned.transform()
    res.meta["start"] = "encoder" if start is not None else "mean latent"
    return Portrait(ws=res.ws, generator=res.generator, camera=res.camera, crop=aligned.crop,
                    transform=aligned.transform(), metrics=dict(res.metrics), notes=notes,
                    inversion=res, timings=timings)


def _focal(G) -> float:
    return float(G.rendering_kwargs.get("focal", cameras.DEFAULT_FOCAL)) if hasattr(G, "rendering_kwargs") \
        else cameras.DEFAULT_FOCAL


# ------------------------------------------------------------------------------------ animation

def animation_settings(portrait: Portrait, motion_seed: int = 0, frames: int = 64, orbit: bool = False,
                       yaw_range: float = math.radians(20), pitch_range: float = math.radians(8),
                       t0: float = 0.0, t1: float = 1.0) -> list[RenderSettings]:
    """Per-frame settings: the timeline from t0 (0 = the photo) with ``motion_seed``, at the photo's
    camera or orbiting around it. The first frame is the photo's view at t0."""
    base = portrait.settings(motion_seed=motion_seed)
    spec = ClipSpec(frames=frames, t0=t0, t1=t1, camera="orbit" if orbit else "fixed",
                    yaw_range=yaw_range, pitch_range=pitch_range)
    return clip_settings(base, spec)


def animate(portrait: Portrait, output=None, motion_seed: int = 0, frames: int = 64, orbit: bool = False,
            fps: float = 25.0, progress: Progress | None = None, cancel: threading.Event | None = None,
            **kw):
    """Render the animated portrait; writes an mp4 (atomically) when ``output`` is given, else
    returns the frames (uint8, (T, H, W, 3))."""
    if frames < 1:
        raise ValueError("an animation needs at least one frame")
    renderer = portrait.renderer()
    settings = animation_settings(portrait, motion_seed, frames, orbit, **kw)
    prog = (lambda i, n: progress("render", i, n, 0.0)) if progress else None
    it = render_clip(renderer, settings, prog, cancel)
    if output is None:
        return np.stack(list(it))
    return write_mp4(output, it, fps=fps, cancel=cancel)


# ------------------------------------------------------------------------------------ videos

@dataclass
class VideoReconstruction:
    """What :func:`pv3d_core.fit_files.load_reconstruction` gives back, as one object."""
    generator: torch.nn.Module
    ws: torch.Tensor
    z_motion: torch.Tensor
    ts: torch.Tensor
    cameras: np.ndarray
    meta: dict = field(default_factory=dict)

    @staticmethod
    def load(path, device="cpu") -> "VideoReconstruction":
        from .fit_files import load_reconstruction
        from .io import CheckpointError

        G, ex, meta = load_reconstruction(path, device=device)
        if meta.get("kind") != "video":
            raise CheckpointError(f"{path} is a photo portrait, not a video reconstruction "
                                  "(use `pv3d animate` for portraits)")
        return VideoReconstruction(G, ex["ws"], ex["z_motion"], ex["ts"], ex["cameras"].cpu().numpy(), meta)


def render_sequence(G, ws, z_motion, ts, cams, progress: Progress | None = None,
                    cancel: threading.Event | None = None, stage: str = "render"):
    """uint8 frames of (appearance ws, motion code, timestamps, cameras (T, 25) on the orbit)."""
    r = FrameRenderer(G)
    r.set_appearance(ws)
    r.set_motion(z_motion)
    pivot = r.pivot
    n = len(ts)
    for i in range(n):
        _check(cancel)
        yaw, pitch, radius = cameras.yaw_pitch_of(cams[i], pivot)
        focal = float(np.asarray(cams[i])[16])
        s = RenderSettings(t=float(min(1.0, max(0.0, float(ts[i])))), yaw=yaw, pitch=pitch, radius=radius,
                           fov=cameras.focal_to_fov(focal))
        yield r.render(s).numpy()
        if progress:
            progress(stage, i + 1, n, 0.0)


def reconstruct_video(video, G, output_dir, config: InversionConfig | PortraitConfig | None = None, motion_steps: int = 200,
                      max_frames: int | None = None, fps: float | None = None, d_img=None,
                      progress: Progress | None = None, cancel: threading.Event | None = None,
                      novel_yaw: float = math.radians(20), encoder: str | None = "auto") -> dict:
    """Talking-head video → DIR/ with reconstruction.safetensors (load with
    :meth:`VideoReconstruction.load`), aligned.mp4 (the crops fitted), reconstruction.mp4 (re-rendered
    at the input cameras), novel_view.mp4 (re-rendered while the camera sweeps ±``novel_yaw``) and
    summary.json. Returns the summary.

    With the model's portrait encoder (``encoder`` as in :class:`PortraitConfig`) every frame is
    encoded and the mean of their latents is the starting appearance (the encoder reads the canonical
    face whatever the expression, so the mean averages its errors out); ``config`` None then means
    :meth:`InversionConfig.after_encoder` (``video=True``).

    DIR must be absent or empty (an earlier reconstruction there is never mixed with this one). The
    files are written into a temporary sibling folder renamed to DIR once all are complete, so a failed
    or interrupted run leaves DIR as it was."""
    from . import files
    from .data.layout import read_video
    from .errors import ExportError
    from .faces import align_frames
    from .fit_files import save_video_reconstruction

    out = files.check_empty_folder(output_dir, ExportError)      # a clear error before any work
    t_start = time.perf_counter()
    frames = read_video(video, max_frames=max_frames)
    src_fps = fps or _video_fps(video) or 25.0
    prog = (lambda i, n: progress("faces", i, n, 0.0)) if progress else None
    tr = align_frames(frames, size=G.img_resolution, progress=prog, cancel=cancel)
    if len(tr["kept"]) < 2:
        from .faces import FaceError

        raise FaceError(f"{video}: a face was found in {len(tr['kept'])} of {len(frames)} frames; "
                        "at least 2 are needed")
    targets = torch.cat([image_to_tensor(c, G.img_resolution) for c in tr["crops"]])
    t0 = time.perf_counter()
    pcfg = config if isinstance(config, PortraitConfig) else PortraitConfig(inversion=config, encoder=encoder)
    enc, why = find_encoder(G, pcfg.encoder)
    start = None
    if enc is not None:
        from .encoder import encode

        start = torch.cat([encode(enc, targets[i:i + 1])["ws"] for i in range(len(targets))]).mean(0, keepdim=True)
    cfg = pcfg.inversion_for(start is not None, video=True)
    res = invert_video(G, targets, tr["cameras"], cfg, motion_steps=motion_steps, d_img=d_img,
                       progress=progress, cancel=cancel, start=start)
    t_inv = time.perf_counter() - t0
    summary = {"video": str(video), "frames": int(len(frames)), "frames_used": len(tr["kept"]),
               "frames_without_face": len(tr["dropped"]), "metrics": res.metrics,
               "timestamps": [round(float(t), 4) for t in res.ts],
               "reconstruction": str(out / "reconstruction.safetensors"),
               "start": "encoder (mean of the frames' latents)" if start is not None else f"mean latent ({why})"}

    def fill(tmp: Path):
        write_mp4(tmp / "aligned.mp4", tr["crops"], fps=src_fps, cancel=cancel)
        save_video_reconstruction(tmp / "reconstruction.safetensors", res,
                                  extra_meta={"source": str(video), "kept_frames": tr["kept"],
                                              "dropped_frames": {str(k): v for k, v in tr["dropped"].items()},
                                              "fps": src_fps})
        write_mp4(tmp / "reconstruction.mp4",
                  render_sequence(res.generator, res.ws, res.z_motion, res.ts, res.cameras, progress, cancel),
                  fps=src_fps, cancel=cancel)
        sweep = cameras.camera_path("yaw", len(res.ts), yaw_range=novel_yaw, focal=_focal(G))
        write_mp4(tmp / "novel_view.mp4",
                  render_sequence(res.generator, res.ws, res.z_motion, res.ts, sweep, progress, cancel,
                                  stage="novel view"), fps=src_fps, cancel=cancel)
        summary["seconds"] = {"total": time.perf_counter() - t_start, "inversion": t_inv,
                              **{k: round(v, 2) for k, v in res.timings.items()}}
        files.atomic_write_bytes(tmp / "summary.json", json.dumps(summary, indent=1).encode())

    files.atomic_folder(out, fill, ExportError)
    return summary


def _video_fps(path) -> float | None:
    try:
        import imageio.v2 as imageio

        with imageio.get_reader(path, format="ffmpeg") as r:
            return float(r.get_meta_data().get("fps") or 0) or None
    except Exception:
        return None


# ------------------------------------------------------------------------------------ motion editing

def remotion(rec: VideoReconstruction, motion_seed: int, progress=None, cancel=None):
    """(a) The reconstruction re-rendered with another motion seed (same timestamps and cameras)."""
    from .pipeline import seed_latent

    z = seed_latent(10_000_019 + int(motion_seed), rec.generator.motion_dim)
    return render_sequence(rec.generator, rec.ws, z, rec.ts, rec.cameras, progress, cancel)


def transfer_motion(rec: VideoReconstruction, source: VideoReconstruction, progress=None, cancel=None,
                    cameras_from: str = "target"):
    """(b) ``source``'s motion (its motion code and timestamps) on ``rec``'s identity and tuned
    generator; the camera path is ``rec``'s resampled to the source's length (or the source's)."""
    if source.z_motion.shape[-1] != rec.z_motion.shape[-1]:
        from .errors import CheckpointError

        raise CheckpointError("the two reconstructions come from models with different motion sizes")
    n = len(source.ts)
    if cameras_from == "source":
        cams = source.cameras
    else:
        cams = _resample_cameras(rec.cameras, n)
    return render_sequence(rec.generator, rec.ws, source.z_motion.to(rec.ws.device), source.ts, cams,
                           progress, cancel)


def retime(rec: VideoReconstruction, speed: float = 1.0, frames: int | None = None):
    """(c) New (timestamps, cameras) for playing the reconstruction at ``speed`` (0.5 = half speed,
    twice as many frames) or stretched to ``frames`` frames; timestamps and camera angles are
    interpolated over the original frame index."""
    n = len(rec.ts)
    if frames is None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        frames = max(2, int(round(n / speed)))
    if frames < 2:
        raise ValueError("a retimed video needs at least 2 frames")
    x = np.linspace(0, n - 1, frames)
    ts = np.interp(x, np.arange(n), rec.ts.cpu().numpy())
    return torch.from_numpy(ts.astype(np.float32)), _resample_cameras(rec.cameras, frames)


def render_retimed(rec: VideoReconstruction, speed: float = 1.0, frames: int | None = None, progress=None,
                   cancel=None):
    ts, cams = retime(rec, speed, frames)
    return render_sequence(rec.generator, rec.ws, rec.z_motion, ts, cams, progress, cancel)


def _resample_cameras(cams: np.ndarray, n: int) -> np.ndarray:
    cams = np.asarray(cams, dtype=np.float64)
    ang = np.array([cameras.yaw_pitch_of(c) for c in cams])
    x = np.linspace(0, len(cams) - 1, n)
    out = []
    for i in range(n):
        yaw = np.interp(x[i], np.arange(len(cams)), ang[:, 0])
        pitch = np.interp(x[i], np.arange(len(cams)), ang[:, 1])
        radius = np.interp(x[i], np.arange(len(cams)), ang[:, 2])
        out.append(cameras.pack(cameras.orbit_cam2world(yaw, pitch, radius), float(cams[0][16])))
    return np.stack(out)


__all__ = ["PortraitConfig", "Portrait", "load", "prepare_and_invert", "animate", "animation_settings",
           "VideoReconstruction", "reconstruct_video", "render_sequence", "remotion", "transfer_motion",
           "retime", "render_retimed", "image_to_tensor"]
