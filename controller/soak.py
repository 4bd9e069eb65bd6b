"""Resource samples for long runs: memory, threads and open files, taken from a side thread.

``with ResourceSampler(every_s) as s: ...`` samples the process every ``every_s`` seconds
(and at the start and end) from a daemon thread that sleeps in between, so the loop being
measured is woken by nothing. ``s.samples`` is a list of dicts (t_s, rss_mib, threads,
native_threads, open_files); :func:`growth_per_hour` fits RSS against time.
Linux (/proc); elsewhere the native counts are -1.
"""

from __future__ import annotations

import os
import resource
import threading
import time

import numpy as np

__all__ = ["ResourceSampler", "sample", "growth_per_hour"]


def _count(path: str) -> int:
    try:
        return len(os.listdir(path))
    except OSError:
        return -1


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # the peak, in KiB on Linux


def sample(t0: float) -> dict[str, float]:
    """One sample: seconds since ``t0``, resident memory (MiB), Python and native threads, open files."""
    return {"t_s": round(time.perf_counter() - t0, 3), "rss_mib": round(_rss_mib(), 2),
            "threads": threading.active_count(), "native_threads": _count("/proc/self/task"),
            "open_files": _count("/proc/self/fd")}


class ResourceSampler:
    def __init__(self, every_s: float):
        if not every_s > 0:
            raise ValueError(f"every_s = {every_s} must be > 0")
        self.every_s = float(every_s)
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtmpc-soak-sampler", daemon=True)

    def __enter__(self) -> "ResourceSampler":
        self._t0 = time.perf_counter()
        self.samples.append(sample(self._t0))
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(sample(self._t0))

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(sample(self._t0))


def growth_per_hour(samples: list[dict[str, float]], key: str = "rss_mib", skip_s: float = 0.0) -> float:
    """Least-squares slope of ``key`` against time, per hour, over samples after ``skip_s``
    (the warm-up: imports, first allocations); NaN with fewer than 3 samples."""
    pts = [(s["t_s"], s[key]) for s in samples if s["t_s"] >= skip_s]
    if len(pts) < 3:
        return float("nan")
    t, v = np.array(pts, dtype=float).T
    return float(np.polyfit(t, v, 1)[0] * 3600.0)
