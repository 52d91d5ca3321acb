"""Live refinement (pv3d_core.live): snapshots are copies, latest wins, time left, the fit iterator."""
import threading
import time

import pytest
import torch

from pv3d_core.errors import Cancelled
from pv3d_core.live import FitState, LatestState, StageClock, fit_states, format_seconds


def _state(stage="pti", step=1, total=10, tuned=True, final=False):
    G = torch.nn.Linear(2, 2)
    return FitState(stage, step, total, torch.zeros(1, 3, 4), G, None, 0.5, tuned=tuned, final=final)


def test_snapshot_is_a_copy_when_the_fit_tunes_the_generator():
    s = _state()
    snap = s.snapshot()
    with torch.no_grad():
        s.generator.weight.add_(1.0)
        s.ws.add_(1.0)
    assert not torch.equal(snap.generator.weight, s.generator.weight) and snap.ws.abs().sum() == 0
    untuned = _state(tuned=False)
    assert untuned.snapshot().generator is untuned.generator       # the caller's model, not copied


def test_latest_state_keeps_the_newest_and_throttles():
    latest = LatestState(min_interval_s=60)
    assert latest.take() is None
    latest(_state("w", 1))
    latest(_state("w", 2))                  # within the interval: not copied
    latest(_state("pti", 1))                # a new stage: copied
    s = latest.take()
    assert (s.stage, s.step) == ("pti", 1) and latest.take() is None
    latest(_state("pti", 5, final=True))    # the final state always
    assert latest.take().final and "pti 5/10" in latest.latest_label


def test_latest_state_prepares_each_snapshot_on_the_fits_thread_within_its_share():
    """prepare runs on the caller's (the fit's) thread with the snapshot, its value travels with it; when
    snapshot and prepare are slow, the interval grows so that they take at most max_share of the time."""
    seen = []

    def prepare(snap):
        seen.append((threading.current_thread(), snap.step))
        time.sleep(0.05)
        return f"frame of step {snap.step}"
    latest = LatestState(min_interval_s=0.0, prepare=prepare, max_share=0.25)
    latest(_state("pti", 1))
    s = latest.take()
    assert s.extra["prepared"] == "frame of step 1" and seen == [(threading.current_thread(), 1)]
    assert latest.interval_s >= 0.2                  # 0.05 s of work at most a quarter of the time
    latest(_state("pti", 2))                         # too soon after the last one: skipped
    assert latest.take() is None and len(seen) == 1
    latest(_state("pti", 3, final=True))             # the final state always
    assert latest.take().extra["prepared"] == "frame of step 3"
    plain = LatestState(min_interval_s=0.0)
    plain(_state("pti", 1))
    assert "prepared" not in plain.take().extra and plain.interval_s == 0.0


def test_stage_clock_counts_down():
    clock = StageClock([("w+", 4, 1.0), ("pti", 2, 4.0)], seconds_per_unit=1.0)
    eta0, _ = clock.tick("w+", 0)
    assert eta0 == pytest.approx(4 * 1 + 2 * 4)
    for i in range(1, 5):
        time.sleep(0.01)
        eta, stage_eta = clock.tick("w+", i)
    assert stage_eta == 0 and eta == pytest.approx(2 * 4 * clock.unit) and clock.unit < 0.1
    assert format_seconds(65) == "1 min 05 s" and format_seconds(3.2) == "3 s"


def test_fit_states_yields_then_the_final_state_with_the_result():
    def fit(on_state, cancel):
        for i in range(5):
            on_state(_state("w", i + 1, 5, tuned=False))
            time.sleep(0.02)
        on_state(_state("done", 1, 1, final=True))
        return "result"
    got = list(fit_states(fit, min_interval_s=0.0, poll_s=0.005))
    assert got and got[-1].final and got[-1].extra["result"] == "result"
    assert all(not s.final for s in got[:-1])


def test_closing_the_iterator_cancels_the_fit_and_errors_come_through():
    stopped = threading.Event()

    def slow(on_state, cancel):
        for i in range(1000):
            if cancel.is_set():
                stopped.set()
                raise Cancelled("x")
            on_state(_state("pti", i + 1, 1000))
            time.sleep(0.01)
    it = fit_states(slow, min_interval_s=0.0, poll_s=0.005)
    next(it)
    it.close()
    assert stopped.is_set()

    def broken(on_state, cancel):
        raise ValueError("boom")
    with pytest.raises(ValueError, match="boom"):
        list(fit_states(broken))
