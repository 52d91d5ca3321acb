"""Procedural heads driven by the generator's own inputs: a teacher for the default model.

The draw of a synthetic identity and of its expression track becomes a deterministic, smooth function
of Gaussian codes:

- appearance code ``z`` (its first :data:`APPEARANCE_DIMS` entries) -> identity: each parameter is
  the standard normal CDF of one entry mapped onto the parameter's range (colours run along palettes
  ordered so that neighbours blend into plausible tones; hair styles are steep but smooth ramps);
- motion code ``z_m`` and timestamp ``t`` -> expression, through ``u = z_m * t`` only, exactly the
  input PV3D's motion layers see (they scale the motion code by t before their first layer): at t = 0
  every motion code gives the identity's neutral face; as t grows, the mouth moves like speech, the
  eyes blink and the brows rise, at rates set by the motion code.

So ``(z, z_m, t, camera)`` names one image, and a generator can be trained to reproduce it with fresh
codes at every step: there is no finite set of identities to blend.
"""
from __future__ import annotations

import math

import torch

from ..render import cameras
from . import heads

#: how many entries of the appearance code / motion code the teacher reads (the rest are ignored)
APPEARANCE_DIMS = 33
MOTION_DIMS = 8

# Palettes, ordered so that neighbours blend into plausible colours.
SKIN = torch.tensor([[0.98, 0.85, 0.76], [0.96, 0.80, 0.69], [0.92, 0.72, 0.58], [0.85, 0.64, 0.50],
                     [0.76, 0.54, 0.40], [0.62, 0.42, 0.30], [0.47, 0.31, 0.21]])
HAIR = torch.tensor([[0.08, 0.06, 0.05], [0.15, 0.15, 0.18], [0.22, 0.14, 0.08], [0.40, 0.26, 0.14],
                     [0.55, 0.20, 0.08], [0.65, 0.48, 0.26], [0.85, 0.72, 0.45], [0.60, 0.60, 0.62]])
EYES = torch.tensor([[0.30, 0.18, 0.08], [0.45, 0.30, 0.12], [0.25, 0.45, 0.25], [0.15, 0.35, 0.60],
                     [0.20, 0.20, 0.25]])

#: scalar identity parameters: (appearance-code entry, low, high); the ranges of the clip datasets
SCALAR_RANGES = {
    "head_w": (0.92, 1.08), "head_h": (0.94, 1.06), "head_d": (0.95, 1.05), "jaw_w": (0.85, 1.12),
    "jaw_len": (0.9, 1.1), "nose_len": (0.8, 1.25), "nose_w": (0.8, 1.3), "eye_sep": (0.068, 0.082),
    "eye_y": (0.035, 0.055), "eye_size": (0.9, 1.12), "mouth_w": (0.038, 0.052), "mouth_y": (-0.125, -0.105),
    "ear_size": (0.85, 1.15), "hairline": (0.12, 0.17), "brow_thick": (0.7, 1.4),
}
# code entries: 0-14 the scalars above, then colours and styles
_E_SKIN, _E_SKIN_TINT = 15, (16, 17, 18)
_E_HAIR, _E_HAIR_TINT = 19, (20, 21, 22)
_E_EYES = 23
_E_LIPS = 24
_E_BG_HUE, _E_BG_SAT, _E_BG_VAL, _E_BG_FADE = 25, 26, 27, 28
_E_LONG, _E_FRINGE, _E_BUZZ = 29, 30, 31
_E_SMILE = 32
assert len(SCALAR_RANGES) == 15


def _u(z):
    """Standard normal -> uniform on (0, 1)."""
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


def _palette(pal: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear walk along a palette, u in [0, 1] -> (B, 3)."""
    pal = pal.to(u.device)
    x = u.clamp(0, 1) * (len(pal) - 1)
    i = x.floor().clamp(max=len(pal) - 2).long()
    f = (x - i)[:, None]
    return pal[i] * (1 - f) + pal[i + 1] * f


def _ramp(u, lo, hi):
    """A smooth step from 0 (u <= lo) to 1 (u >= hi)."""
    x = ((u - lo) / (hi - lo)).clamp(0, 1)
    return x * x * (3 - 2 * x)


def _hsv(h, s, v):
    """Continuous HSV -> RGB, (B,) each -> (B, 3)."""
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], -1)
    return v[:, None] - v[:, None] * s[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def identity(z: torch.Tensor) -> torch.Tensor:
    """Identity columns of the head vector (B, N_PARAMS; expression columns 0) from appearance codes (B, >= 33)."""
    if z.ndim != 2 or z.shape[1] < APPEARANCE_DIMS:
        raise ValueError(f"appearance codes must be (B, >= {APPEARANCE_DIMS}), got {tuple(z.shape)}")
    u = _u(z[:, :APPEARANCE_DIMS].float())
    out = torch.zeros(len(z), heads.N_PARAMS, device=z.device)
    P = heads.PARAMS
    for k, (name, (lo, hi)) in enumerate(SCALAR_RANGES.items()):
        out[:, P[name]] = lo + (hi - lo) * u[:, k]
    tint = lambda cols, lo, hi: lo + (hi - lo) * u[:, list(cols)]  # noqa: E731
    skin = (_palette(SKIN, u[:, _E_SKIN]) * tint(_E_SKIN_TINT, 0.95, 1.04)).clamp(0, 1)
    out[:, P["skin"]] = skin
    out[:, P["hair"]] = (_palette(HAIR, u[:, _E_HAIR]) * tint(_E_HAIR_TINT, 0.85, 1.15)).clamp(0, 1)
    out[:, P["eyes"]] = _palette(EYES, u[:, _E_EYES])
    lips = skin * skin.new_tensor([0.85, 0.55, 0.55]) + (-0.04 + 0.10 * u[:, _E_LIPS])[:, None]
    out[:, P["lips"]] = lips.clamp(0, 1)
    bg = _hsv(u[:, _E_BG_HUE], 0.15 + 0.4 * u[:, _E_BG_SAT], 0.45 + 0.45 * u[:, _E_BG_VAL])
    out[:, P["background"]] = bg
    out[:, P["background2"]] = bg * (0.7 + 0.25 * u[:, _E_BG_FADE])[:, None]
    buzz = _ramp(u[:, _E_BUZZ], 0.78, 0.84)
    out[:, P["hair_buzz"]] = buzz
    out[:, P["hair_long"]] = _ramp(u[:, _E_LONG], 0.66, 0.72) * (1 - buzz)
    out[:, P["hair_fringe"]] = _ramp(u[:, _E_FRINGE], 0.66, 0.72) * (1 - buzz)
    return out


def expression(z_motion: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B, 4) blink, mouth, smile, brow from motion codes (B, >= 8) and timestamps (B,).

    A function of ``u = z_motion * t`` only, so every motion code gives the same face at t = 0."""
    if z_motion.ndim != 2 or z_motion.shape[1] < MOTION_DIMS:
        raise ValueError(f"motion codes must be (B, >= {MOTION_DIMS}), got {tuple(z_motion.shape)}")
    u = z_motion[:, :MOTION_DIMS].float() * t.reshape(-1, 1).float()
    s2 = lambda f, x: torch.sin(math.pi * f * x) ** 2  # noqa: E731
    speech = (s2(2.5, u[:, 0]) + s2(3.5, u[:, 1]) + s2(4.5, u[:, 2])) / 3
    mouth = (1.3 * speech - 0.2).clamp(0, 1) * (0.55 + 0.45 * torch.tanh(u[:, 3]).abs())
    blink = ((s2(2.5, u[:, 4]) - 0.85) / 0.15).clamp(0, 1)
    brow = (0.7 * s2(1.5, u[:, 5]) + 0.3 * torch.tanh(u[:, 6])).clamp(0, 1)
    smile = 0.5 * torch.tanh(u[:, 7])
    return torch.stack([blink, mouth, smile, brow], -1)


def head_batch(z: torch.Tensor, z_motion: torch.Tensor, t, psi=1.0) -> heads.HeadBatch:
    """The heads named by appearance codes (B, z_dim), motion codes (B, >= 8) and timestamps.

    The appearance code is read as the generator's mapping network reads it, normalised to unit
    second moment; truncation ``psi`` (a number or (B,)) then scales it towards the mean head."""
    z = z.float()
    zn = z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8)
    zn = zn * torch.as_tensor(psi, dtype=torch.float32, device=z.device).reshape(-1, 1)
    t = torch.as_tensor(t, dtype=torch.float32, device=z.device).reshape(-1).expand(len(z))
    v = identity(zn)
    e = expression(z_motion, t)
    P = heads.PARAMS
    v[:, P["blink"]], v[:, P["mouth"]], v[:, P["brow"]] = e[:, 0], e[:, 1], e[:, 3]
    rest = -0.1 + 0.5 * _u(zn[:, _E_SMILE])      # the identity's resting smile
    v[:, P["smile"]] = (rest + e[:, 2]).clamp(-1, 1)
    return heads.HeadBatch(v)


def sample_cameras(n: int, gen: torch.Generator, max_yaw_deg: float = 50.0, max_pitch_deg: float = 20.0,
                   radius: float = cameras.DEFAULT_RADIUS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n cameras (n, 25) on the default orbit, yaw and pitch uniform in ±max; also the angles (radians)."""
    yaw = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(max_yaw_deg)
    pitch = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(max_pitch_deg)
    c = torch.stack([torch.from_numpy(cameras.OrbitCamera(float(y), float(p), radius).c())
                     for y, p in zip(yaw, pitch)])
    return c, yaw, pitch


def render(z, z_motion, t, c, res: int = 128, ssaa: int = 2, psi=1.0, compiled: bool = False) -> dict:
    """The teacher's frames of (z, z_motion, t, psi) from cameras c: image (B, 3, res, res) in [-1, 1],
    mask (B, 1, res, res) in [0, 1], depth (B, 1, res, res) distance along the ray (0 on background);
    and ``heads``, the :class:`~.heads.HeadBatch` rendered (its signed distance gives the 3D shape)."""
    hb = head_batch(z, z_motion, t, psi)
    out = heads.render(hb, c, res, ssaa, compiled=compiled)
    return {"image": out["image"].permute(0, 3, 1, 2) * 2 - 1, "mask": out["mask"][:, None],
            "depth": out["depth"][:, None], "heads": hb}
