"""How the viewer's threads share the CPU cores: the UI and the render worker first, background jobs
(a portrait fit, an export) with what is left.

* Priority: a job's thread lowers its own scheduling priority (``nice`` +:data:`JOB_NICE` on Linux,
  where a thread has its own), and so do the threads it starts (PyTorch's, OpenMP's), which inherit it.
* Thread counts: the render worker computes with one core fewer than the machine has (the UI keeps
  one); a job with all of them (:data:`JOB_THREADS`) while the viewer is idle, which is most of the
  time a fit runs, and with one while the user interacts (:data:`USER_ACTIVE`, set by the UI loop;
  the job looks at it between its steps, :func:`share_cores`). Niced threads alone are not enough: an
  OpenMP team whose one thread is preempted by the render worker spins its other thread at the
  barrier, on the core the UI needs (measured: the UI loop while dragging fell from 46 to 32 fps).
  PyTorch keeps an intra-op thread count per calling thread once that thread has computed, so
  :func:`use_threads` fixes the calling thread's own count, whatever other threads set.

``$PV3D_JOB_NICE`` and ``$PV3D_JOB_THREADS`` override the two job settings (for A/B runs).
"""
from __future__ import annotations

import logging
import math
import os
import sys
import threading

log = logging.getLogger(__name__)


def env_number(name: str, default: float, lo: float, hi: float) -> float:
    """``$name`` as a number in [lo, hi], for the viewer's A/B overrides; unset gives ``default``, and so
    does a value that is not such a number, with one warning line (the viewer still opens)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not lo <= value <= hi:
        log.warning("$%s=%r is not a number from %g to %g: using %g", name, raw[:40], lo, hi, default)
        return default
    return value


CORES = os.cpu_count() or 2
# how much lower than the UI a background job runs (Linux nice steps); $PV3D_JOB_NICE=0 turns it off
JOB_NICE = int(env_number("PV3D_JOB_NICE", 10, 0, 19))
# how many threads a background job computes with (all the cores: it is niced); $PV3D_JOB_THREADS=N caps it
JOB_THREADS = max(1, min(CORES, int(env_number("PV3D_JOB_THREADS", CORES, 1, 1024))))
# the render worker's (and the UI thread's) threads: one core stays with the UI loop
RENDER_THREADS = max(1, CORES - 1)


def lower_thread_priority(step: int = JOB_NICE) -> int | None:
    """Lower the calling thread's priority by ``step`` nice levels (Linux: per thread). Returns the new
    nice value, or None where the platform has no per-thread priority or refuses."""
    if not sys.platform.startswith("linux") or step <= 0:
        return None
    try:
        tid = threading.get_native_id()
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, now + step))
        return os.getpriority(os.PRIO_PROCESS, tid)
    except (OSError, AttributeError):
        return None


# set by the UI loop while the user interacts (input in the last second, playback, a path preview)
USER_ACTIVE = threading.Event()
_job_threads = threading.local()


def share_cores() -> int:
    """For a background job, between its steps, on its own thread: compute with one thread while the
    user interacts with the viewer, with :data:`JOB_THREADS` otherwise. Returns the count in use."""
    want = 1 if USER_ACTIVE.is_set() else JOB_THREADS
    if getattr(_job_threads, "n", None) != want:
        _job_threads.n = use_threads(want)
    return _job_threads.n


def use_threads(n: int) -> int:
    """Make the calling thread compute with ``n`` intra-op threads and return the count it now has.

    PyTorch gives a thread the process-wide count at its first parallel operation and keeps it for that
    thread afterwards; asking for the count first takes that step, so that the ``set`` below is this
    thread's own and later calls from other threads do not change it."""
    import torch

    torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    return torch.get_num_threads()
