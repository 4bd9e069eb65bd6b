"""Fakes for the control loop tests: a virtual clock, a scripted robot and planner.

No MuJoCo, no sleeping: time is virtual. A planner that should overrun announces it by
setting ``clock.stall`` and then blocks on its ``release`` event; the fake clock's
``wait_for`` sees the stall and jumps to the deadline (the plan is late). A robot hook
releases the planner at a chosen cycle and waits until it has resumed, so which cycle
sees the late plan is fixed. Every wait has a real-time guard: a bug fails, never hangs.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np
from rtmpc.controller import Observation, VirtualClock
from rtmpc.planners.base import Planner, PlanStats

GUARD_S = 5.0  # real seconds any wait in a test may take before it fails


class FakeClock(VirtualClock):
    """Virtual seconds; records every requested wake-up time in ``sleeps``."""

    def __init__(self, start: float = 0.0):
        super().__init__(start, real_timeout_s=GUARD_S)
        self.stall = threading.Event()  # set by a planner that is going to overrun
        self.sleeps: list[float] = []

    def sleep_until(self, t: float) -> None:
        self.sleeps.append(t)
        super().sleep_until(t)

    def wait_for(self, event: threading.Event, deadline: float) -> bool:
        guard = time.monotonic() + GUARD_S
        while not event.is_set():
            if self.stall.is_set():  # the plan in flight overruns: time passes to the deadline
                super().sleep_until(deadline)
                return False
            if time.monotonic() > guard:
                raise AssertionError("fake clock: the planner neither finished nor stalled")
            event.wait(0.0002)  # poll the two events (bounded by the guard)
        return True


class FakeRobot:
    """Scripted robot. Cycle c (the loop's c-th read after its set-up read) returns
    ``values(c)`` (O,), seq ``seq(c)``, stamp ``stamp(c, now)``, reward ``reward(c)`` and
    done when c == done_at. ``hooks[c]()`` runs inside that read."""

    def __init__(self, clock, obs_dim: int = 2, values: Callable | None = None,
                 seq: Callable | None = None, stamp: Callable | None = None,
                 reward: Callable | None = None, done_at: int | None = None,
                 hooks: dict[int, Callable] | None = None):
        self.clock = clock
        self.values = values or (lambda c: np.arange(obs_dim, dtype=float) + c)
        self.seq = seq or (lambda c: c)
        self.stamp = stamp or (lambda c, now: now)
        self.reward = reward or (lambda c: 1.0 + 0.5 * c)
        self.done_at = done_at
        self.hooks = hooks if hooks is not None else {}
        self.reads = 0
        self.sent: list[np.ndarray] = []
        self.sent_at: list[float] = []
        self.read_values: list[np.ndarray] = []
        self.closed = False

    def read(self) -> Observation:
        c = self.reads - 1  # -1: the loop's set-up read
        self.reads += 1
        if c in self.hooks:
            self.hooks[c]()
        values = np.asarray(self.values(c), dtype=float)
        self.read_values.append(values.copy())
        now = self.clock.now()
        return Observation(values=values, stamp=self.stamp(c, now), seq=self.seq(c),
                           reward=self.reward(c), done=c == self.done_at)

    def send(self, action: np.ndarray) -> None:
        self.sent.append(np.array(action, copy=True))
        self.sent_at.append(self.clock.now())

    def close(self) -> None:
        self.closed = True


class FakePlanner(Planner):
    """Call i plans ``value(i)`` (A,): row h of its plan is ``value(i) + 0.001 h``; with a
    ``first_action`` row 0 is that action instead and the call returns row 1.

    advance: {i: seconds} the call moves the clock on (sync mode); stall: calls that
    overrun (set ``clock.stall``, block until ``release``); nan: calls that return NaN;
    fail: calls that raise; action: optional ``action(i) -> (A,)`` override.
    """

    def __init__(self, clock: FakeClock, horizon: int = 5, act_dim: int = 1,
                 advance: dict[int, float] | None = None, stall: set[int] = frozenset(),
                 nan: set[int] = frozenset(), fail: set[int] = frozenset(),
                 action: Callable | None = None):
        self.clock, self.H, self.A = clock, horizon, act_dim
        self.advance, self.stall, self.nan, self.fail = advance or {}, stall, nan, fail
        self.action_fn = action
        self.release = threading.Event()
        self.resumed = threading.Event()
        self.stats = PlanStats()
        self.calls = 0
        self.resets = 0
        self.obs_seen: list[np.ndarray] = []
        self.first_seen: list[np.ndarray | None] = []
        self._plan = np.zeros((horizon, act_dim))

    @staticmethod
    def value(i: int) -> float:
        return 0.01 * (i % 50)

    def row(self, i: int, h: int) -> np.ndarray:
        """Row h of call i's plan (A,)."""
        base = self.action_fn(i) if self.action_fn else np.full(self.A, self.value(i))
        return np.asarray(base, dtype=float) + 0.001 * h

    def plan(self, obs: np.ndarray, first_action: np.ndarray | None = None) -> np.ndarray:
        i = self.calls
        self.calls += 1
        self.obs_seen.append(np.array(obs, copy=True))
        self.first_seen.append(None if first_action is None else np.array(first_action, copy=True))
        if i in self.advance:
            self.clock.advance(self.advance[i])
        if i in self.stall:
            self.clock.stall.set()
            if not self.release.wait(GUARD_S):
                raise AssertionError("fake planner: never released")
            self.release.clear()
            self.clock.stall.clear()
            self.resumed.set()
        if i in self.fail:
            raise RuntimeError(f"planner failure in call {i}")
        for h in range(self.H):
            self._plan[h] = self.row(i, h)
        if first_action is not None:
            self._plan[0] = first_action
        if i in self.nan:
            self._plan[:] = np.nan
        self.stats.predicted_return = float(i)
        self.stats.disagreement = 0.5 * i
        return self._plan[0 if first_action is None else 1].copy()

    def planned_actions(self) -> np.ndarray:
        return self._plan

    def reset(self) -> None:
        self.resets += 1
        self._plan[:] = 0.0

    def let_go(self) -> None:
        """Release a stalled call and wait until it has resumed (test thread)."""
        self.resumed.clear()
        self.release.set()
        if not self.resumed.wait(GUARD_S):
            raise AssertionError("fake planner: did not resume")
