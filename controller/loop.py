"""The fixed-rate receding-horizon control loop.

Each cycle k wakes at the absolute time ``t0 + k * period`` (computed, never accumulated,
so no drift), then: read the robot, plan, filter, send, record. Planning has a deadline,
``t0 + k * period + budget`` with ``budget = period - deadline_margin``.

Modes (:class:`~controller.config.LoopConfig` ``mode``):

* ``async`` (default): the planner runs in a worker thread (:class:`PlanWorker`); the
  loop waits for it until the deadline. A plan not ready by then is a *miss*: the
  fallback is sent on time. The fallback is row ``k - j`` of the last finished plan,
  made on the observation of slot ``j`` (so ``planned_actions()[1]`` right after that
  plan, advanced by one per slot it is reused), or the safe action when there is no plan
  yet or the plan is used up. A late plan is never sent as it stands: when it finishes
  (during a later cycle's wait), it becomes the fallback source (its row ``k - j``), and
  the loop at once submits that cycle's observation, so planning catches up without
  skipping a cycle's chance to plan. Its duration is written back into its own row.
* ``sync``: the planner runs in the loop thread. A late plan is detected after the fact,
  counted as a miss and sent late; no fallback.

A cycle that wakes a whole period or more late skips to the current slot (counted as
``skipped_slots``), so the schedule stays on its grid and the loop never bursts.

When the action is committed (:class:`~controller.config.LoopConfig` ``commit``):

* ``now``: as above. The action planned on the observation read at ``t_k`` is
  sent at ``t_k`` + plan time, while the action of slot ``k - 1`` still acts: a model
  that assumes its action acts from the observation on is one plan time off.
* ``next`` (default): one-period delay compensation. Cycle k wakes at ``t_k``, reads ``o_k`` and at
  once sends the action committed for slot k; then it plans on ``o_k`` with that action
  fixed as the plan's row 0 (``planner.plan(o_k, first_action)``), deadline ``t_k +
  budget`` (= ``t_{k+1}`` - margin), and the plan's row 1 is committed for slot k + 1.
  Slot 0 sends the warm-up plan made on the set-up observation before the clock starts
  (its row 0; the safe action with ``warmup_plans: 0``); the planner is not reset after
  it. The same fallback rule holds with the plan's rows shifted: slot k sends row
  ``k - j`` of the last finished plan, made on the observation of slot j (row 1 when the
  plan of slot k - 1 was on time: source plan; a later row: fallback; used up: safe). A
  late plan counts as a miss in its own cycle's row, and the fallback shows in the next
  cycle's source. In ``sync`` mode plans age by cycles, not slots: the plan of cycle n,
  late or not, is sent by cycle n + 1 (late only when it overran the whole period, and
  then still its row 1, as a lockstep robot, which waits for the loop, needs). A cycle
  with an unusable observation sends the safe action and plans nothing, so the next
  cycle falls back.

Lockstep simulation: pass a :class:`~controller.clocks.VirtualClock` (planning takes no
time, no wall-clock sleep) or a :class:`~controller.clocks.FastForwardClock` (real
planning time and misses, idle time skipped); a wall-clock robot uses
:class:`~controller.base.MonotonicClock` (the default).

During :meth:`ControlLoop.run` the garbage collector is off (collected at the end), the
interpreter's thread switch interval is shortened, and, in the main thread, SIGINT and
SIGTERM set a stop flag; all are restored afterwards. Against the wall clock the loop's
thread also asks for SCHED_FIFO (``loop.rt_priority``) and the planner and MCAP writer
threads lower theirs (``loop.planner_nice``; controller.priority): the summary's
``rt_priority`` says what the loop got (0: normal scheduling). On a stop or an error the safe
action is sent and the telemetry written before :meth:`run` returns or re-raises.
"""

from __future__ import annotations

import gc
import inspect
import logging
import math
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
from rtmpc.controller import priority
from rtmpc.controller.base import Clock, MonotonicClock, Robot
from rtmpc.controller.config import LoopConfig, LoopTiming
from rtmpc.controller.safety import SafetyFilter
from rtmpc.controller.telemetry import FALLBACK, NONE, PLAN, SAFE, Telemetry
from rtmpc.controller.worker import PlanWorker
from rtmpc.planners.base import Planner

__all__ = ["ControlLoop"]

logger = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ControlLoop:
    """Drive ``robot`` with ``planner`` at a fixed rate.

    robot: :class:`~controller.base.Robot`; planner: a :class:`~planners.base.Planner`
    whose ``planned_actions()`` is (H, A); safety: a :class:`SafetyFilter` over the same
    A actions; config: :class:`LoopConfig`; clock: default MonotonicClock; timing: the
    resolved :class:`LoopTiming` (default: resolved from ``config``, whose rate_hz must
    then be set), the same object the safety filter and robot were built for; run_dir: where :meth:`run` writes
    ``telemetry.npz`` and ``telemetry_summary.json``, and streams every cycle to
    ``telemetry-<date>-<time>.mcap`` while it runs (``loop.mcap``; :mod:`controller.mcap_log`)
    (None: nothing written); obs_names/act_names: the entries' names in that stream.

    After :meth:`run`, :attr:`telemetry` holds the records and :attr:`summary` the summary.
    :meth:`stop` may be called from any thread.
    """

    def __init__(self, robot: Robot, planner: Planner, safety: SafetyFilter,
                 config: LoopConfig = LoopConfig(), *, clock: Clock | None = None,
                 timing: LoopTiming | None = None, run_dir: str | Path | None = None,
                 obs_names: tuple[str, ...] = (), act_names: tuple[str, ...] = ()):
        self.robot, self.planner, self.safety, self.config = robot, planner, safety, config
        self.timing = timing if timing is not None else LoopTiming.resolve(config)
        self.clock = clock if clock is not None else MonotonicClock()
        self._wall = isinstance(self.clock, MonotonicClock)  # thread priorities only against the wall clock
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.telemetry: Telemetry | None = None
        self.summary: dict[str, Any] | None = None
        self._stop_reason: str | None = None
        self._worker: PlanWorker | None = None
        self._left_behind: PlanWorker | None = None  # a planner thread that outlived its run
        self._names = (tuple(obs_names), tuple(act_names))  # for the MCAP stream's fields
        self._stream = None

    def stop(self, reason: str = "stop") -> None:
        """Ask the loop to end after the current cycle (sends the safe action)."""
        self._stop_reason = reason

    # -- run ------------------------------------------------------------------------------
    def run(self, max_cycles: int | None = None) -> dict[str, Any]:
        """Run one episode: until the observation says done, ``max_cycles`` cycles (default
        ``config.max_cycles``; 0 = no limit) or a stop. Returns the summary
        (:func:`controller.telemetry.summarize` plus stop_reason, mode, period_s, budget_s).

        Before the clock starts it reads the robot once (sizes, planner warm-up), resets
        the planner and allocates every buffer. It never closes the robot (the caller's).
        stop_reason: done, max_cycles, stop (or the reason given to :meth:`stop`), SIGINT,
        SIGTERM, error (the exception is re-raised after the safe action and telemetry).
        """
        cfg, safety = self.config, self.safety
        limit = cfg.max_cycles if max_cycles is None else max_cycles
        self._stop_reason = None
        obs0 = self.robot.read()
        self._setup(obs0)
        if self.run_dir is not None and cfg.mcap:
            from rtmpc.controller.mcap_log import McapStream

            self._stream = McapStream(self.telemetry, self.run_dir, *self._names, period_s=self.timing.period_s,
                                      nice=cfg.planner_nice if self._wall else 0).start()
        restore = self._enter_realtime()
        reason = "error"
        try:
            t0 = self.clock.now()
            safety.reset(t0)
            logger.info(self._start_line())
            reason = self._select_cycles()(t0, limit if limit > 0 else -1)
        finally:
            self._finish(reason, restore)
        return self.summary

    def _start_line(self) -> str:
        """The line logged when the clock starts (the servo loop says its two rates)."""
        cfg = self.config
        return (f"control loop: {self.timing.rate_hz:.4g} Hz, {cfg.mode}, commit {cfg.commit}, "
                f"plan budget {1e3 * self.timing.budget_s:.3g} ms, {self._H}-step plans")

    def _select_cycles(self):
        """The cycle loop this run uses (the servo loop has its own)."""
        return self._cycles_next if self.config.commit == "next" else self._cycles

    def _summarize(self, summary: dict[str, Any]) -> None:
        """Add a loop's own statistics to the summary (the servo loop's rates)."""

    def _setup(self, obs0) -> None:
        """Allocate everything the cycles use (off the clock): telemetry, buffers, worker."""
        cfg, planner = self.config, self.planner
        if self._left_behind is not None:
            if not self._left_behind.close(cfg.join_timeout_s):
                raise RuntimeError("the planner thread of the previous run is still planning: "
                                   "the planner cannot be shared with it")
            self._left_behind = None
        values = np.asarray(obs0.values)
        ahead = cfg.commit == "next"
        if ahead and "first_action" not in inspect.signature(planner.plan).parameters:
            raise TypeError(f"loop.commit = next needs planner.plan(obs, first_action), which "
                            f"{type(planner).__name__} does not have: set loop.commit: now")
        self.planner.reset()
        warm = bool(cfg.warmup_plans) and bool(np.all(np.isfinite(values)))
        if warm:
            for _ in range(cfg.warmup_plans):
                planner.plan(values)
            if not ahead:
                planner.reset()
        plan = np.asarray(planner.planned_actions())
        A = self.safety.act_dim
        if plan.ndim != 2 or plan.shape[1] != A:
            raise ValueError(f"planner.planned_actions() has shape {plan.shape} but the safety "
                             f"filter has {A} actions: expected (H, {A})")
        self._H = H = plan.shape[0]
        if ahead and H < 2:
            raise ValueError(f"loop.commit = next needs plans of at least 2 steps, the planner's "
                             f"have {H}: raise planner.horizon or set loop.commit: now")
        self.telemetry = Telemetry(cfg.telemetry_size, values.size, A)
        self._plan_buf = np.zeros((H, A))  # the last finished plan: fallback rows
        self._plan_slot = -(H + 1)  # its slot j (sync, commit next: cycle); none yet: row >= H
        self._planned = np.zeros(A)  # this cycle's action before the filter
        self._nan_a = np.full(A, np.nan)
        self._plan_s = self._pred = self._dis = math.nan
        self._missed = False
        self._no_plan = False  # the plan in _plan_buf is a planner's "no plan": the safe action goes
        if ahead and warm:  # the warm-up plan, made on the slot-0 observation, acts in slot 0
            np.copyto(self._plan_buf, plan)
            self._plan_slot = 0
            self._pred, self._dis = planner.stats.predicted_return, planner.stats.disagreement
            self._no_plan = bool(getattr(planner.stats, "no_plan", False))
        self._worker = (PlanWorker(planner, self.clock, values.size, H, A, first_action=ahead,
                                   nice=cfg.planner_nice if self._wall else 0)
                        if cfg.mode == "async" else None)

    def _wake(self, t0: float, k: int) -> tuple[int, float, float]:
        """Sleep until slot k; returns (slot, scheduled, wake). A wake a whole period or more
        late skips to the current slot."""
        period = self.timing.period_s
        scheduled = t0 + k * period
        self.clock.sleep_until(scheduled)
        wake = self.clock.now()
        if wake - scheduled >= period:  # overran whole periods: skip to the current slot
            k = max(k, int((wake - t0) / period))
            if t0 + k * period > wake:
                k -= 1
            scheduled = t0 + k * period
        return k, scheduled, wake

    def _cycles(self, t0: float, limit: int) -> str:
        """The fixed-rate loop, commit = now; returns why it ended."""
        clock, robot, safety, tel = self.clock, self.robot, self.safety, self.telemetry
        budget = self.timing.budget_s
        plan_step = self._plan_async if self._worker is not None else self._plan_sync
        nan, nan_a = math.nan, self._nan_a
        n = k = 0  # cycle index, schedule slot
        while self._stop_reason is None:
            k, scheduled, wake = self._wake(t0, k)
            obs = robot.read()
            if obs.done:
                tel.record(k, scheduled, wake, nan, obs, nan_a, nan_a, nan, False, NONE, nan, nan, 0)
                return "done"
            flags = safety.observe(obs, wake)
            if flags:  # unusable observation: no plan, safe action
                safety.substitute(flags)
                source, planned, plan_s, missed, pred, dis = SAFE, nan_a, nan, False, nan, nan
            else:
                source = plan_step(n, k, obs.values, scheduled + budget)
                flags = safety.no_plan() if self._no_plan and source != SAFE else safety.filter(self._planned)
                planned, plan_s, missed, pred, dis = (self._planned, self._plan_s, self._missed,
                                                      self._pred, self._dis)
            robot.send(safety.action)
            sent = clock.now()
            tel.record(k, scheduled, wake, sent, obs, planned, safety.action, plan_s, missed,
                       source, pred, dis, flags)
            n += 1
            k += 1
            if n == limit:
                return "max_cycles"
        return self._stop_reason

    def _cycles_next(self, t0: float, limit: int) -> str:
        """The fixed-rate loop, commit = next: send at wake, then plan the next slot."""
        clock, robot, safety, tel = self.clock, self.robot, self.safety, self.telemetry
        budget, H = self.timing.budget_s, self._H
        timed = self._worker is not None  # async: plans age by slots (time); sync: by cycles
        plan_step = self._plan_async_next if timed else self._plan_sync_next
        nan, nan_a, plan_buf, planned = math.nan, self._nan_a, self._plan_buf, self._planned
        n = k = 0  # cycle index, schedule slot
        while self._stop_reason is None:
            k, scheduled, wake = self._wake(t0, k)
            obs = robot.read()
            if obs.done:
                tel.record(k, scheduled, wake, nan, obs, nan_a, nan_a, nan, False, NONE, nan, nan, 0)
                return "done"
            bad = safety.observe(obs, wake)
            row = (k if timed else n) - self._plan_slot  # the last finished plan's row for now
            if bad:  # unusable observation: safe action, no plan
                flags = safety.substitute(bad)
                source, sent_planned, pred, dis = SAFE, nan_a, nan, nan
            elif row < H:  # row 1: the plan of the last slot (row 0: the warm-up plan, slot 0)
                np.copyto(planned, plan_buf[row])
                flags = safety.no_plan() if self._no_plan else safety.filter(planned)
                source = PLAN if row <= 1 else FALLBACK
                sent_planned, pred, dis = planned, self._pred, self._dis
            else:
                np.copyto(planned, safety.safe_action)
                flags = safety.filter(planned)
                source, sent_planned, pred, dis = SAFE, planned, nan, nan
            robot.send(safety.action)
            sent = clock.now()
            i = tel.record(k, scheduled, wake, sent, obs, sent_planned, safety.action, nan, False,
                           source, pred, dis, flags)
            if not bad:
                plan_step(n, k, obs.values, scheduled + budget)
                tel.set_plan(i, self._plan_s, self._missed)
            n += 1
            k += 1
            if n == limit:
                return "max_cycles"
        return self._stop_reason

    def _plan_sync(self, n: int, k: int, values: np.ndarray, deadline: float) -> int:
        clock, planner = self.clock, self.planner
        start = clock.now()
        action = planner.plan(values)
        end = clock.now()
        np.copyto(self._planned, action)
        np.copyto(self._plan_buf, planner.planned_actions())
        self._plan_slot = k
        stats = planner.stats
        self._pred, self._dis = stats.predicted_return, stats.disagreement
        self._no_plan = bool(getattr(stats, "no_plan", False))
        self._plan_s = end - start
        self._missed = end > deadline
        return PLAN

    def _plan_sync_next(self, n: int, k: int, values: np.ndarray, deadline: float) -> None:
        clock, planner = self.clock, self.planner
        start = clock.now()
        planner.plan(values, self.safety.action)
        end = clock.now()
        np.copyto(self._plan_buf, planner.planned_actions())
        self._plan_slot = n  # sync: counted in cycles
        stats = planner.stats
        self._pred, self._dis = stats.predicted_return, stats.disagreement
        self._no_plan = bool(getattr(stats, "no_plan", False))
        self._plan_s = end - start
        self._missed = end > deadline

    def _await_plan(self, n: int, k: int, values: np.ndarray, deadline: float,
                    first_action: np.ndarray | None) -> bool:
        """Async: submit cycle n's plan (unless a late one is in flight) and wait until the
        deadline; True when it came in by then. Sets _plan_buf/_plan_slot (the last finished
        plan), _pred, _dis, _plan_s and _missed."""
        w = self._worker
        if not w.busy:
            w.submit(n, k, values, first_action)
        self._plan_s = math.nan
        while self.clock.wait_for(w.ready, deadline):
            cycle, slot, self._no_plan = w.take(self._plan_buf, self._planned)
            self._plan_slot = slot
            self._pred, self._dis = w.predicted_return, w.disagreement
            if cycle == n:
                self._plan_s, self._missed = w.plan_s, False
                return True
            # a late plan of an earlier cycle: now the fallback source; plan this cycle now
            self.telemetry.set_plan_time(cycle, w.plan_s)
            w.submit(n, k, values, first_action)
        self._missed = True
        return False

    def _plan_async_next(self, n: int, k: int, values: np.ndarray, deadline: float) -> None:
        self._await_plan(n, k, values, deadline, self.safety.action)

    def _plan_async(self, n: int, k: int, values: np.ndarray, deadline: float) -> int:
        if self._await_plan(n, k, values, deadline, None):
            return PLAN
        row = k - self._plan_slot
        if row < self._H:
            np.copyto(self._planned, self._plan_buf[row])
            return FALLBACK
        np.copyto(self._planned, self.safety.safe_action)
        self._pred = self._dis = math.nan
        return SAFE

    # -- around the run ---------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop_reason = signal.Signals(signum).name

    def _enter_realtime(self) -> dict[str, Any]:
        """Signal handlers (main thread only), GC off, short switch interval; returns what
        to restore."""
        cfg = self.config
        saved: dict[str, Any] = {"gc": gc.isenabled(), "switch": sys.getswitchinterval(),
                                 "signals": {}}
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                saved["signals"][sig] = signal.signal(sig, self._on_signal)
        if cfg.disable_gc:
            gc.collect()
            gc.freeze()
            gc.disable()
        if cfg.switch_interval_s is not None:
            sys.setswitchinterval(cfg.switch_interval_s)
        # after the planner and writer threads exist (threads inherit their creator's policy)
        saved["fifo"] = priority.raise_to_fifo(cfg.rt_priority) if self._wall else None
        return saved

    def _finish(self, reason: str, saved: dict[str, Any]) -> None:
        """Safe action (on a stop or error, or always with safe_on_exit), planner thread
        stopped, settings restored, summary made, telemetry written."""
        if reason not in ("done", "max_cycles") or self.config.safe_on_exit:
            try:
                self.robot.send(self.safety.emergency())
            except Exception:
                logger.exception("could not send the safe action at the end of the run")
        if self._worker is not None:
            if not self._worker.close(self.config.join_timeout_s):
                self._left_behind = self._worker
            self._worker = None
        priority.restore(saved["fifo"])
        sys.setswitchinterval(saved["switch"])
        for sig, handler in saved["signals"].items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if self.config.disable_gc:
            # No gc.collect() here: after a training run in the same process a full collection
            # held the GIL ~150 ms while an in-process wall-clock robot still ran ("simulation fell
            # 142 ms behind real time" after every fresh quickstart's episode); the collector,
            # enabled again, runs when allocations call for it.
            gc.unfreeze()
            if saved["gc"]:
                gc.enable()
        summary = self.telemetry.summary()
        if self._stream is not None:
            summary["mcap"] = str(self._stream.close())
            self._stream = None
        summary.update(stop_reason=reason, mode=self.config.mode, commit=self.config.commit,
                       period_s=self.timing.period_s, budget_s=self.timing.budget_s,
                       rt_priority=self.config.rt_priority if saved["fifo"] is not None else 0)
        self._summarize(summary)
        self.summary = summary
        if self.run_dir is not None:
            path = self.telemetry.save(self.run_dir, summary)
            logger.info("telemetry written to %s", path)
        level = logging.WARNING if reason not in ("done", "max_cycles") else logging.INFO
        logger.log(level, "control loop ended (%s): %d cycles at %.4g Hz, %d misses, plan p99 "
                          "%.3g ms, jitter p99 %.3g ms, %d safety events, return %.4g", reason,
                   summary["cycles"], summary["rate_hz"], summary["misses"], summary["plan_ms_p99"],
                   summary["jitter_ms_p99"], summary["safety_events"]["total"],
                   summary["episode_return"])
