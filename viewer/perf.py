"""What the performance panel plots: recent UI frame times, render times and the renderer's stages,
kept in fixed-size ring buffers (numpy), with the time of each sample."""
from __future__ import annotations

import time

import numpy as np

SERIES = ("ui", "frame", "mapping", "backbone", "render")
LABELS = {"ui": "UI frame", "frame": "frame", "mapping": "mapping", "backbone": "backbone",
          "render": "render+SR"}


class PerfHistory:
    def __init__(self, size: int = 400, clock=time.perf_counter):
        self.size = size
        self.clock = clock
        self.t0 = clock()
        self._t = {k: np.zeros(size) for k in SERIES}
        self._v = {k: np.zeros(size) for k in SERIES}
        self._n = {k: 0 for k in SERIES}

    def add(self, series: str, ms: float, now: float | None = None) -> None:
        if series not in self._t:
            return
        i = self._n[series] % self.size
        self._t[series][i] = (self.clock() if now is None else now) - self.t0
        self._v[series][i] = float(ms)
        self._n[series] += 1

    def add_render(self, elapsed_ms: float, timings: dict, now: float | None = None) -> None:
        self.add("frame", elapsed_ms, now)
        for k in ("mapping", "backbone", "render"):
            if k in timings:
                self.add(k, timings[k], now)

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(times in s, values in ms), oldest first."""
        n = self._n[name]
        if n <= self.size:
            return self._t[name][:n].copy(), self._v[name][:n].copy()
        i = n % self.size
        return np.r_[self._t[name][i:], self._t[name][:i]], np.r_[self._v[name][i:], self._v[name][:i]]

    def median(self, name: str, last: int = 60) -> float | None:
        _, v = self.series(name)
        return float(np.median(v[-last:])) if len(v) else None

    def count(self, name: str) -> int:
        return self._n[name]
