"""Meshes of a moment of a portrait video: density grid -> marching cubes -> coloured binary PLY.

- The density is the OSG decoder's raw σ (before the renderer's softplus(σ − 1)) sampled from the
  tri-planes of (ws, motion code, t) on a cube grid covering the tri-plane box (side ``box_warp``,
  centred at the origin), in chunks so memory stays bounded. By default a coarse pass (every 2nd
  grid point) finds where the surface can be and only there is the grid evaluated exactly (about a
  fifth of the points for a head at 256³; same surface, see :func:`density_grid`); ``--full-grid``
  evaluates everything.
- The surface is scikit-image's marching cubes at ``level`` (default 10 on raw σ, EG3D's shape
  extraction threshold; it sits where the rendered opacity saturates).
- Vertex colours: the decoder's 32 features at each vertex through the generator's ``to_img_raw``
  (a 1×1 modulated conv conditioned on ws[:, 0]), i.e. the raw neural render's colour at that point
  (no super-resolution, no view dependence — the decoder has none).
- Coordinates are the model's world frame in scene units (the camera orbits at radius 2.7 around
  (0, 0, 0.2)): +Y up, the face looks towards +Z, so the mesh opens the right way up, facing the
  viewer, in Blender (Y-up import) and MeshLab. A clip exported frame by frame shares this frame.
- Formats (:func:`write_mesh`, chosen by the file's suffix): binary PLY and OBJ with vertex colours
  (sRGB, as Blender and MeshLab read them; OBJ's colours are the common ``v x y z r g b`` extension),
  and GLB (binary glTF 2.0, +Y up like our world) with smooth normals and ``COLOR_0`` converted to
  linear light as glTF requires, for web viewers (three.js, model-viewer) and Blender.
- A sequence over the timeline (:func:`write_mesh_sequence`): one file per frame in a folder, and an
  ``index.json`` with each frame's file, timestamp t, time in seconds and size.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import torch

from .errors import UsageError
from .export import Cancelled, ExportError, write_atomic
from .files import atomic_folder, atomic_write_text

MESH_FORMATS = ("ply", "obj", "glb")
SEQUENCE_INDEX = "index.json"


def _check(cancel):
    if cancel is not None and cancel.is_set():
        raise Cancelled("mesh extraction cancelled")


def _sigma_at(G, planes, pts):
    """Raw σ at points (1, M, 3), flattened (the generator's density-only path)."""
    return G.density(planes, pts).reshape(-1)


def _grid_points(axis, ix, iy, iz):
    return torch.stack([axis[ix], axis[iy], axis[iz]], -1)[None]


@torch.no_grad()
def density_grid(G, planes, resolution: int = 256, chunk: int = 262_144, progress=None, cancel=None,
                 level: float | None = None, stride: int = 2):
    """Raw σ on a resolution³ grid over the tri-plane box: (grid (R, R, R) float32 indexed [x, y, z], bounds).

    Without ``level`` every grid point is evaluated. With ``level`` (narrow band, what
    :func:`extract_mesh` uses): σ is first evaluated on every ``stride``-th grid point; the cells of
    that coarse grid whose corners straddle ``level``, and their neighbours, are evaluated exactly at
    full resolution; elsewhere σ is the coarse grid's trilinear interpolation, which lies on the same
    side of ``level`` as the exact value wherever no surface passes within a coarse cell. Marching
    cubes then gives the same surface as the full grid, except for parts thinner than ``stride``
    grid steps that no coarse point falls inside (the full grid resolves those poorly as well).
    A head at 256³ evaluates about a fifth of the points.
    """
    if not 16 <= resolution <= 1024:
        raise UsageError(f"grid resolution must be within 16..1024, got {resolution}")
    half = float(G.rendering_kwargs["box_warp"]) / 2
    dev = planes.device
    axis = torch.linspace(-half, half, resolution, device=dev)
    R = resolution
    if level is None or stride <= 1:
        out = np.empty(R ** 3, np.float32)
        n = R ** 3
        for s in range(0, n, chunk):
            _check(cancel)
            idx = torch.arange(s, min(n, s + chunk), device=dev)
            sig = _sigma_at(G, planes, _grid_points(axis, idx // (R * R), (idx // R) % R, idx % R))
            out[s:s + len(idx)] = sig.float().cpu().numpy()
            if progress is not None:
                progress(min(n, s + chunk), n)
        return out.reshape(R, R, R), (-half, half)

    # coarse grid on fine indices 0, stride, 2 stride, ..., and the last index
    cidx = np.unique(np.r_[np.arange(0, R, stride), R - 1])
    nc = len(cidx)
    ct = torch.as_tensor(cidx, device=dev)
    coarse = np.empty(nc ** 3, np.float32)
    n_c = nc ** 3
    # progress: the coarse pass is reported as the first part of the work, the band as the rest
    for s in range(0, n_c, chunk):
        _check(cancel)
        idx = torch.arange(s, min(n_c, s + chunk), device=dev)
        pts = _grid_points(axis, ct[idx // (nc * nc)], ct[(idx // nc) % nc], ct[idx % nc])
        coarse[s:s + len(idx)] = _sigma_at(G, planes, pts).float().cpu().numpy()
    coarse = coarse.reshape(nc, nc, nc)
    above = coarse > level
    # coarse cells (nc-1)³ with corners on both sides of the level, dilated by one cell
    corners = [above[i:nc - 1 + i, j:nc - 1 + j, k:nc - 1 + k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    active = np.logical_or.reduce(corners) & ~np.logical_and.reduce(corners)
    from scipy.ndimage import binary_dilation

    active = binary_dilation(active, np.ones((3, 3, 3), bool))
    # fill everything by trilinear interpolation of the coarse grid (separable, along each axis)
    grid = torch.from_numpy(coarse)
    for ax in range(3):
        pos = np.arange(R, dtype=np.float64)
        j = np.clip(np.searchsorted(cidx, pos, side="right") - 1, 0, nc - 2)
        w = torch.from_numpy(((pos - cidx[j]) / (cidx[j + 1] - cidx[j])).astype(np.float32))
        jt = torch.from_numpy(j)
        a, b = grid.index_select(ax, jt), grid.index_select(ax, jt + 1)
        shape = [1, 1, 1]
        shape[ax] = R
        grid = a + (b - a) * w.reshape(shape)
    grid = grid.numpy()
    # fine points inside active coarse cells (cell c spans fine indices cidx[c]..cidx[c+1])
    # (a fine point on a coarse plane also belongs to the cell below it: a shift by one along each axis)
    low = np.clip(np.searchsorted(cidx, np.arange(R), side="right") - 1, 0, nc - 2)
    fine_mask = active[np.ix_(low, low, low)]
    for ax in range(3):
        prev = fine_mask.copy()
        sl_to = [slice(None)] * 3
        sl_from = [slice(None)] * 3
        sl_to[ax], sl_from[ax] = slice(1, None), slice(None, -1)
        fine_mask[tuple(sl_to)] |= prev[tuple(sl_from)]
    todo = np.flatnonzero(fine_mask.reshape(-1))
    n_f = len(todo)
    total = n_c + n_f
    if progress is not None:
        progress(n_c, total)
    flat = grid.reshape(-1)
    for s in range(0, n_f, chunk):
        _check(cancel)
        idx = torch.as_tensor(todo[s:s + chunk], device=dev)
        sig = _sigma_at(G, planes, _grid_points(axis, idx // (R * R), (idx // R) % R, idx % R))
        flat[todo[s:s + chunk]] = sig.float().cpu().numpy()
        if progress is not None:
            progress(n_c + min(n_f, s + chunk), total)
    return grid, (-half, half)


@torch.no_grad()
def vertex_colours(G, planes, ws, verts: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """uint8 RGBA per vertex: the raw neural colour (decoder features through to_img_raw)."""
    cols = []
    for s in range(0, len(verts), chunk):
        pts = torch.from_numpy(verts[s:s + chunk].astype(np.float32)).to(planes.device)[None]
        rgb = G.point_colours(planes, ws, pts)[0]
        cols.append(((rgb.clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy())
    rgb = np.concatenate(cols) if cols else np.zeros((0, 3), np.uint8)
    return np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], 1)


@torch.no_grad()
def extract_mesh(G, ws, z_motion, t, resolution: int = 256, level: float = 10.0, largest_component: bool = True,
                 colours: bool = True, progress=None, cancel: threading.Event | None = None, planes=None,
                 narrow_band: bool = True):
    """The surface of (ws, motion code, t) as a ``trimesh.Trimesh`` in world coordinates (see module doc)."""
    import trimesh
    from skimage.measure import marching_cubes

    if planes is None:
        planes = G.planes(ws, z_motion, torch.as_tensor([float(t)], device=ws.device), noise_mode="const")

    def grid_progress(i, n):
        if progress is not None:
            progress(int(0.9 * 1000 * i / n), 1000)

    grid, (lo, hi) = density_grid(G, planes, resolution, progress=grid_progress, cancel=cancel,
                                  level=level if narrow_band else None)
    _check(cancel)
    if not (grid.min() < level < grid.max()):
        raise ExportError(f"no surface at density level {level} (density ranges {grid.min():.2f}..{grid.max():.2f}); "
                         f"the model may be untrained, or choose another --level")
    spacing = (hi - lo) / (resolution - 1)
    verts, faces, normals, _ = marching_cubes(grid, level=level, spacing=(spacing,) * 3)
    verts = (verts + lo).astype(np.float32)
    # marching cubes orients faces towards increasing values (inside); flip so normals point outwards
    mesh = trimesh.Trimesh(verts, faces[:, ::-1], process=False)
    if largest_component and len(mesh.faces):
        parts = mesh.split(only_watertight=False)
        if len(parts) > 1:
            mesh = max(parts, key=lambda m: len(m.faces))
    _check(cancel)
    if colours and len(mesh.vertices):
        mesh.visual.vertex_colors = vertex_colours(G, planes, ws, np.asarray(mesh.vertices))
    if progress is not None:
        progress(1000, 1000)
    mesh.metadata.update({"pv3d": {"t": float(t), "level": level, "resolution": resolution,
                                   "frame": "world: +Y up, face towards +Z, scene units"}})
    return mesh


def write_ply(path, mesh) -> Path:
    """Binary PLY (with vertex colours), written to a temporary file and renamed into place."""
    return write_mesh(path, mesh, "ply")


def mesh_format(path, fmt: str | None = None) -> str:
    """The format of ``path`` (its suffix), or ``fmt``; :class:`UsageError` if it is not one we write."""
    f = (fmt or Path(path).suffix.lstrip(".")).lower()
    if f not in MESH_FORMATS:
        raise UsageError(f"mesh format must be one of {', '.join(MESH_FORMATS)} (from the file name's suffix), "
                         f"got {f or 'no suffix'!r}")
    return f


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    x = c.astype(np.float64) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def mesh_bytes(mesh, fmt: str) -> bytes:
    """The file contents of ``mesh`` in ``fmt`` (see the module's notes on colours)."""
    fmt = mesh_format("", fmt)
    if not len(mesh.faces):
        raise ExportError("the mesh is empty; nothing written")
    if fmt == "ply":
        return mesh.export(file_type="ply", encoding="binary")
    if fmt == "obj":
        data = mesh.export(file_type="obj", include_color=True, include_normals=False, include_texture=False)
        return data.encode() if isinstance(data, str) else data
    m = mesh.copy()
    cols = np.asarray(mesh.visual.vertex_colors)
    if cols.size:
        lin = cols.copy()
        lin[:, :3] = np.round(_srgb_to_linear(cols[:, :3]) * 255).astype(np.uint8)
        m.visual.vertex_colors = lin
    return m.export(file_type="glb", include_normals=True)


def write_mesh(path, mesh, fmt: str | None = None) -> Path:
    """``mesh`` as PLY, OBJ or GLB (by the suffix of ``path``, or ``fmt``), written atomically."""
    data = mesh_bytes(mesh, mesh_format(path, fmt))
    return write_atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def write_mesh_sequence(folder, meshes, fmt: str = "glb", fps: float | None = None,
                        cancel: threading.Event | None = None) -> Path:
    """Meshes of a clip into ``folder`` (created, or empty): ``frame_0000.<fmt>``... and ``index.json``
    (format, frame list with file, t, time_s, vertices, faces). ``meshes`` yields (t, mesh). Written into
    a temporary folder renamed into place: a cancel or an error leaves nothing."""
    fmt = mesh_format("", fmt)

    def fill(tmp: Path):
        frames = []
        for i, (t, m) in enumerate(meshes):
            _check(cancel)
            name = f"frame_{i:04d}.{fmt}"
            (tmp / name).write_bytes(mesh_bytes(m, fmt))
            entry = {"file": name, "t": float(t), "vertices": int(len(m.vertices)), "faces": int(len(m.faces))}
            if fps:
                entry["time_s"] = round(i / float(fps), 6)
            frames.append(entry)
        if not frames:
            raise ExportError("no frames to write")
        index = {"format": "pv3d-mesh-sequence", "version": 1, "mesh_format": fmt, "fps": fps,
                 "coordinates": "world: +Y up, face towards +Z, scene units", "frames": frames}
        atomic_write_text(tmp / SEQUENCE_INDEX, json.dumps(index, indent=2) + "\n")

    return atomic_folder(folder, fill, ExportError)
