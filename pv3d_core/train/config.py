"""Training options: the official PV3D objective and schedule, one dataclass, JSON file + overrides."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import UsageError


@dataclass
class TrainConfig:
    data: str = ""
    out: str = "runs/train"
    preset: str = "tiny"
    init: str | None = None          # fine-tune from an official .ckpt or one of ours
    batch: int = 8                   # clips per step over all processes (2 frames each); official 16-32
    steps: int = 1000
    # Adam (the official values, already adjusted for the lazy-regularisation intervals)
    lr_g: float = 0.002
    betas_g: tuple = (0.0, 0.99199)
    lr_d: float = 0.00188
    betas_d: tuple = (0.0, 0.99059)
    eps: float = 1e-8
    # objective
    loss_img_weight: float = 1.0
    loss_vid_weight: float = 0.65
    r1_gamma: float = 2.0
    d_reg_interval: int = 16
    g_reg_interval: int = 4
    density_reg: float = 0.6
    style_mixing_prob: float = 0.0
    # schedules (kimg = thousands of real images; the official counts frames: 2 per clip)
    gpc_reg_prob: float = 0.5
    gpc_fade_kimg: float = 1000.0
    blur_init_sigma: float = 10.0
    blur_fade_kimg: float = 200.0    # scaled by batch/32 as the official
    ema_kimg: float = 10.0           # half-life, scaled by batch/32
    ema_rampup: float | None = 0.05
    neural_res_initial: int | None = None   # None: the preset's neural rendering resolution throughout
    neural_res_final: int | None = None
    neural_res_fade_kimg: float = 1000.0
    # bookkeeping
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    sample_every: int = 250
    log_every: int = 10
    seed: int = 0
    threads: int = 0
    tensorboard: bool = True

    @classmethod
    def from_file(cls, path) -> "TrainConfig":
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise UsageError(f"config file not found: {p}") from None
        except json.JSONDecodeError as e:
            raise UsageError(f"config file {p} is not valid JSON: {e}") from None
        return cls().override(d)

    def override(self, d: dict) -> "TrainConfig":
        known = {f.name: f for f in fields(self)}
        for k, v in d.items():
            k = k.replace("-", "_")
            if k not in known:
                raise UsageError(f"unknown training option {k!r}; known: {', '.join(sorted(known))}")
            cur = getattr(self, k)
            if isinstance(v, str) and not isinstance(cur, str) and cur is not None:
                v = json.loads(v) if v not in ("None", "null") else None
            if isinstance(cur, tuple) and v is not None:
                v = tuple(v)
            setattr(self, k, v)
        self.validate()
        return self

    def validate(self) -> "TrainConfig":
        if self.batch < 1 or self.steps < 0:
            raise UsageError("batch must be >= 1 and steps >= 0")
        if self.g_reg_interval < 1 or self.d_reg_interval < 1:
            raise UsageError("regularisation intervals must be >= 1")
        return self

    def to_dict(self) -> dict:
        return asdict(self)
