"""Host memory for CPU rendering: keep freed large blocks for reuse instead of handing them back.

glibc's allocator serves every block of 32 MB or more with a fresh ``mmap`` and returns it to the
system with ``munmap`` when it is freed. A 512² frame of the released model allocates dozens of such
tensors (a 128-channel 512² feature map is 134 MB), so each frame pays for the kernel to map and zero
every page again: a 512² frame faulted in about 250 000 fresh pages (1 GB; 148 000 with cached
tri-planes), and a 134 MB tensor copy took 70-80 ms into fresh pages against 14 ms into reused ones.
``python benchmarks/bench_realtime.py --part memory`` compares the two settings side by side.

:func:`keep_freed_memory` asks glibc (``mallopt``) to serve large blocks from its heap and never to
trim it, so that the next frame reuses the pages the last one freed. The price: between frames the
process keeps its peak working set instead of giving it back. Rendering the released model at 512²
(36 frames, the tri-plane cache full): RSS levels off at 1.39 GB against 0.87 GB without; the peak
itself hardly moves (1.04 against 1.05 GB over 8 frames), and small allocations in between fragment
the heap a little (a synthetic frame loop settled at 1.0-1.5x its working set). It is process-wide and
idempotent; :class:`pv3d_core.pipeline.FrameRenderer` calls it for CPU rendering. Elsewhere than glibc
(macOS, musl), or with ``PV3D_KEEP_FREED_MEMORY=0``, it does nothing.
"""
from __future__ import annotations

import ctypes
import logging
import platform
import threading

from .rules import env_flag

log = logging.getLogger(__name__)

ENV = "PV3D_KEEP_FREED_MEMORY"
_M_TRIM_THRESHOLD = -1       # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_state: dict = {"done": False, "applied": False, "reason": "not asked yet"}
_lock = threading.Lock()


def keep_freed_memory() -> bool:
    """Make glibc keep freed large blocks for reuse (once per process). True when it is in force."""
    with _lock:
        if _state["done"]:
            return _state["applied"]
        _state["done"] = True
        if not env_flag(ENV, True):
            _state["reason"] = f"off by {ENV}"
            return False
        if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
            _state["reason"] = "not glibc"
            return False
        try:
            libc = ctypes.CDLL(None)
            ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1) == 1
        except (OSError, AttributeError) as e:
            _state["reason"] = f"mallopt unavailable ({e})"
            return False
        _state["applied"] = ok
        _state["reason"] = "in force" if ok else "mallopt refused"
        log.debug("keep freed memory: %s", _state["reason"])
        return ok


def status() -> str:
    """Whether :func:`keep_freed_memory` is in force, and why not."""
    return _state["reason"]
