"""One progress bar over a job's stages, with the stage's name and the time left.

A portrait fit reports ``progress(stage, step, total)`` per stage (align 0..1, then w 1..200, then pti
1..300): shown as it came, the bar climbed to 95 % in the first stage and fell back to 1 % in the next.
:class:`StagedProgress` knows every stage's size up front and maps each report onto one monotonic bar.
A stage may weigh its steps (a pivotal-tuning step costs about 3.5 latent steps: it also updates the
generator and renders the regularisers' side views), so that the bar moves about evenly in time and the
time left (the units left times the recent seconds per unit) holds across a change of stage.
"""
from __future__ import annotations

import time
from collections import deque

#: how stages of pv3d_core's pipelines are called on the bar
STAGE_NAMES = {"align": "finding the face", "encoder": "encoder (first result)", "w": "fitting the latent", "w+": "fitting w+",
               "pti": "PTI (tuning the generator)", "faces": "finding faces", "motion": "fitting the motion",
               "render": "rendering"}


def fmt_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class StagedProgress:
    """``stages``: [(name, steps) or (name, steps, weight of a step), ...] in order. :meth:`update` takes
    a stage's report and gives (fraction of the whole job in [0, 1], status line)."""

    def __init__(self, stages, clock=time.monotonic, window: int = 20):
        self.stages = [(str(st[0]), max(0, int(st[1])) * (float(st[2]) if len(st) > 2 else 1.0)) for st in stages]
        self.total = sum(k for _, k in self.stages) or 1
        self.clock = clock
        self.done = 0
        self.fraction = 0.0
        self._marks: deque = deque(maxlen=window)        # (time, steps done) of recent reports

    def _offset(self, stage: str) -> tuple[int, int]:
        """(steps before ``stage``, its size); an unknown stage sits after the known ones."""
        before = 0
        for name, k in self.stages:
            if name == stage:
                return before, k
            before += k
        return before, 0

    def update(self, stage: str, step: int, total: int) -> tuple[float, str]:
        before, size = self._offset(stage)           # in weighted units
        size = size or max(0, int(total))
        frac = min(1.0, max(0, int(step)) / max(1, int(total))) if total else 1.0
        done = before + size * frac
        self.done = max(self.done, done)                  # never backwards
        self.fraction = min(1.0, self.done / self.total)
        now = self.clock()
        self._marks.append((now, self.done))
        name = STAGE_NAMES.get(stage, stage)
        status = f"{name} {int(step)}/{int(total)}"
        left = self.seconds_left()
        if left is not None:
            status += f" · {fmt_seconds(left)} left"
        return self.fraction, status

    def seconds_left(self) -> float | None:
        if len(self._marks) < 2:
            return None
        (t0, d0), (t1, d1) = self._marks[0], self._marks[-1]
        if d1 <= d0 or t1 <= t0:
            return None
        return (self.total - self.done) * (t1 - t0) / (d1 - d0)
