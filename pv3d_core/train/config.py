"""Training options: the official PV3D objective and schedule, one dataclass, JSON file + overrides.

Every value, from a JSON file or from ``--set KEY=VALUE``, is converted to the type the field declares
(``int``, ``float``, ``bool``, ``str``, ``tuple`` of floats, each optionally ``None``), never guessed from
the current value; text that does not fit the declared type is a :class:`~pv3d_core.errors.UsageError`.
"""
from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import UsageError
from ..rules import Bool, Float, Int, Seq, Str, check_fields, parse_bool

_PROB, _WEIGHT, _KIMG = Float(0, 1), Float(0, 1e6), Float(0, 1e9)
_LR, _BETAS = Float(0, 1, lo_open=True), Seq(Float(0, 0.9999), 2, 2)
_NEURAL_RES = Int(8, 512, optional=True)
#: the accepted range of every training option (the same rules serve --config, --set and the flags)
TRAIN_RULES = {
    "data": Str(), "out": Str(nonempty=True), "preset": Str(100, nonempty=True), "init": Str(optional=True),
    "batch": Int(1, 4096), "steps": Int(0, 100_000_000),
    "lr_g": _LR, "betas_g": _BETAS, "lr_d": _LR, "betas_d": _BETAS, "eps": Float(0, 1, lo_open=True),
    "loss_img_weight": _WEIGHT, "loss_vid_weight": _WEIGHT, "r1_gamma": _WEIGHT,
    "d_reg_interval": Int(1, 1_000_000), "g_reg_interval": Int(1, 1_000_000), "density_reg": _WEIGHT,
    "style_mixing_prob": _PROB, "gpc_reg_prob": _PROB, "gpc_fade_kimg": _KIMG, "blur_init_sigma": Float(0, 1000),
    "blur_fade_kimg": _KIMG, "ema_kimg": _KIMG, "ema_rampup": Float(0, 1e6, optional=True),
    "neural_res_initial": _NEURAL_RES, "neural_res_final": _NEURAL_RES, "neural_res_fade_kimg": _KIMG,
    "checkpoint_every": Int(0, 100_000_000), "keep_checkpoints": Int(1, 10_000), "sample_every": Int(0, 100_000_000),
    "log_every": Int(1, 100_000_000), "seed": Int(0, 2 ** 32 - 1), "threads": Int(0, 1024), "tensorboard": Bool(),
}


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
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise UsageError(f"config file {p} is not valid JSON: {str(e)[:200]}") from None
        except OSError as e:
            raise UsageError(f"cannot read config file {p}: {e.strerror or e}") from None
        return cls().override(d)

    def override(self, d: dict) -> "TrainConfig":
        """Set options from a dict of values or of text (``--set``), each converted to its declared type."""
        known = {f.name for f in fields(self)}
        hints = typing.get_type_hints(type(self))
        if not isinstance(d, dict):
            raise UsageError(f"training options must be a JSON object of option: value, got {type(d).__name__}")
        for k, v in d.items():
            k = str(k).replace("-", "_")
            if k not in known:
                raise UsageError(f"unknown training option {k!r}; known: {', '.join(sorted(known))}")
            setattr(self, k, convert_option(k, v, hints[k]))
        self.validate()
        return self

    def validate(self) -> "TrainConfig":
        """Every option's type and range (:data:`TRAIN_RULES`), before anything is built."""
        check_fields(self, TRAIN_RULES)
        return self

    def to_dict(self) -> dict:
        return asdict(self)


_NONE = ("none", "null")
_WHAT = {str: "text", bool: "true or false", int: "an integer", float: "a number", tuple: "a list of numbers"}


def convert_option(name: str, value, annotation):
    """``value`` (text from ``--set``, or a value from a JSON file) as the declared ``annotation``."""
    args = typing.get_args(annotation)
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args
    kind = next(a for a in args if a is not type(None)) if optional else annotation
    if kind not in _WHAT:
        raise TypeError(f"training option {name}: no converter for {annotation!r}")   # a new field's type
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
        if optional:
            return None
        raise UsageError(f"{name} must be {_WHAT[kind]}, not None")
    wrong = UsageError(f"{name} must be {_WHAT[kind]}{' or None' if optional else ''}, got {value!r}")
    text = value.strip() if isinstance(value, str) else None
    if kind is str:
        if text is None:
            raise wrong
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        flag = parse_bool(text) if text is not None else None
        if flag is None:
            raise wrong
        return flag
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if text is not None and text.lstrip("+-").isdigit():
            return int(text)
        raise wrong
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out = float(value)
        else:
            try:
                out = float(text) if text is not None else math.nan
            except ValueError:
                raise wrong from None
        if not math.isfinite(out):
            raise wrong
        return out
    # tuple of numbers: a JSON list, or "a,b" / "(a, b)" on the command line
    if text is not None:
        try:
            value = json.loads(text) if text.startswith("[") else [v for v in text.strip("()").split(",") if v.strip()]
        except json.JSONDecodeError:
            raise wrong from None
    if not isinstance(value, (list, tuple)):
        raise wrong
    try:
        return tuple(convert_option(name, v, float) for v in value)
    except UsageError:
        raise wrong from None
