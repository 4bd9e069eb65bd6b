"""The planner thread of the async loop: one plan at a time, handed over under a lock.

Threads: the loop thread calls :meth:`PlanWorker.submit`, waits on :attr:`ready` (with a
deadline, through the clock) and calls :meth:`PlanWorker.take`; only the worker thread
touches the planner. The planner releases the GIL in its kernels (Numba ``nogil``, ONNX
Runtime), so the loop thread keeps time while it plans; in a wall-clock run the thread also
lowers its own priority (``nice``) below the loop thread's (controller.priority). As in
MJPC, a finished plan is copied out under the lock and the loop only ever reads that copy.
"""

from __future__ import annotations

import logging
import math
import threading

import numpy as np
from rtmpc.controller.base import Clock
from rtmpc.controller.priority import lower_this_thread
from rtmpc.planners.base import Planner

__all__ = ["PlanWorker", "PlannerFailed"]

logger = logging.getLogger(__name__)


class PlannerFailed(RuntimeError):
    """The planner raised in the planner thread; the original error is the cause."""


class PlanWorker:
    """Runs ``planner.plan(obs)`` in a daemon thread, one job at a time.

    A job is tagged with the loop's cycle and slot. Its result (kept until taken): the
    action (A,), the whole plan (H, A) from ``planner.planned_actions()``, the duration
    on ``clock``, and the planner's predicted return and disagreement. Built with
    ``first_action=True`` (commit = next), every job carries the action already committed
    for its slot and runs ``planner.plan(obs, first_action)``.
    """

    def __init__(self, planner: Planner, clock: Clock, obs_dim: int, horizon: int, act_dim: int,
                 first_action: bool = False, nice: int = 0):
        self.planner, self.clock = planner, clock
        self.nice = nice  # the thread's nice value (below the loop's thread; 0 = unchanged)
        self.ready = threading.Event()  # a result waits to be taken
        self._go = threading.Event()  # a job waits to be planned (or stop)
        self._lock = threading.Lock()
        self._stop = False
        self.busy = False  # a job is submitted and its result not yet published
        self._obs = np.zeros(obs_dim)
        self._first = np.zeros(act_dim) if first_action else None
        self._job = (-1, -1)  # (cycle, slot) of the job in flight
        # the published result (worker writes under the lock, loop copies under the lock)
        self.action = np.zeros(act_dim)
        self.plan = np.zeros((horizon, act_dim))
        self.cycle, self.slot = -1, -1
        self.plan_s = math.nan
        self.predicted_return = math.nan
        self.disagreement = math.nan
        self.no_plan = False  # the published plan is a planner's "no plan" (NaN; safe action)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rtmpc-planner", daemon=True)
        self._thread.start()

    # -- loop thread -----------------------------------------------------------------------
    def submit(self, cycle: int, slot: int, obs: np.ndarray,
               first_action: np.ndarray | None = None) -> None:
        """Plan on ``obs`` (O,) (copied) for ``cycle``; the worker must not be busy.
        ``first_action`` (A,) (copied): given exactly when built with ``first_action=True``."""
        with self._lock:
            np.copyto(self._obs, obs)
            if self._first is not None:
                np.copyto(self._first, first_action)
            self._job = (cycle, slot)
            self.busy = True
        self._go.set()

    def take(self, plan_out: np.ndarray, action_out: np.ndarray) -> tuple[int, int, bool]:
        """Copy the published result into ``plan_out`` (H, A) and ``action_out`` (A,), mark
        it taken; returns its (cycle, slot, no_plan). Raises PlannerFailed if the plan raised."""
        with self._lock:
            self.ready.clear()
            if self.error is not None:
                raise PlannerFailed(f"the planner raised in cycle {self.cycle}: {self.error!r}") \
                    from self.error
            np.copyto(plan_out, self.plan)
            np.copyto(action_out, self.action)
            return self.cycle, self.slot, self.no_plan

    def close(self, timeout_s: float) -> bool:
        """Stop the thread; False if a plan still runs after ``timeout_s``."""
        self._stop = True
        self._go.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.warning("planner thread still busy %.1f s after the run ended: left behind "
                           "(daemon)", timeout_s)
            return False
        return True

    # -- worker thread ----------------------------------------------------------------------
    def _run(self) -> None:
        planner, clock, first = self.planner, self.clock, self._first
        lower_this_thread(self.nice)
        while True:
            self._go.wait()
            self._go.clear()
            if self._stop:
                return
            cycle, slot = self._job  # stable: the loop submits only when not busy
            error = None
            t0 = clock.now()
            try:
                action = planner.plan(self._obs) if first is None else planner.plan(self._obs, first)
                plan = planner.planned_actions()
                t1 = clock.now()
                stats = planner.stats
                with self._lock:
                    np.copyto(self.action, action)
                    np.copyto(self.plan, plan)
                    self.predicted_return = stats.predicted_return
                    self.disagreement = stats.disagreement
                    self.no_plan = bool(getattr(stats, "no_plan", False))
            except BaseException as err:  # handed to the loop thread, which raises it
                t1 = clock.now()
                error = err
            with self._lock:
                self.cycle, self.slot, self.plan_s = cycle, slot, t1 - t0
                self.error = error
                self.busy = False
                self.ready.set()
            if error is not None:
                return
