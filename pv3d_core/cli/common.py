"""What every command group shares: option parsers, the device, the checkpoint, progress bars.

Every numeric flag takes a bounded rule as its argparse ``type=`` (``type=FRAMES.flag``), so absurd,
negative or non-finite values stop at parsing with one line naming the flag; tests/test_hostile_inputs.py
checks that no flag takes a bare ``int`` or ``float``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CheckpointError, UserError
from ..rules import MAX_FPS, MAX_FRAMES, MAX_SEEDS, SEED, Float, Int

# the bounds of the flags several commands share
FRAMES = Int(1, MAX_FRAMES)
FPS = Float(0.1, MAX_FPS)
TIME = Float(0, 1)
YAW = Float(-180, 180)                 # degrees
PITCH = Float(-89, 89)                 # degrees (the camera's up vector degenerates at ±90)
YAW_RANGE = Float(0, 180)
PITCH_RANGE = Float(0, 89)
PSI = Float(-1, 2)                     # truncation: 1 = none, 0 = the mean face, > 1 exaggerates
RESOLUTION = Int(16, 4096)
THREADS = Int(0, 1024)
STEPS = Int(0, 100_000)                # optimisation steps of one inversion or fit


def parse_seeds(text: str) -> list[int]:
    """'0,3,5-7' -> [0, 3, 5, 6, 7] (an argparse ``type=``); at most :data:`MAX_SEEDS` seeds, each a
    numpy seed (0..2**32-1)."""
    seeds = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else part[1:].split("-", 1)
                a, b = SEED.check("seed", SEED.parse(a)), SEED.check("seed", SEED.parse(b))
                if b < a or len(seeds) + b - a + 1 > MAX_SEEDS:
                    raise ValueError
                seeds.extend(range(a, b + 1))
            elif part:
                seeds.append(SEED.check("seed", SEED.parse(part)))
            if len(seeds) > MAX_SEEDS:
                raise ValueError
    except (ValueError, UserError):
        raise argparse.ArgumentTypeError(f"seeds must look like 0,3,5-7: at most {MAX_SEEDS} seeds, each within "
                                         f"0..{2 ** 32 - 1}, ranges ascending; got {text[:60]!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("no seeds given")
    return seeds


def resolve_checkpoint(path: str | None) -> Path:
    """``--ckpt`` or, without it, the embedded default model."""
    from ..paths import default_checkpoint

    if path:
        return Path(path)
    p = default_checkpoint()
    if not p.exists():
        raise CheckpointError(f"the embedded default checkpoint {p} is missing; pass --ckpt PATH")
    return p


def add_device(p) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")


def stage_bars(desc: str):
    """A ``progress(stage, step, total, loss)`` callback drawing one tqdm bar per stage, and a closer."""
    from tqdm import tqdm

    state = {"bar": None, "stage": None}

    def cb(stage, step, total, loss=0.0):
        if state["stage"] != stage:
            if state["bar"] is not None:
                state["bar"].close()
            state["bar"] = tqdm(total=total, desc=f"{desc}: {stage}", unit="step", disable=None, leave=False)
            state["stage"] = stage
        b = state["bar"]
        b.total = total
        b.n = step
        if loss:
            b.set_postfix(loss=f"{loss:.4f}", refresh=False)
        b.refresh()

    def close():
        if state["bar"] is not None:
            state["bar"].close()
    return cb, close


def counter_bar(desc: str, unit: str, total: int | None = None, initial: int = 0):
    """A ``progress(done, total)`` callback drawing one tqdm bar, and a closer."""
    from tqdm import tqdm

    bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=None)

    def cb(done, total=None, **postfix):
        if total is not None:
            bar.total = total
        bar.n = done
        if postfix:
            bar.set_postfix(postfix, refresh=False)
        bar.refresh()
    return cb, bar.close
