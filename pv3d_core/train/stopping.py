"""How a training stops early: Ctrl-C, SIGTERM and SIGHUP all ask it to save a checkpoint and return.

A batch scheduler stops a job with SIGTERM (and a grace period before SIGKILL); closing the terminal
sends SIGHUP. Both used to end a training without a checkpoint, only Ctrl-C saved one: within
:func:`stop_on_signals` the three set the same event, which the loop checks between steps.
"""
from __future__ import annotations

import contextlib
import signal
import threading

STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event):
    """Within: SIGINT, SIGTERM and SIGHUP set ``stop`` instead of interrupting (main thread only;
    elsewhere signals cannot be handled and the caller's ``cancel`` event is the way to stop)."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    old = {}
    try:
        for s in STOP_SIGNALS:
            old[s] = signal.signal(s, lambda *a: stop.set())
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


__all__ = ["stop_on_signals", "STOP_SIGNALS"]
