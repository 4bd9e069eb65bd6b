"""Clocks for runs that do not wait on the wall clock (lockstep simulation).

* :class:`VirtualClock`: time moves only when the loop sleeps; planning takes no time,
  so a plan is never late. Deterministic: lockstep with a simulator, tests.
* :class:`FastForwardClock`: real seconds while the loop computes, but a sleep jumps
  straight to its wake-up time. A lockstep run then sees the real planning time (and its
  deadline misses and fallbacks) without waiting out the idle part of each period.

Both are thread-safe for one writer (the loop thread) and any number of readers.
"""

from __future__ import annotations

import threading
import time

from rtmpc.controller.base import Clock

__all__ = ["VirtualClock", "FastForwardClock"]


class VirtualClock(Clock):
    """Simulated seconds, starting at ``start``, that move only by :meth:`sleep_until`
    (a jump, never backwards) and :meth:`advance`.

    :meth:`wait_for` waits for the planner without moving time (planning is
    instantaneous); after ``real_timeout_s`` real seconds without a result it gives up,
    jumps to the deadline and reports the plan late, so a hung planner cannot hang a run.
    """

    def __init__(self, start: float = 0.0, real_timeout_s: float = 60.0):
        self.t = float(start)
        self.real_timeout_s = real_timeout_s

    def now(self) -> float:
        return self.t

    def sleep_until(self, t: float) -> None:
        if t > self.t:
            self.t = t

    def advance(self, dt: float) -> None:
        self.t += dt

    def wait_for(self, event: threading.Event, deadline: float) -> bool:
        if event.wait(self.real_timeout_s):
            return True
        self.sleep_until(deadline)
        return False


class FastForwardClock(Clock):
    """Monotonic seconds that skip idle time: ``now()`` is the virtual time of the last
    wake-up plus the real seconds since then; ``sleep_until(t)`` returns at once, with
    the clock set to ``t`` (when ``t`` is ahead).

    A plan still running in another thread while the loop sleeps sees the jump, so a
    late plan's measured duration includes the skipped idle time (pessimistic).
    """

    def __init__(self, start: float = 0.0):
        self._base = (float(start), time.monotonic())  # (virtual, real), swapped whole

    def now(self) -> float:
        virtual, real = self._base
        return virtual + (time.monotonic() - real)

    def sleep_until(self, t: float) -> None:
        if t > self.now():
            self._base = (t, time.monotonic())
