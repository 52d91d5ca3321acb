"""Frames from user settings: the one rendering path the CLI, the viewer and the exporters share.

settings (seeds, t, camera, psi) -> ws (appearance mapping) + motion code -> tri-planes (cached by
appearance, motion and t) -> volume render -> super-resolution -> frame.

Two seeds blend: ``seed_b`` and ``blend`` mix the appearance latents w of two seeds linearly (after
the mapping network and truncation); ``motion_seed_b`` and ``motion_blend`` mix two motion codes along
the great circle between them (the codes are Gaussian: a straight line would shrink them halfway).
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .host_memory import keep_freed_memory
from .render import cameras, colormap

VIEW_MODES = ("final", "raw", "depth", "normals")


def seed_latent(seed: int, dim: int) -> torch.Tensor:
    """The standard-normal code of an integer seed (numpy RandomState, as StyleGAN tools do); a new tensor
    each call."""
    return torch.from_numpy(_seed_latent(int(seed) % (2 ** 32), int(dim)).copy())


@lru_cache(maxsize=256)
def _seed_latent(seed: int, dim: int) -> np.ndarray:
    # kept: seeding a RandomState takes 0.3 ms, and a scrub asks for its motion seed's code every frame
    z = np.random.RandomState(seed).randn(1, dim).astype(np.float32)
    z.flags.writeable = False
    return z


@dataclass(frozen=True)
class RenderSettings:
    seed: int = 0                  # appearance seed
    motion_seed: int = 0
    t: float = 0.0                 # timestamp in [0, 1]
    yaw: float = 0.0               # radians
    pitch: float = 0.0             # radians
    radius: float = cameras.DEFAULT_RADIUS
    fov: float = field(default_factory=lambda: cameras.focal_to_fov(cameras.DEFAULT_FOCAL))
    psi: float = 0.7               # truncation
    resolution: int | None = None  # output size (None = the model's)
    view: str = "final"            # final | raw | depth | normals
    neural_resolution: int | None = None
    use_cache: bool = True
    seed_b: int | None = None      # blend towards this appearance seed ...
    blend: float = 0.0             # ... by this much (0 = seed, 1 = seed_b)
    motion_seed_b: int | None = None
    motion_blend: float = 0.0

    def camera(self, pivot=cameras.DEFAULT_PIVOT) -> np.ndarray:
        return cameras.OrbitCamera(self.yaw, self.pitch, self.radius, tuple(pivot), self.fov).c()

    def with_(self, **kw) -> "RenderSettings":
        return replace(self, **kw)


@dataclass
class Frame:
    image: torch.Tensor            # (H, W, 3) uint8 on the model's device
    timings: dict                  # stage -> milliseconds
    cached_planes: bool
    settings: RenderSettings
    info: dict = field(default_factory=dict)   # e.g. "depth_range": (near, far) of the depth view

    def numpy(self) -> np.ndarray:
        return self.image.cpu().numpy()


class LRU(OrderedDict):
    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity

    def get_item(self, key):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


class FrameRenderer:
    """Renders frames of one generator, caching mapping outputs and tri-planes.

    :meth:`set_appearance` replaces the seed -> ws mapping with a fixed latent (an inverted portrait).
    """

    def __init__(self, G, device=None, plane_cache: int = 8, channels_last: bool = False):
        self.G = G
        self.device = torch.device(device) if device is not None else next(G.parameters()).device
        if self.device.type == "cpu":
            keep_freed_memory()     # large frames reuse freed pages instead of faulting in fresh ones
        if channels_last:
            # NHWC convolutions: the same maths (about 1e-6), faster super-resolution on a CPU. Opt-in: it
            # sets a flag on G's blocks, which other users of the same G (a portrait fit's copy) would inherit.
            G.set_channels_last(True)
        self.pivot = tuple(G.rendering_kwargs.get("avg_camera_pivot", cameras.DEFAULT_PIVOT))
        self.radius = float(G.rendering_kwargs.get("avg_camera_radius", cameras.DEFAULT_RADIUS))
        self._ws = LRU(64)
        self._planes = LRU(plane_cache)
        self.appearance_ws: torch.Tensor | None = None
        self.motion_code: torch.Tensor | None = None

    # -------------------------------------------------------------- latents
    def conditioning_camera(self) -> torch.Tensor:
        """(1, 25) :func:`pv3d_core.render.cameras.conditioning_camera` of the model."""
        return torch.from_numpy(cameras.conditioning_camera(self.G.rendering_kwargs)).to(self.device).unsqueeze(0)

    def ws_for(self, seed: int, psi: float) -> torch.Tensor:
        if self.appearance_ws is not None:
            return self.appearance_ws.to(self.device)
        key = (int(seed), float(psi))
        ws = self._ws.get_item(key)
        if ws is None:
            z = seed_latent(seed, self.G.z_dim).to(self.device)
            with torch.no_grad():
                ws = self.G.mapping(z, self.conditioning_camera(), truncation_psi=psi)
            self._ws.put(key, ws)
        return ws

    def motion_for(self, motion_seed: int) -> torch.Tensor:
        if self.motion_code is not None:
            return self.motion_code.to(self.device)
        return seed_latent(10_000_019 + int(motion_seed), self.G.motion_dim).to(self.device)

    def appearance(self, s: RenderSettings) -> torch.Tensor:
        """The ws of ``s``: its seed's, blended towards ``seed_b``'s (a fixed appearance ignores both)."""
        ws = self.ws_for(s.seed, s.psi)
        if self.appearance_ws is None and s.seed_b is not None and s.blend:
            ws = torch.lerp(ws, self.ws_for(s.seed_b, s.psi), float(s.blend))
        return ws

    def motion(self, s: RenderSettings) -> torch.Tensor:
        """The motion code of ``s``: its motion seed's, blended towards ``motion_seed_b``'s."""
        z = self.motion_for(s.motion_seed)
        if self.motion_code is None and s.motion_seed_b is not None and s.motion_blend:
            z = slerp(z, self.motion_for(s.motion_seed_b), float(s.motion_blend))
        return z

    def set_motion(self, z_motion: torch.Tensor | None) -> None:
        """Use a fixed motion code (a reconstructed video's) instead of motion seeds; None restores seeds."""
        self.motion_code = z_motion
        self._planes.clear()

    def set_appearance(self, ws: torch.Tensor | None) -> None:
        """Use a fixed appearance latent (e.g. an inverted portrait) instead of seeds; None restores seeds."""
        self.appearance_ws = ws
        self._planes.clear()

    def clear_cache(self) -> None:
        self._ws.clear()
        self._planes.clear()

    # -------------------------------------------------------------- rendering
    def planes_for(self, s: RenderSettings, timings: dict):
        key = (id(self.appearance_ws) if self.appearance_ws is not None else (s.seed, s.seed_b, s.blend), s.psi,
               id(self.motion_code) if self.motion_code is not None else (s.motion_seed, s.motion_seed_b,
                                                                          s.motion_blend), round(float(s.t), 6))
        if s.use_cache:
            p = self._planes.get_item(key)
            if p is not None:
                return p[0], p[1], True
        t0 = time.perf_counter()
        ws = self.appearance(s)
        timings["mapping"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        with torch.no_grad():
            planes = self.G.planes(ws, self.motion(s), torch.tensor([float(s.t)], device=self.device),
                                   noise_mode="const")
        _sync(self.device)
        timings["backbone"] = (time.perf_counter() - t0) * 1e3
        if s.use_cache:
            self._planes.put(key, (ws, planes))
        return ws, planes, False

    def render(self, s: RenderSettings) -> Frame:
        if s.view not in VIEW_MODES:
            raise ValueError(f"unknown view mode {s.view!r}; choose from {', '.join(VIEW_MODES)}")
        if not 0.0 <= s.t <= 1.0:
            raise ValueError(f"timestamp must be within [0, 1], got {s.t}")
        timings: dict = {}
        info: dict = {}
        ws, planes, cached = self.planes_for(s, timings)
        c = torch.from_numpy(s.camera(self.pivot)).to(self.device).unsqueeze(0)
        t0 = time.perf_counter()
        with torch.no_grad():
            if s.view == "final":
                out = self.G.render_planes(planes, ws, c, s.neural_resolution)
                img = out["image"]
            else:
                out = self.render_raw(planes, ws, c, s.neural_resolution)
                img = {"raw": out["image_raw"], "depth": out["depth_vis"], "normals": out["normals"]}[s.view]
                if s.view == "depth":
                    info["depth_range"] = out["depth_range"]
        _sync(self.device)
        timings["render"] = (time.perf_counter() - t0) * 1e3
        res = s.resolution or self.G.img_resolution
        image = to_uint8(img, res)
        return Frame(image=image, timings=timings, cached_planes=cached, settings=s, info=info)

    def render_raw(self, planes, ws, c, neural_resolution=None):
        """The raw neural render, a depth visualisation and normals from depth (no super-resolution).

        The depth view (:mod:`pv3d_core.render.colormap`): turbo over the surface's depth range, near in
        red, far in blue, empty space black; ``depth_range`` gives that range (distance from the camera,
        scene units) for a legend."""
        G = self.G
        out = G.render_planes(planes, ws, c, neural_resolution, deterministic=True, superresolution=False)
        raw, d = out["image_raw"], out["image_depth"]
        res = d.shape[-1]
        near, far = colormap.depth_range(d, out["image_alpha"],
                                         (G.rendering_kwargs["ray_start"], G.rendering_kwargs["ray_end"]))
        depth_vis = colormap.depth_colours(d, out["image_alpha"], near, far)
        depth = d.reshape(1, res * res, 1)
        pts = (out["ray_origins"] + out["ray_directions"] * depth).reshape(1, res, res, 3)
        dx = pts[:, :, 1:] - pts[:, :, :-1]
        dy = pts[:, 1:] - pts[:, :-1]
        n = torch.cross(dx[:, :-1], dy[:, :, :-1], dim=-1)
        n = F.normalize(n, dim=-1)
        n = F.pad(n.permute(0, 3, 1, 2), (0, 1, 0, 1), mode="replicate")
        # world normals -> colours; the face looks towards +z, so it shows bluish
        normals = -n
        return {"image_raw": raw, "depth_vis": depth_vis, "normals": normals, "depth": d, "depth_range": (near, far)}


def render_grid(renderer: "FrameRenderer", seeds=(0, 1, 2, 3), ts=(0.0, 0.5, 1.0), yaws=(-0.35, 0.35),
                psi: float = 0.7, resolution: int | None = None) -> np.ndarray:
    """uint8 grid image: one row per seed (motion seed = seed), one column per (timestamp, yaw) pair.

    The sample grid of training logs and model cards."""
    rows = []
    for s in seeds:
        row = [renderer.render(RenderSettings(seed=s, motion_seed=s, t=float(t), yaw=float(y), psi=psi,
                                              resolution=resolution)).numpy()
               for t in ts for y in yaws]
        rows.append(np.concatenate(row, 1))
    return np.concatenate(rows, 0)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between two codes (rows), their lengths interpolated linearly."""
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-12), b / nb.clamp_min(1e-12)
    omega = torch.arccos((ua * ub).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    u = torch.where(so > 1e-6, (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / so,
                    torch.lerp(ua, ub, t))
    return u * torch.lerp(na, nb, t)


def to_uint8(img: torch.Tensor, resolution: int | None = None) -> torch.Tensor:
    """(1, 3, h, w) in [-1, 1] -> (H, W, 3) uint8, resized (antialiased) to ``resolution``."""
    if resolution is not None and img.shape[-1] != resolution:
        img = F.interpolate(img.float(), size=(resolution, resolution), mode="bilinear", align_corners=False,
                            antialias=resolution < img.shape[-1])
    return ((img[0].permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
