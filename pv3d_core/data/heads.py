"""Procedural 3D heads in PyTorch: parameters, signed distance, materials and a batched sphere tracer.

One head is a vector of named parameters (:data:`PARAMS`: identity columns and the four expression
columns); a batch of heads is a :class:`HeadBatch`, a (B, P) tensor. Every function here works on a
batch, so one call renders many different heads from many cameras, and the same code serves the
clip datasets (:mod:`.synth`) and the code-driven teacher (:mod:`.head_codes`).

The head is a signed distance function (smooth unions of ellipsoids and capsules, carved eye sockets and
mouth), shaded with a key, fill and rim light fixed in the head's frame plus SDF ambient occlusion, so
every view of one moment is the same 3D object. The world frame is the model's: the face looks
towards +z, +y is up, the head sits around the origin and the default camera pivot (0, 0, 0.2).

Hair styles are three continuous weights (long hair down the back, a fringe, a buzz cut), so a head
can move smoothly from one style to another; the clip datasets use them one-hot.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..render.rays import pixel_rays, split_camera

#: colour parameters (three columns each) then scalar parameters, in the column order of a HeadBatch
COLOURS = ("skin", "hair", "eyes", "lips", "background", "background2")
SCALARS = ("head_w", "head_h", "head_d", "jaw_w", "jaw_len", "nose_len", "nose_w", "eye_sep", "eye_y",
           "eye_size", "mouth_w", "mouth_y", "ear_size", "hairline", "brow_thick",
           "hair_long", "hair_fringe", "hair_buzz")
EXPRESSION = ("blink", "mouth", "smile", "brow")


def _columns() -> dict:
    cols, k = {}, 0
    for name in COLOURS:
        cols[name] = slice(k, k + 3)
        k += 3
    for name in SCALARS + EXPRESSION:
        cols[name] = k
        k += 1
    return cols


#: name -> column (an int) or columns (a slice of three) of a head vector
PARAMS = _columns()
N_PARAMS = max(v.stop if isinstance(v, slice) else v + 1 for v in PARAMS.values())

HEAD_SCALE = 1.1
HEAD_OFFSET = (0.0, -0.015, 0.0)
RAY_START, RAY_END = 2.2, 3.4
BOUND_CENTRE, BOUND_RADIUS = (0.0, -0.12, 0.0), 0.6
_LIGHTS = (  # direction towards the light (head frame), colour
    ((-0.45, 0.55, 0.7), (0.85, 0.816, 0.765)),
    ((0.6, 0.1, 0.6), (0.225, 0.246, 0.3)),
    ((0.0, 0.4, -1.0), (0.35, 0.35, 0.35)),
)


class HeadBatch:
    """B heads: a (B, N_PARAMS) float32 tensor with named access (``h.skin`` is (B, 3), ``h.mouth`` (B,))."""

    def __init__(self, values: torch.Tensor):
        if values.ndim != 2 or values.shape[1] != N_PARAMS:
            raise ValueError(f"head parameters must be (B, {N_PARAMS}), got {tuple(values.shape)}")
        self.values = values.to(torch.float32)

    def __len__(self):
        return self.values.shape[0]

    def __getattr__(self, name):
        if name in PARAMS:
            return self.values[:, PARAMS[name]]
        raise AttributeError(name)

    def take(self, index: torch.Tensor) -> "HeadBatch":
        return HeadBatch(self.values.index_select(0, index))

    @staticmethod
    def cat(batches) -> "HeadBatch":
        return HeadBatch(torch.cat([b.values for b in batches]))


# ---------------------------------------------------------------------------- distances

def _ell(P, c, r):
    """Approximate signed distance to an axis-aligned ellipsoid (exact on the surface).

    ``P`` is (x, y, z) coordinate columns; ``c`` and ``r`` are triples of scalars or columns."""
    qx, qy, qz = (P[0] - c[0]) / r[0], (P[1] - c[1]) / r[1], (P[2] - c[2]) / r[2]
    k0 = torch.sqrt(qx * qx + qy * qy + qz * qz)
    k1 = torch.sqrt((qx / r[0]) ** 2 + (qy / r[1]) ** 2 + (qz / r[2]) ** 2)
    return k0 * (k0 - 1.0) / k1.clamp_min(1e-6)


def _sphere(P, c, r):
    return torch.sqrt((P[0] - c[0]) ** 2 + (P[1] - c[1]) ** 2 + (P[2] - c[2]) ** 2) - r


def _capsule(P, a, b, r):
    bx, by, bz = b[0] - a[0], b[1] - a[1], b[2] - a[2]
    px, py, pz = P[0] - a[0], P[1] - a[1], P[2] - a[2]
    h = ((px * bx + py * by + pz * bz) / (bx * bx + by * by + bz * bz)).clamp(0, 1)
    return torch.sqrt((px - h * bx) ** 2 + (py - h * by) ** 2 + (pz - h * bz) ** 2) - r


def _smin(a, b, k):
    h = (0.5 + 0.5 * (b - a) / k).clamp(0, 1)
    return b + (a - b) * h - k * h * (1 - h)


def _smax(a, b, k):
    return -_smin(-a, -b, k)


def _head_units(p: torch.Tensor):
    """World points (N, 3) -> coordinate columns in head units."""
    return ((p[:, 0] - HEAD_OFFSET[0]) / HEAD_SCALE, (p[:, 1] - HEAD_OFFSET[1]) / HEAD_SCALE,
            (p[:, 2] - HEAD_OFFSET[2]) / HEAD_SCALE)


def _eye_centres(h: HeadBatch):
    return [(sx * h.eye_sep, h.eye_y, 0.152) for sx in (-1.0, 1.0)]


def parts(p: torch.Tensor, h: HeadBatch) -> dict:
    """Distances (scene units) of points (N, 3) to the parts of heads ``h`` (one head per point):
    ``skin`` (with lips, carved sockets and mouth), ``eyes``, ``hair``, and ``lips``/``cavity`` for shading."""
    P = _head_units(p)
    mouth_open, drop = 0.028 * h.mouth, 0.025 * h.mouth
    d = {}
    skull = _ell(P, (0, 0.06, -0.03), (0.185 * h.head_w, 0.215 * h.head_h, 0.225 * h.head_d))
    jaw = _ell(P, (0, -0.07 - 0.4 * drop, 0.035), (0.14 * h.jaw_w, 0.155 * h.jaw_len + 0.5 * drop, 0.165))
    skin = _smin(skull, jaw, 0.08)
    cheeks = torch.minimum(_ell(P, (-0.075, -0.045, 0.115), (0.065, 0.06, 0.07)),
                           _ell(P, (0.075, -0.045, 0.115), (0.065, 0.06, 0.07)))
    skin = _smin(skin, cheeks, 0.04)
    chin = _ell(P, (0, -0.185 * h.jaw_len - drop, 0.105), (0.045 * h.jaw_w, 0.04, 0.05))
    skin = _smin(skin, chin, 0.05)
    skin = _smin(skin, _ell(P, (0, h.eye_y + 0.045, 0.145), (0.125, 0.025, 0.045)), 0.03)
    nl, nw = h.nose_len, h.nose_w
    nose = _smin(_ell(P, (0, -0.005, 0.185), (0.02 * nw, 0.065 * nl, 0.04)),
                 _ell(P, (0, -0.055 * nl, 0.205 + 0.015 * nl), (0.028 * nw, 0.025, 0.03)), 0.03)
    nostrils = torch.minimum(_ell(P, (-0.022 * nw, -0.065 * nl, 0.195), (0.018, 0.015, 0.02)),
                             _ell(P, (0.022 * nw, -0.065 * nl, 0.195), (0.018, 0.015, 0.02)))
    skin = _smin(skin, _smin(nose, nostrils, 0.015), 0.025)
    es = h.ear_size
    ear_r = (0.022 * es, 0.055 * es, 0.035 * es)
    ears = torch.minimum(_ell(P, (-0.183 * h.head_w, 0.0, -0.015), ear_r), _ell(P, (0.183 * h.head_w, 0.0, -0.015), ear_r))
    skin = _smin(skin, ears, 0.015)
    skin = _smin(skin, _capsule(P, (0, -0.16, -0.04), (0, -0.7, -0.08), 0.085 * h.jaw_w), 0.05)
    eyes = _eye_centres(h)
    sockets = torch.minimum(_ell(P, (eyes[0][0], eyes[0][1], 0.175), (0.042, 0.028, 0.03)),
                            _ell(P, (eyes[1][0], eyes[1][1], 0.175), (0.042, 0.028, 0.03)))
    skin = _smax(skin, -sockets, 0.015)
    my, mw = h.mouth_y, h.mouth_w
    upper = _ell(P, (0, my + 0.011 + 0.3 * mouth_open, 0.2), (mw, 0.012, 0.024))
    lower = _ell(P, (0, my - 0.013 - mouth_open - 0.5 * drop, 0.195), (mw * 0.9, 0.015, 0.024))
    lips = torch.minimum(upper, lower)
    skin = _smin(skin, lips, 0.012)
    cavity = _ell(P, (0, my - 0.005 - 0.5 * mouth_open - 0.25 * drop, 0.2),
                  (mw * 0.8, 0.003 + 0.6 * mouth_open + 0.3 * drop, 0.05))
    skin = _smax(skin, -cavity, 0.006)
    eye_r = 0.031 * h.eye_size
    d["lips"], d["cavity"], d["skin"] = lips, cavity, skin
    d["eyes"] = torch.minimum(_sphere(P, eyes[0], eye_r), _sphere(P, eyes[1], eye_r))
    d["hair"] = _hair(P, h)
    return {k: v * HEAD_SCALE for k, v in d.items()}


def _hair(P, h: HeadBatch):
    x, y, z = P
    w, hh, dd = h.head_w, h.head_h, h.head_d
    shell = _ell(P, (0, 0.075, -0.035), (0.2 * w, 0.232 * hh, 0.242 * dd))
    buzz = _ell(P, (0, 0.063, -0.032), (0.19 * w, 0.221 * hh, 0.231 * dd))
    shell = torch.lerp(shell, buzz, h.hair_buzz)
    # the hairline: high at the forehead, lower at the temples and the back
    line = h.hairline - 0.55 * (0.12 - z).clamp_min(0) + 0.3 * x.abs() * (z > 0.05)
    # long hair falls down behind the ears to the neck
    line = torch.lerp(line, torch.where(z < 0.02, torch.full_like(line, -0.3), line), h.hair_long)
    back = torch.maximum(_ell(P, (0, -0.05, -0.06), (0.205 * w, 0.26, 0.19)), z - 0.02)
    shell = _smin(shell, back + 0.2 * (1 - h.hair_long), 0.03)
    # a fringe over the forehead
    fringe = torch.minimum(line, torch.where(z > 0.05, h.hairline - 0.05 + 0.15 * x.abs(), line))
    line = torch.lerp(line, fringe, h.hair_fringe)
    return _smax(shell, line - y, 0.02)


def sdf(p: torch.Tensor, h: HeadBatch) -> torch.Tensor:
    """Signed distance (scene units, negative inside) of points (N, 3), one head of ``h`` per point."""
    d = parts(p, h)
    return torch.minimum(torch.minimum(d["skin"], d["eyes"]), d["hair"])


def normals(p: torch.Tensor, h: HeadBatch, eps: float = 1e-3) -> torch.Tensor:
    k = torch.tensor([[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, 1, 1]], dtype=p.dtype, device=p.device)
    g = sum(k[j] * sdf(p + eps * k[j], h)[:, None] for j in range(4))
    return F.normalize(g, dim=-1, eps=1e-8)


def albedo(p: torch.Tensor, h: HeadBatch):
    """Albedo (N, 3) and specular strength (N,) at surface points (one head per point)."""
    d = parts(p, h)
    q = (p - p.new_tensor(HEAD_OFFSET)) / HEAD_SCALE     # head units from here on
    x, y, z = q[:, 0], q[:, 1], q[:, 2]
    n = len(p)
    skin = h.skin
    alb = skin.clone()
    spec = torch.full((n,), 0.08, dtype=p.dtype, device=p.device)
    warm = p.new_tensor([0.9, 0.45, 0.45])
    for sx in (-1.0, 1.0):   # cheeks: a little warmer
        w = torch.exp(-(((x - sx * 0.08) / 0.04) ** 2 + ((y + 0.05) / 0.035) ** 2))[:, None]
        alb = alb * (1 - 0.12 * w) + 0.12 * w * warm
    eyes = _eye_centres(h)
    for c in eyes:             # brows: arched bands above the eyes, raised with the expression
        dx = x - c[0]
        yc = c[1] + 0.043 + 0.014 * h.brow - 2.2 * dx ** 2
        band = (dx.abs() < 0.04) & ((y - yc).abs() < 0.006 * h.brow_thick * (1.2 - dx.abs() / 0.06)) & (z > 0.1)
        alb = torch.where(band[:, None], h.hair * 0.8, alb)
    lips = (d["lips"] < 0.004) & (d["lips"] <= d["skin"] + 0.004) & (z > 0.15)
    alb = torch.where(lips[:, None], h.lips, alb)
    spec = torch.where(lips, 0.3, spec)
    inside = (d["cavity"] < 0.002) & (z > 0.12)
    teeth = inside & (y > h.mouth_y - 0.004 - 0.2 * 0.028 * h.mouth)
    alb = torch.where(inside[:, None], p.new_tensor([0.25, 0.05, 0.06]), alb)
    alb = torch.where(teeth[:, None], p.new_tensor([0.92, 0.9, 0.85]), alb)
    hair = d["hair"] <= torch.minimum(d["skin"], d["eyes"]) + 1e-4
    strands = 0.9 + 0.1 * torch.sin(110 * x + 30 * y) * torch.sin(60 * z + 3)
    alb = torch.where(hair[:, None], h.hair * strands[:, None], alb)
    spec = torch.where(hair, 0.15, spec)
    # eyes: white, iris, pupil, lids closing with the blink
    eye = (d["eyes"] < torch.minimum(d["skin"], d["hair"])) & ~hair
    eye_r = 0.031 * h.eye_size
    opening = 0.62 * (1.0 - h.blink)
    for c in eyes:
        qx, qy, qz = (x - c[0]) / eye_r, (y - c[1]) / eye_r, (z - c[2]) / eye_r
        near = eye & (torch.sqrt(qx * qx + qy * qy + qz * qz) < 1.5)
        col = p.new_tensor([0.95, 0.93, 0.9]).expand(n, 3)
        iris = qz > 0.82
        col = torch.where(iris[:, None], h.eyes * (0.7 + 0.5 * (qz[:, None] - 0.82) / 0.18), col)
        col = torch.where((qz > 0.95)[:, None], p.new_tensor(0.03), col)
        lid = (qy + 0.1).abs() > opening
        col = torch.where(lid[:, None], skin * 0.9, col)
        lash = ((qy + 0.1).abs() - opening).abs().lt(0.09) & (qz > 0.2)
        col = torch.where(lash[:, None], h.hair * 0.4, col)
        alb = torch.where(near[:, None], col, alb)
        spec = torch.where(near, torch.where(lid, 0.08, 0.5), spec)
    return alb, spec


def background(h: HeadBatch, res: int) -> torch.Tensor:
    """(B, res, res, 3) vertical gradient backgrounds."""
    v = torch.linspace(0, 1, res, device=h.values.device)[None, :, None, None]
    a, b = h.background[:, None, None, :], h.background2[:, None, None, :]
    return (a * (1 - v) + b * v).expand(-1, res, res, 3)


_COMPILED: dict = {}


def _kernels(compiled: bool):
    """(sdf, albedo): plain, or fused by torch.compile (about 2.5x faster on a CPU; needs a C++
    compiler, and compiles for ~1 min on first use; falls back to plain on any failure)."""
    if not compiled:
        return sdf, albedo
    if "fns" not in _COMPILED:
        try:
            _COMPILED["fns"] = (torch.compile(sdf, dynamic=True), torch.compile(albedo, dynamic=True))
        except Exception as e:  # no compiler backend: plain PyTorch
            import logging
            logging.getLogger(__name__).warning("procedural heads: torch.compile unavailable (%s)", e)
            _COMPILED["fns"] = (sdf, albedo)
    return _COMPILED["fns"]


def _shade(p, dirs, h: HeadBatch, compiled: bool = False):
    f_sdf, f_albedo = _kernels(compiled)
    k = torch.tensor([[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, 1, 1]], dtype=p.dtype, device=p.device)
    nrm = F.normalize(sum(k[j] * f_sdf(p + 1e-3 * k[j], h)[:, None] for j in range(4)), dim=-1, eps=1e-8)
    alb, spec = f_albedo(p, h)
    ao = torch.ones(len(p), dtype=p.dtype, device=p.device)
    for i, step in enumerate((0.01, 0.025, 0.05)):
        ao = ao - (step - f_sdf(p + nrm * step, h).clamp_min(0)) / step * 0.25 / (i + 1)
    ao = ao.clamp(0.35, 1)
    col = alb * (0.28 * ao)[:, None]
    view = -dirs
    for ldir, lcol in _LIGHTS:
        light = F.normalize(p.new_tensor(ldir), dim=0)
        lcol = p.new_tensor(lcol)
        diff = (nrm @ light).clamp_min(0)
        half = F.normalize(light + view, dim=-1)
        sp = (nrm * half).sum(-1).clamp_min(0) ** 32
        col = col + alb * (diff * ao)[:, None] * lcol + (spec * sp * ao)[:, None] * lcol
    return col.clamp(0, 1) ** (1 / 1.15)


@torch.no_grad()
def render(heads: HeadBatch, cameras: torch.Tensor, res: int = 128, ssaa: int = 2, max_steps: int = 96,
           compiled: bool = False) -> dict:
    """Render B heads, each from its camera (B, 25).

    Returns ``image`` (B, res, res, 3) float in [0, 1], ``mask`` (B, res, res) coverage in [0, 1] and
    ``depth`` (B, res, res): the mean distance along the unit ray over the covered sub-pixels, 0 on
    the background. Supersampled ``ssaa``² per pixel. ``compiled`` fuses the distance and material
    functions with torch.compile (see :func:`_kernels`).
    """
    b = len(heads)
    if cameras.shape != (b, 25):
        raise ValueError(f"need one camera (25 values) per head, got {tuple(cameras.shape)} for {b} heads")
    f_sdf, _ = _kernels(compiled)
    r = res * ssaa
    cam2world, intr = split_camera(cameras.to(torch.float32))
    o, d = pixel_rays(cam2world, intr, r)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    owner = torch.arange(b, device=o.device).repeat_interleave(r * r)
    # bound: a sphere around the head; rays that miss it see the background
    oc = o - o.new_tensor(BOUND_CENTRE)
    bb = (oc * d).sum(-1)
    disc = bb * bb - ((oc * oc).sum(-1) - BOUND_RADIUS ** 2)
    t = torch.full((len(o),), RAY_START, dtype=o.dtype, device=o.device)
    alive = torch.nonzero(disc > 0).squeeze(1)
    root = torch.sqrt(disc[alive])
    t[alive] = torch.maximum(t[alive], -bb[alive] - root)
    t_exit = torch.zeros_like(t)
    t_exit[alive] = torch.minimum(-bb[alive] + root, torch.full_like(root, RAY_END))
    hit = torch.zeros(len(o), dtype=torch.bool, device=o.device)
    oa, da, ta, ea, ha = o[alive], d[alive], t[alive], t_exit[alive], heads.take(owner[alive])
    for _ in range(max_steps):
        if alive.numel() == 0:
            break
        dist = f_sdf(oa + da * ta[:, None], ha)
        ta = ta + dist * 0.9
        done = dist < 4e-4
        hit[alive[done]] = True
        t[alive] = ta
        keep = ~done & (ta <= ea)     # rays that hit the head or left the bound stop here
        alive, oa, da, ta, ea = alive[keep], oa[keep], da[keep], ta[keep], ea[keep]
        ha = HeadBatch(ha.values[keep])
    img = background(heads, r).reshape(-1, 3).clone()
    idx = torch.nonzero(hit).squeeze(1)
    if idx.numel():
        p = o[idx] + d[idx] * t[idx, None]
        img[idx] = _shade(p, d[idx], heads.take(owner[idx]), compiled)
    img = img.reshape(b, res, ssaa, res, ssaa, 3).mean((2, 4))
    hitf = hit.reshape(b, res, ssaa, res, ssaa).to(torch.float32)
    cnt = hitf.sum((2, 4))
    dsum = torch.where(hit, t, 0).reshape(b, res, ssaa, res, ssaa).sum((2, 4))
    depth = torch.where(cnt > 0, dsum / cnt.clamp_min(1), 0)
    return {"image": img, "mask": cnt / (ssaa * ssaa), "depth": depth}


__all__ = ["PARAMS", "N_PARAMS", "HeadBatch", "parts", "sdf", "normals", "albedo", "background", "render",
           "RAY_START", "RAY_END"]
