"""Servo at the robot's rate, plan at the model's: the two-rate loop (``loop.servo_hz``).

The servo ticks every ``Ts = 1 / servo_hz`` seconds on an absolute grid (as
:class:`~controller.loop.ControlLoop`'s cycles do) and never waits for the planner: each
tick reads the robot, takes the plan in flight once it is due and finished, and sends the
action of the newest plan *at the current time*; the planner runs in a worker thread at the
model's step ``Tm = m * Ts`` (an integer number m of ticks).

Plans are indexed by time. A plan is started at a model-step tick j (``j % m == 0``) on the
observation read there, with its row 0 fixed to the action the servo sends over ``[t_j,
t_j + Tm)`` (the delay compensation of ``commit: next``, one model step); row r of it is
the action for ``[t_j + r Tm, t_j + (r + 1) Tm)``. At tick k the servo reads the newest
finished plan at ``x = (k - j) / m`` model steps: row ``floor(x)`` (``interpolation:
zoh``) or the line between rows ``floor(x)`` and ``floor(x) + 1`` (``linear``; the last row
is held). A plan not finished when its row 1 is due (tick ``j + m``) is *late* (counted);
the servo goes on reading the previous plan by time, and the late plan, once in, is read
by time too. When the plan in use runs out (``floor(x) >= H``) the safe action goes and a
``plan_starved`` safety event is counted. A new plan starts at the first model-step tick
at which the planner is free, so a planner slower than the model step replans every other
step (or less) without ever holding the servo. A servo that wakes late skips the ticks it
missed; if it skips a model step's own tick, the plan starts at the first tick after it and
the model steps count from there (otherwise that step would start no plan, and the plan in
use could run out: one skipped tick cost a 2-row policy a whole model step of safe actions).

On a :class:`~controller.clocks.VirtualClock` (lockstep: planning takes no time) the servo
waits for a plan when its row 1 is due, so a lockstep run uses every plan on time.

Statistics (added to the summary): ``servo_hz``, ``model_hz``, ``replans`` and
``replan_hz``, ``plans_late``, ``plan_starved``, ``plan_age_ms_p50/p99`` (the age of the
observation behind the plan in use, at each tick); ``misses`` are servo ticks sent after
their deadline.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from rtmpc.configs import ConfigError
from rtmpc.controller.clocks import VirtualClock
from rtmpc.controller.config import LoopTiming
from rtmpc.controller.loop import ControlLoop
from rtmpc.controller.telemetry import FALLBACK, NONE, PLAN, SAFE

__all__ = ["ServoLoop", "servo_ticks_per_step", "interpolate"]

logger = logging.getLogger(__name__)


def servo_ticks_per_step(servo_period_s: float, model_period_s: float) -> int:
    """m = model period / servo period, which must be a whole number >= 1 (a ConfigError otherwise)."""
    m = model_period_s / servo_period_s
    if round(m) < 1 or abs(m - round(m)) > 1e-6 * m:
        raise ConfigError(f"the servo rate {1 / servo_period_s:g} Hz is not a whole multiple of the model's "
                          f"{1 / model_period_s:g} Hz: choose loop.servo_hz = n x {1 / model_period_s:g}")
    return int(round(m))


def interpolate(plan: np.ndarray, x: float, linear: bool, out: np.ndarray) -> bool:
    """The plan (H, A) at x model steps into ``out`` (A,): row floor(x), or the line to the next
    row (``linear``; the last row is held). False if the plan has run out (floor(x) >= H)."""
    i = int(math.floor(x))
    H = plan.shape[0]
    if i >= H or i < 0:
        return False
    if linear and i + 1 < H:
        f = x - i
        np.multiply(plan[i], 1.0 - f, out=out)
        out += f * plan[i + 1]
    else:
        np.copyto(out, plan[i])
    return True


class ServoLoop(ControlLoop):
    """The two-rate loop: ``ServoLoop(robot, planner, safety, config, model_period_s=Tm,
    timing=servo timing, clock=...)``. ``config.mode`` must be async and ``commit`` next
    (the planner runs in its thread and plans with its first action fixed); ``timing`` is the
    servo's (its period Ts, and the tick's deadline)."""

    def __init__(self, robot, planner, safety, config, *, model_period_s: float, timing: LoopTiming, clock=None,
                 run_dir=None, obs_names=(), act_names=()):
        if config.mode != "async" or config.commit != "next":
            raise ConfigError(f"a servo loop (loop.servo_hz) plans in its own thread with delay compensation: set "
                              f"loop.mode: async and loop.commit: next (got {config.mode}, {config.commit})")
        super().__init__(robot, planner, safety, config, clock=clock, timing=timing, run_dir=run_dir,
                         obs_names=obs_names, act_names=act_names)
        self.model_period_s = float(model_period_s)
        self.m = servo_ticks_per_step(timing.period_s, self.model_period_s)

    def _select_cycles(self):
        return self._servo

    def _start_line(self) -> str:
        # the tick's deadline is the servo's budget; a plan may take up to one model step
        return (f"servo loop: {self.timing.rate_hz:.4g} Hz servo (tick budget {1e3 * self.timing.budget_s:.3g} ms), "
                f"replanning at up to {1 / self.model_period_s:.4g} Hz (plan budget "
                f"{1e3 * self.model_period_s:.3g} ms), {self.config.interpolation} interpolation, {self._H}-step plans")

    def _servo(self, t0: float, limit: int) -> str:
        clock, robot, safety, tel, w = self.clock, self.robot, self.safety, self.telemetry, self._worker
        budget, H, m = self.timing.budget_s, self._H, self.m
        linear = self.config.interpolation == "linear"
        waits = isinstance(clock, VirtualClock)  # lockstep: a due plan is waited for (planning takes no time)
        nan, nan_a, plan_buf, planned = math.nan, self._nan_a, self._plan_buf, self._planned
        origin = 0 if self._plan_slot == 0 else -(H + 1) * m  # the tick the plan in use was started at
        pending = -1  # the tick of the plan in flight (-1: none)
        next_start = 0  # the tick at which the next plan may start: one model step after the last one
        late_counted = False
        replans = late = 0
        ages = np.empty(max(limit, 0) if limit > 0 else 1 << 16)
        ages.fill(0.0)  # touch every page now: the hour's soak grew 2.9 MiB/hour as the ticks first wrote them
        n_age = 0
        n = k = 0
        while self._stop_reason is None:
            k, scheduled, wake = self._wake(t0, k)
            obs = robot.read()
            if obs.done:
                tel.record(k, scheduled, wake, nan, obs, nan_a, nan_a, nan, False, NONE, nan, nan, 0)
                return self._servo_end("done", replans, late, ages[:n_age])
            # the plan in flight, once due (its row 1 applies from tick pending + m: until then the
            # plan in use gives the row 0 it was started with), if it is in; on a virtual clock the
            # servo waits for it then
            plan_s = nan
            due = pending >= 0 and k >= pending + m
            if due and waits and not w.ready.is_set():
                clock.wait_for(w.ready, scheduled + budget)
            if due and w.ready.is_set():
                _, origin, self._no_plan = w.take(plan_buf, planned)
                plan_s, self._pred, self._dis = w.plan_s, w.predicted_return, w.disagreement
                pending, late_counted = -1, False
                replans += 1
            if due and pending >= 0 and not late_counted:  # still in flight after the take
                late += 1  # its row 1 is due and it is not in: the servo reads the previous plan on
                late_counted = True
            bad = safety.observe(obs, wake)
            x = (k - origin) / m
            if bad:
                flags = safety.substitute(bad)
                source, sent_planned, pred, dis = SAFE, nan_a, nan, nan
            elif self._no_plan:
                flags = safety.no_plan()
                source, sent_planned, pred, dis = PLAN, nan_a, self._pred, self._dis
            elif interpolate(plan_buf, x, linear, planned):
                flags = safety.filter(planned)
                source = PLAN if x < 2 else FALLBACK  # rows 0-1: as planned; later rows: a late plan's stand-in
                sent_planned, pred, dis = planned, self._pred, self._dis
                if n_age < ages.size:
                    ages[n_age] = (k - origin) * self.timing.period_s
                    n_age += 1
            else:
                flags = safety.starved()
                source, sent_planned, pred, dis = SAFE, nan_a, nan, nan
            robot.send(safety.action)
            sent = clock.now()
            tel.record(k, scheduled, wake, sent, obs, sent_planned, safety.action, plan_s,
                       sent > scheduled + budget, source, pred, dis, flags)
            if k >= next_start:  # a model step's tick (or the first after it, if the servo skipped it)
                next_start += m * ((k - next_start) // m + 1)  # no plan now: the next step's tick
                if not bad and not w.busy and pending < 0:
                    # the next plan: on this tick's observation, its row 0 the action sent until the next model step
                    first = plan_buf[int(math.floor(x))] if 0 <= x < H and not self._no_plan else safety.action
                    w.submit(n, k, obs.values, np.asarray(first, dtype=np.float64))
                    pending, next_start = k, k + m  # the model steps now count from this plan's tick
            n += 1
            k += 1
            if n == limit:
                return self._servo_end("max_cycles", replans, late, ages[:n_age])
        return self._servo_end(self._stop_reason, replans, late, ages[:n_age])

    def _servo_end(self, reason: str, replans: int, late: int, ages: np.ndarray) -> str:
        self._servo_stats = {"servo_hz": self.timing.rate_hz, "model_hz": 1.0 / self.model_period_s,
                             "servo_ticks_per_step": self.m, "interpolation": self.config.interpolation,
                             "replans": replans, "plans_late": late,
                             "plan_age_ms_p50": float(np.percentile(ages, 50) * 1e3) if ages.size else math.nan,
                             "plan_age_ms_p99": float(np.percentile(ages, 99) * 1e3) if ages.size else math.nan}
        return reason

    def _summarize(self, summary: dict[str, Any]) -> None:
        stats = getattr(self, "_servo_stats", {})
        summary.update(stats)
        duration = summary.get("cycles", 0) * self.timing.period_s
        summary["replan_hz"] = stats.get("replans", 0) / duration if duration > 0 else math.nan
        summary["plan_starved"] = summary["safety_events"].get("plan_starved", 0)
