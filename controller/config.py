"""Typed configs of the control loop and its safety filter, and the timing they resolve to."""

from __future__ import annotations

import math
from dataclasses import dataclass

from rtmpc.configs import Config, ConfigError, param

__all__ = ["LoopConfig", "SafetyConfig", "LoopTiming", "MAX_RATE_HZ"]

MAX_RATE_HZ = 100_000.0  # the fastest loop rate accepted (a 10 us period)


@dataclass(frozen=True)
class LoopConfig(Config):
    """Fixed-rate receding-horizon loop: rate, deadline, planning mode, run-time settings."""

    rate_hz: float | None = param(None, "control rate in Hz; null = the task's rate "
                                        "(1 / control period)", gt=0.0, le=MAX_RATE_HZ)
    deadline_margin_s: float | None = param(None, "time kept free at the end of each period "
                                                  "for filter, send and record: the plan's "
                                                  "deadline is wake time + period - margin; "
                                                  "null = 10% of the period", ge=0.0)
    mode: str = param("async", "async: plan in a worker thread, send the fallback on time "
                               "when the plan is late; sync: plan in the loop thread, a late "
                               "plan is sent late", choices=("async", "sync"))
    commit: str = param("next", "next (default): send at wake the action committed last cycle, "
                                "then plan the next period's action with this one fixed "
                                "(one-period delay compensation); now: plan on the cycle's "
                                "observation, send the result in the same cycle (late by the "
                                "plan time). Measured, cartpole at 12.5 Hz, wall clock: next "
                                "766 +- 15, now 667 +- 195 (docs/pets.md)",
                         choices=("now", "next"))
    servo_hz: float | None = param(None, "servo rate in Hz (controller.servo): send the newest plan's action "
                                         "at this rate, read by time, while the planner replans at the "
                                         "model's step in its own thread; a whole multiple of the planning "
                                         "rate; null = one rate (plan and send every period)",
                                   gt=0.0, le=MAX_RATE_HZ)
    interpolation: str = param("zoh", "servo loop: zoh = hold each plan row for its model step; linear = "
                                      "the line between rows", choices=("zoh", "linear"))
    threads: int = param(1, "ONNX Runtime intra-op threads of the deployed planner's model (rtmpc control, bench "
                            "loop, tune; their --threads overrides). Two leave the loop thread no core of its "
                            "own on a 2-core machine, yet with rt_priority it keeps its ticks (docs/servo.md)",
                         ge=1, le=256)
    mcap: bool = param(True, "stream every cycle to telemetry-<date>-<time>.mcap in the run's telemetry folder "
                             "while it runs (controller.mcap_log; Foxglove, PlotJuggler, the mcap CLI)")
    max_cycles: int = param(0, "stop after this many cycles (0 = until the robot says done "
                               "or a stop signal)", ge=0)
    telemetry_size: int = param(100_000, "rows of the per-cycle telemetry ring; older rows are "
                                         "overwritten (and lost) past it", ge=1, le=100_000_000)
    warmup_plans: int = param(1, "plans made on the first observation before the clock starts "
                                 "(JIT compilation, caches); the planner is reset after", ge=0)
    safe_on_exit: bool = param(True, "send the safe action when the run ends normally (a stop "
                                     "signal or an error always sends it)")
    disable_gc: bool = param(True, "turn off automatic garbage collection during the run (a full "
                                   "collection before the clock starts; automatic again after)")
    switch_interval_s: float | None = param(0.0005, "interpreter thread switch interval during "
                                                    "the run (how long the loop thread may wait "
                                                    "for the GIL); null = leave as it is",
                                            gt=0.0, le=1.0)
    rt_priority: int = param(50, "SCHED_FIFO priority of the loop's thread during a wall-clock run (Linux, "
                                 "1-99; 0 = normal scheduling). Needs root, CAP_SYS_NICE or an rtprio limit "
                                 "(ulimit -r); without them the run warns once and goes on at normal "
                                 "priority. Servo jitter p99 at 100 Hz, 2 cores: 2-3 ms at normal "
                                 "priority, 0.01-0.06 ms with it (docs/servo.md)", ge=0, le=99)
    planner_nice: int = param(10, "nice value the planner thread takes during a wall-clock run, so the loop "
                                  "thread wins the CPU even without rt_priority (0-19; 0 = unchanged)",
                              ge=0, le=19)
    join_timeout_s: float = param(5.0, "how long to wait for the planner thread at the end",
                                  gt=0.0)


@dataclass(frozen=True)
class SafetyConfig(Config):
    """What the safety filter allows between the planner and the robot."""

    max_rate: float = param(0.0, "largest action change per second, as a fraction of the "
                                 "action range (5 = full range in 0.2 s); 0 = no limit", ge=0.0)
    stale_after_s: float | None = param(None, "an observation older than this trips the "
                                              "watchdog; null = 3 control periods", gt=0.0)
    stale_from: str = param("seq", "how an observation's age is measured: seq = time since its "
                                   "sequence number last changed (any robot clock); stamp = "
                                   "loop time minus its stamp (stamps on the loop's clock)",
                            choices=("seq", "stamp"))
    nonfinite_action: str = param("hold", "on a NaN/inf planned action send: hold = the last "
                                          "action sent, safe = the safe action",
                                  choices=("hold", "safe"))
    bad_observation: str = param("safe", "on a stale or non-finite observation send: safe = "
                                         "the safe action, hold = the last action sent",
                                 choices=("safe", "hold"))
    safe_action: tuple[float, ...] = param((), "the safe action (A values); empty = the task's "
                                               "(zero where the bounds allow, else mid-range)")


@dataclass(frozen=True)
class LoopTiming:
    """Resolved timing: period_s and the plan budget (deadline - scheduled wake), seconds."""

    period_s: float
    budget_s: float

    @property
    def rate_hz(self) -> float:
        return 1.0 / self.period_s

    @classmethod
    def resolve(cls, config: LoopConfig, task_rate_hz: float | None = None, *,
                rate_hz: float | None = None) -> LoopTiming:
        """The one place the control rate is chosen: ``rate_hz`` (the command line) wins
        over ``config.rate_hz`` (the file), which wins over ``task_rate_hz`` (the model's
        step rate). Everything that depends on the rate (the loop's deadlines, the safety
        filter's rate limit and watchdog, a bridge robot's period, the cycle count, the
        printed target) takes the one object this returns."""
        for name, value in (("rate", rate_hz), ("task rate", task_rate_hz)):
            if value is not None and not (math.isfinite(value) and 0.0 < value <= MAX_RATE_HZ):
                raise ConfigError(f"{name} {value!r} Hz is out of range: must be > 0 and <= {MAX_RATE_HZ:g}")
        rate = rate_hz if rate_hz is not None else config.rate_hz if config.rate_hz is not None else task_rate_hz
        if rate is None:
            raise ConfigError("loop.rate_hz is not set and no task rate was given: set "
                              "loop.rate_hz or pass the task's rate")
        period = 1.0 / rate
        margin = 0.1 * period if config.deadline_margin_s is None else config.deadline_margin_s
        if margin >= period:
            raise ConfigError(f"loop.deadline_margin_s = {margin:g} s leaves no time to plan in "
                              f"the {period:g} s period ({rate:g} Hz): lower the margin or the rate")
        return cls(period_s=period, budget_s=period - margin)
