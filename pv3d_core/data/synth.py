"""Synthetic talking heads: procedural 3D heads, sphere-traced, with ground-truth depth and geometry.

Each clip is one identity (a :class:`Identity`: head proportions, nose, ears, hair style and colour,
skin tone, eye colour, brows, lips, background) whose face moves over time (an :class:`Expression`
per frame: eye blinks, mouth opening and lip shape, brow raise), seen by a near-frontal camera
trajectory in the EG3D convention (yaw within about ±35°, pitch within about ±20°; head turns are
carried by the camera, as in processed real talking-head data).

The head is a signed distance function (smooth unions of ellipsoids and capsules, carved eye sockets and
mouth), shaded with a key, fill and rim light fixed in the head's frame plus SDF ambient occlusion, so
every view of one moment is the same 3D object. The world frame is the model's: the face looks
towards +z, +y is up, the head sits around the origin and the default camera pivot (0, 0, 0.2).

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

from .. import files
from ..render import cameras as cams
from . import layout

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


# ---------------------------------------------------------------------------- signed distances

def _ell(P, c, r):
    """Approximate signed distance to an axis-aligned ellipsoid (exact on the surface).

    ``P`` is the tuple of coordinate columns (x, y, z): per-column arithmetic avoids numpy's slow
    reductions over a length-3 axis."""
    qx, qy, qz = (P[0] - c[0]) / r[0], (P[1] - c[1]) / r[1], (P[2] - c[2]) / r[2]
    k0 = np.sqrt(qx * qx + qy * qy + qz * qz)
    k1 = np.sqrt((qx / r[0]) ** 2 + (qy / r[1]) ** 2 + (qz / r[2]) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _sphere(P, c, r):
    return np.sqrt((P[0] - c[0]) ** 2 + (P[1] - c[1]) ** 2 + (P[2] - c[2]) ** 2) - r


def _capsule(P, a, b, r):
    bx, by, bz = b[0] - a[0], b[1] - a[1], b[2] - a[2]
    px, py, pz = P[0] - a[0], P[1] - a[1], P[2] - a[2]
    h = np.clip((px * bx + py * by + pz * bz) / (bx * bx + by * by + bz * bz), 0, 1)
    return np.sqrt((px - h * bx) ** 2 + (py - h * by) ** 2 + (pz - h * bz) ** 2) - r


def _smin(a, b, k):
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0, 1)
    return b + (a - b) * h - k * h * (1 - h)


def _smax(a, b, k):
    return -_smin(-a, -b, k)


HEAD_SCALE = 1.1
HEAD_OFFSET = (0.0, -0.015, 0.0)


class Head:
    """The SDF and materials of one identity with one expression."""

    def __init__(self, ident: Identity, expr: Expression):
        self.i, self.e = ident, expr
        i, e = ident, expr
        self.eye_r = 0.031 * i.eye_size
        self.eye_c = [(sx * i.eye_sep, i.eye_y, 0.152) for sx in (-1, 1)]
        self.mouth_open = 0.028 * e.mouth
        self.chin_drop = 0.025 * e.mouth

    # The parts, each a distance; the skin is their smooth union.
    def parts(self, p):
        i = self.i
        # the parts are modelled in head units; the head is scaled and placed to fill the EG3D framing
        p = ((p[:, 0] - HEAD_OFFSET[0]) / HEAD_SCALE, (p[:, 1] - HEAD_OFFSET[1]) / HEAD_SCALE,
             (p[:, 2] - HEAD_OFFSET[2]) / HEAD_SCALE)
        drop = self.chin_drop
        d = {}
        skull = _ell(p, (0, 0.06, -0.03), (0.185 * i.head_w, 0.215 * i.head_h, 0.225 * i.head_d))
        jaw = _ell(p, (0, -0.07 - 0.4 * drop, 0.035), (0.14 * i.jaw_w, 0.155 * i.jaw_len + 0.5 * drop, 0.165))
        skin = _smin(skull, jaw, 0.08)
        cheeks = np.minimum(_ell(p, (-0.075, -0.045, 0.115), (0.065, 0.06, 0.07)),
                            _ell(p, (0.075, -0.045, 0.115), (0.065, 0.06, 0.07)))
        skin = _smin(skin, cheeks, 0.04)
        chin = _ell(p, (0, -0.185 * i.jaw_len - drop, 0.105), (0.045 * i.jaw_w, 0.04, 0.05))
        skin = _smin(skin, chin, 0.05)
        brow_ridge = _ell(p, (0, i.eye_y + 0.045, 0.145), (0.125, 0.025, 0.045))
        skin = _smin(skin, brow_ridge, 0.03)
        nose = _smin(_ell(p, (0, -0.005, 0.185), (0.02 * i.nose_w, 0.065 * i.nose_len, 0.04)),
                     _ell(p, (0, -0.055 * i.nose_len, 0.205 + 0.015 * i.nose_len),
                          (0.028 * i.nose_w, 0.025, 0.03)), 0.03)
        nostrils = np.minimum(_ell(p, (-0.022 * i.nose_w, -0.065 * i.nose_len, 0.195), (0.018, 0.015, 0.02)),
                              _ell(p, (0.022 * i.nose_w, -0.065 * i.nose_len, 0.195), (0.018, 0.015, 0.02)))
        nose = _smin(nose, nostrils, 0.015)
        skin = _smin(skin, nose, 0.025)
        ears = np.minimum(_ell(p, (-0.183 * i.head_w, 0.0, -0.015), tuple(v * i.ear_size for v in (0.022, 0.055, 0.035))),
                          _ell(p, (0.183 * i.head_w, 0.0, -0.015), tuple(v * i.ear_size for v in (0.022, 0.055, 0.035))))
        skin = _smin(skin, ears, 0.015)
        neck = _capsule(p, (0, -0.16, -0.04), (0, -0.7, -0.08), 0.085 * i.jaw_w)
        skin = _smin(skin, neck, 0.05)
        # eye sockets
        sockets = np.minimum(_ell(p, self.eye_c[0][:2] + (0.175,), (0.042, 0.028, 0.03)),
                             _ell(p, self.eye_c[1][:2] + (0.175,), (0.042, 0.028, 0.03)))
        skin = _smax(skin, -sockets, 0.015)
        # lips (upper, lower, corners lifted by a smile)
        my, mw = i.mouth_y, i.mouth_w
        upper = _ell(p, (0, my + 0.011 + 0.3 * self.mouth_open, 0.2), (mw, 0.012, 0.024))
        lower = _ell(p, (0, my - 0.013 - self.mouth_open - 0.5 * drop, 0.195), (mw * 0.9, 0.015, 0.024))
        lips = np.minimum(upper, lower)
        d["lips"] = lips
        skin = _smin(skin, lips, 0.012)
        # mouth opening: carve between the lips
        cavity = _ell(p, (0, my - 0.005 - 0.5 * self.mouth_open - 0.25 * drop, 0.2),
                      (mw * 0.8, 0.003 + 0.6 * self.mouth_open + 0.3 * drop, 0.05))
        skin = _smax(skin, -cavity, 0.006)
        d["cavity"] = cavity
        d["skin"] = skin
        d["eyes"] = np.minimum(_sphere(p, self.eye_c[0], self.eye_r), _sphere(p, self.eye_c[1], self.eye_r))
        d["hair"] = self.hair(p)
        return {k: v * HEAD_SCALE for k, v in d.items()}

    def hair(self, p):
        i = self.i
        x, y, z = p
        shell = _ell(p, (0, 0.075, -0.035), (0.2 * i.head_w, 0.232 * i.head_h, 0.242 * i.head_d))
        # the hairline: high at the forehead, lower at the temples and the back
        line = i.hairline - 0.55 * np.clip(0.12 - z, 0, None) + 0.3 * np.abs(x) * (z > 0.05)
        if i.hair_style == 1:   # long: falls down behind the ears to the neck
            line = np.where(z < 0.02, -0.3, line)
            long_back = _ell(p, (0, -0.05, -0.06), (0.205 * i.head_w, 0.26, 0.19))
            shell = _smin(shell, np.maximum(long_back, z - 0.02), 0.03)
        elif i.hair_style == 2:  # buzz cut: thin shell
            shell = _ell(p, (0, 0.063, -0.032), (0.19 * i.head_w, 0.221 * i.head_h, 0.231 * i.head_d))
        elif i.hair_style == 3:  # fringe over the forehead
            line = np.minimum(line, np.where(z > 0.05, i.hairline - 0.05 + 0.15 * np.abs(x), line))
        return _smax(shell, line - y, 0.02)

    def sdf(self, p):
        d = self.parts(p)
        return np.minimum(np.minimum(d["skin"], d["eyes"]), d["hair"])

    def colour(self, p, n):
        """Albedo (N, 3) and specular strength (N,) at surface points."""
        i, e = self.i, self.e
        d = self.parts(p)
        p = (p - np.asarray(HEAD_OFFSET, np.float32)) / HEAD_SCALE   # head units from here on
        skin = np.asarray(i.skin, np.float32)
        alb = np.repeat(skin[None], len(p), 0)
        spec = np.full(len(p), 0.08, np.float32)
        # cheeks: a little warmer
        for sx in (-1, 1):
            w = np.exp(-(((p[:, 0] - sx * 0.08) / 0.04) ** 2 + ((p[:, 1] + 0.05) / 0.035) ** 2))
            alb = alb * (1 - 0.12 * w[:, None]) + 0.12 * w[:, None] * np.array([0.9, 0.45, 0.45], np.float32)
        # brows: arched bands above the eyes, raised with the expression
        for c in self.eye_c:
            dx = p[:, 0] - c[0]
            yc = c[1] + 0.043 + 0.014 * e.brow - 2.2 * dx ** 2
            band = (np.abs(dx) < 0.04) & (np.abs(p[:, 1] - yc) < 0.006 * i.brow_thick * (1.2 - np.abs(dx) / 0.06)) \
                & (p[:, 2] > 0.1)
            alb[band] = np.asarray(i.hair, np.float32) * 0.8
        # lips and the mouth
        lips = (d["lips"] < 0.004) & (d["lips"] <= d["skin"] + 0.004) & (p[:, 2] > 0.15)
        alb[lips] = np.asarray(i.lips, np.float32)
        spec[lips] = 0.3
        inside = (d["cavity"] < 0.002) & (p[:, 2] > 0.12)
        teeth = inside & (p[:, 1] > i.mouth_y - 0.004 - 0.2 * self.mouth_open)
        alb[inside] = np.array([0.25, 0.05, 0.06], np.float32)
        alb[teeth] = np.array([0.92, 0.9, 0.85], np.float32)
        # hair
        hair = d["hair"] <= np.minimum(d["skin"], d["eyes"]) + 1e-4
        strands = 0.9 + 0.1 * np.sin(110 * p[:, 0] + 30 * p[:, 1]) * np.sin(60 * p[:, 2] + 3)
        alb[hair] = np.asarray(i.hair, np.float32) * strands[hair, None]
        spec[hair] = 0.15
        # eyes: white, iris, pupil, lids closing with the blink
        eye = (d["eyes"] < np.minimum(d["skin"], d["hair"])) & ~hair
        for c in self.eye_c:
            q = p - np.asarray(c, np.float32)
            near = eye & (np.sqrt(q[:, 0] ** 2 + q[:, 1] ** 2 + q[:, 2] ** 2) < self.eye_r * 1.5)
            if not near.any():
                continue
            qn = q[near] / self.eye_r
            col = np.repeat(np.array([[0.95, 0.93, 0.9]], np.float32), near.sum(), 0)
            iris = qn[:, 2] > 0.82
            col[iris] = np.asarray(i.eyes, np.float32) * (0.7 + 0.5 * (qn[iris, 2, None] - 0.82) / 0.18)
            col[qn[:, 2] > 0.95] = 0.03
            opening = 0.62 * (1.0 - e.blink)
            lid = np.abs(qn[:, 1] + 0.1) > opening
            col[lid] = skin * 0.9
            lash = (np.abs(np.abs(qn[:, 1] + 0.1) - opening) < 0.09) & (qn[:, 2] > 0.2)
            col[lash] = np.asarray(i.hair, np.float32) * 0.4
            alb[near] = col
            s = np.full(near.sum(), 0.5, np.float32)
            s[lid] = 0.08
            spec[near] = s
        return alb, spec

    def normals(self, p, eps=1e-3):
        k = np.array([[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, 1, 1]], np.float32)
        g = sum(k[j] * self.sdf(p + eps * k[j])[:, None] for j in range(4))
        return g / np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-8)


def head_sdf(points: np.ndarray, ident: Identity, expr: Expression | None = None) -> np.ndarray:
    """Signed distance (scene units) of points (N, 3) to the head surface; negative inside."""
    return Head(ident, expr or Expression()).sdf(np.asarray(points, np.float32).reshape(-1, 3))


# ---------------------------------------------------------------------------- rendering

_LIGHTS = [  # direction (towards the light, head frame), colour
    (np.array([-0.45, 0.55, 0.7]), np.array([1.0, 0.96, 0.9]) * 0.85),
    (np.array([0.6, 0.1, 0.6]), np.array([0.75, 0.82, 1.0]) * 0.3),
    (np.array([0.0, 0.4, -1.0]), np.array([1.0, 1.0, 1.0]) * 0.35),
]
RAY_START, RAY_END = 2.2, 3.4


def _rays(c: np.ndarray, res: int):
    import torch

    from ..render.rays import pixel_rays, split_camera

    cw, intr = split_camera(torch.from_numpy(np.asarray(c, np.float32)).reshape(1, 25))
    o, d = pixel_rays(cw, intr, res)
    return o[0].numpy().astype(np.float32), d[0].numpy().astype(np.float32)


def render_head(ident: Identity, expr: Expression, camera: np.ndarray, res: int = 128, ssaa: int = 2) -> dict:
    """Render one frame: ``image`` (res, res, 3) uint8, ``depth`` (distance along the ray, 0 on the
    background) and ``mask`` (res, res) float32 in [0, 1], supersampled ``ssaa``² per pixel."""
    head = Head(ident, expr)
    r = res * ssaa
    o, d = _rays(camera, r)
    n = len(d)
    # bound: a sphere around the head; rays that miss it see the background
    centre, rad = np.array([0, -0.12, 0], np.float32), 0.6
    oc = o - centre
    b = (oc * d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - rad * rad)
    t = np.full(n, RAY_START, np.float32)
    alive = np.flatnonzero(disc > 0)
    t[alive] = np.maximum(RAY_START, -b[alive] - np.sqrt(disc[alive]))
    hit = np.zeros(n, bool)
    for _ in range(96):
        if alive.size == 0:
            break
        p = o[alive] + d[alive] * t[alive, None]
        dist = head.sdf(p)
        t[alive] += dist * 0.9
        done = dist < 4e-4
        hit[alive[done]] = True
        gone = t[alive] > RAY_END
        alive = alive[~done & ~gone]
    depth = np.where(hit, t, 0).astype(np.float32)
    # shading
    img = _background(ident, r)
    idx = np.flatnonzero(hit)
    if idx.size:
        p = o[idx] + d[idx] * t[idx, None]
        nrm = head.normals(p)
        alb, spec = head.colour(p, nrm)
        ao = np.ones(len(p), np.float32)
        for k, step in enumerate((0.01, 0.025, 0.05)):
            ao -= (step - np.clip(head.sdf(p + nrm * step), 0, None)) / step * 0.25 / (k + 1)
        ao = np.clip(ao, 0.35, 1)
        col = alb * (0.28 * ao)[:, None]
        view = -d[idx]
        for ldir, lcol in _LIGHTS:
            l = (ldir / np.linalg.norm(ldir)).astype(np.float32)
            diff = np.clip(nrm @ l, 0, None)
            h = l + view
            h /= np.linalg.norm(h, axis=-1, keepdims=True)
            sp = np.clip((nrm * h).sum(-1), 0, None) ** 32
            col += alb * (diff * ao)[:, None] * lcol + (spec * sp * ao)[:, None] * lcol
        img[idx] = np.clip(col, 0, 1) ** (1 / 1.15)
    img = img.reshape(res, ssaa, res, ssaa, 3).mean((1, 3))
    mask = hit.reshape(res, ssaa, res, ssaa).mean((1, 3)).astype(np.float32)
    dsum = depth.reshape(res, ssaa, res, ssaa).sum((1, 3))
    cnt = hit.reshape(res, ssaa, res, ssaa).sum((1, 3))
    depth_px = np.where(cnt > 0, dsum / np.maximum(cnt, 1), 0).astype(np.float32)
    return {"image": (img * 255 + 0.5).astype(np.uint8), "depth": depth_px, "mask": mask}


def _background(ident: Identity, r: int) -> np.ndarray:
    a, b = np.asarray(ident.background, np.float32), np.asarray(ident.background2, np.float32)
    v = np.linspace(0, 1, r, dtype=np.float32)[:, None, None]
    return np.broadcast_to(a * (1 - v) + b * v, (r, r, 3)).reshape(-1, 3).copy()


def neutral_mesh(ident: Identity, grid: int = 96):
    """The identity's neutral surface as a trimesh (marching cubes of the SDF, scene units)."""
    import trimesh
    from skimage.measure import marching_cubes

    lo, hi = np.array([-0.3, -0.45, -0.35]), np.array([0.3, 0.4, 0.35])
    axes = [np.linspace(lo[k], hi[k], grid, dtype=np.float32) for k in range(3)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    head = Head(ident, Expression())
    vol = np.concatenate([head.sdf(pts[s:s + 200_000]) for s in range(0, len(pts), 200_000)])
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
    for e, c in zip(exprs, camtrack):
        out = render_head(ident, e, c, res)
        frames.append(out["image"])
        depth.append(out["depth"])
        mask.append(out["mask"])
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
    import torch

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
