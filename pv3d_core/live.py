"""Live refinement: the state of a running fit, handed out between optimisation steps.

A fit (:func:`pv3d_core.invert.invert`, :func:`pv3d_core.portrait.prepare_and_invert`) calls
``on_state(state)`` with a :class:`FitState` after its first estimate (the encoder's, when the model has
one) and after every optimisation step, on the fitting thread, between steps: the latent and the
generator in it are the fit's own objects at that moment, valid during the call. A consumer on another
thread (a viewer's render worker) takes :meth:`FitState.snapshot`, a detached copy it may keep and
render while the fit goes on. Raising :class:`pv3d_core.errors.Cancelled` from the callback, or
setting the fit's ``cancel`` event, stops the fit.

:class:`LatestState` is the usual consumer: it keeps only the newest snapshot (latest wins), taken at
most every ``min_interval_s`` so that copying never slows the fit much, and hands it to a reader once.
:func:`fit_states` runs a fit in a thread and yields those snapshots as an iterator.

:class:`StageClock` gives each state its time left: the measured time per step of the running stage,
and for stages not started yet their step counts weighted by a relative cost per step (a PTI step
renders three or four times, a latent step once), rescaled by what has been measured so far.
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch


@dataclass
class FitState:
    stage: str                      # "encoder", "w", "w+", "pti", "motion" ...
    step: int                       # steps done in this stage
    total: int                      # steps of this stage
    ws: torch.Tensor                # (1, num_ws, w_dim) the current latent
    generator: torch.nn.Module      # the current generator (a tuned copy during pivotal tuning)
    camera: np.ndarray | None = None
    loss: float = 0.0
    elapsed_s: float = 0.0          # since the fit started
    eta_s: float = 0.0              # estimated time left, all remaining stages
    stage_eta_s: float = 0.0        # estimated time left in this stage
    tuned: bool = False             # the generator differs from the model the fit started from
    final: bool = False             # the last state of the fit
    extra: dict = field(default_factory=dict)

    def label(self) -> str:
        """'pti 40/120, 1 min 05 s left' (for progress bars)."""
        return f"{self.stage} {self.step}/{self.total}, {format_seconds(self.eta_s)} left"

    def snapshot(self) -> "FitState":
        """A copy another thread may keep: the latent cloned, the generator deep-copied when the fit
        tunes it (the untuned one is the caller's model, shared as it is: nothing writes to it)."""
        with torch.no_grad():
            G = copy.deepcopy(self.generator).requires_grad_(False).eval() if self.tuned else self.generator
            return FitState(self.stage, self.step, self.total, self.ws.detach().clone(), G,
                            None if self.camera is None else np.array(self.camera, copy=True), self.loss,
                            self.elapsed_s, self.eta_s, self.stage_eta_s, self.tuned, self.final, dict(self.extra))


OnState = Callable[[FitState], None]


def format_seconds(s: float) -> str:
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f} s"
    return f"{int(s // 60)} min {int(s % 60):02d} s"


class StageClock:
    """Time left of a fit made of stages with known step counts.

    ``plan``: [(stage, steps, relative cost per step)]. Before any step the estimate uses
    ``seconds_per_unit`` (a guess); after that, the running stage's own measured time per step (an
    average of its last steps), and the measured seconds per cost unit for the stages still to come."""

    def __init__(self, plan: list[tuple[str, int, float]], seconds_per_unit: float = 0.25):
        self.plan = [(s, int(n), float(c)) for s, n, c in plan]
        self.unit = seconds_per_unit
        self.t_start = time.perf_counter()
        self.stage: str | None = None
        self.t_stage = self.t_last = self.t_start
        self.step_times: list[float] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def tick(self, stage: str, step: int) -> tuple[float, float]:
        """Record that ``stage`` finished step ``step`` (1-based); returns (time left in total, in this stage)."""
        now = time.perf_counter()
        if stage != self.stage:
            self.stage, self.step_times = stage, []
            self.t_last = self.t_stage = now if step == 0 else self.t_last
        if step > 0:
            self.step_times.append(now - self.t_last)
            self.step_times = self.step_times[-20:]
        self.t_last = now
        names = [p[0] for p in self.plan]
        i = names.index(stage) if stage in names else -1
        steps, cost = (self.plan[i][1], self.plan[i][2]) if i >= 0 else (step, 1.0)
        if self.step_times:
            per_step = float(np.median(self.step_times))
            self.unit = per_step / max(cost, 1e-6)
        else:
            per_step = self.unit * cost
        stage_left = max(0, steps - step) * per_step
        later = sum(n * c for _, n, c in self.plan[i + 1:]) * self.unit if i >= 0 else 0.0
        return stage_left + later, stage_left


class LatestState:
    """Keeps the newest :meth:`FitState.snapshot` (latest wins) for a reader on another thread.

    Use :meth:`__call__` as the fit's ``on_state``: a snapshot is taken when ``min_interval_s`` has passed
    since the last one, at the first state of each stage, and for the final one. :meth:`take` returns the
    newest snapshot not yet taken, or None.

    ``prepare(snapshot)``, when given, runs on the fit's thread right after each snapshot and its return
    value travels in ``snapshot.extra['prepared']``: work for the reader done with the fit's own threads
    between two steps, instead of on another thread competing with the fit for the cores (a viewer's
    frame of the state). ``max_share``: the share of the fit's time that snapshots and ``prepare`` may
    take; the interval grows when they are slow (never below ``min_interval_s``)."""

    def __init__(self, min_interval_s: float = 1.0, prepare: Callable[[FitState], object] | None = None,
                 max_share: float | None = None):
        self.min_interval_s = min_interval_s
        self.prepare = prepare
        self.max_share = max_share
        self.interval_s = min_interval_s
        self._lock = threading.Lock()
        self._state: FitState | None = None
        self._serial = 0
        self._taken = 0
        self._last_t = -1e9
        self._last_stage: str | None = None
        self.latest_label = ""

    def __call__(self, state: FitState) -> None:
        self.latest_label = state.label()
        now = time.perf_counter()
        if not (state.final or state.stage != self._last_stage or now - self._last_t >= self.interval_s):
            return
        snap = state.snapshot()
        if self.prepare is not None:
            snap.extra["prepared"] = self.prepare(snap)
        done = time.perf_counter()
        if self.max_share:
            self.interval_s = max(self.min_interval_s, (done - now) / self.max_share)
        with self._lock:
            self._state = snap
            self._serial += 1
        self._last_t, self._last_stage = done, state.stage

    def take(self) -> FitState | None:
        with self._lock:
            if self._serial == self._taken:
                return None
            self._taken = self._serial
            return self._state

    @property
    def serial(self) -> int:
        return self._serial


def fit_states(run: Callable[[OnState, threading.Event], object], min_interval_s: float = 0.5,
               poll_s: float = 0.05) -> Iterator[FitState]:
    """Run ``run(on_state, cancel)`` (a fit) in a thread and yield its snapshots as they come, latest
    wins; the last one yielded has ``final`` set when the fit ended normally, and carries the fit's
    return value in ``extra['result']``. Closing the iterator early (``break``) cancels the fit and
    waits for its thread. The fit's exceptions are raised here."""
    latest = LatestState(min_interval_s)
    cancel = threading.Event()
    box: dict = {}

    def body():
        try:
            box["result"] = run(latest, cancel)
        except BaseException as e:  # noqa: BLE001 - re-raised on the reader's thread
            box["error"] = e

    th = threading.Thread(target=body, name="pv3d-fit", daemon=True)
    th.start()
    try:
        while th.is_alive():
            th.join(poll_s)
            s = latest.take()
            if s is not None and not s.final:
                yield s
        if "error" in box:
            raise box["error"]
        s = latest.take() or latest._state
        if s is not None:
            s.final = True
            s.extra["result"] = box.get("result")
            yield s
    finally:
        cancel.set()
        th.join()


__all__ = ["FitState", "OnState", "StageClock", "LatestState", "fit_states", "format_seconds"]
