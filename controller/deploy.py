"""Deploy a planner on a robot: one episode of the loop with its safety filter, timing and
plot, and the summary over episodes. What ``rtmpc control``, ``rtmpc tune``, ``rtmpc bench
loop`` and the quickstart run, and what a user with their own :class:`~rtmpc.controller.base.Robot`
calls::

    from rtmpc.controller import LoopConfig, LoopTiming, SafetyConfig, deploy

    timing = LoopTiming.resolve(LoopConfig(), task_rate_hz=50.0)
    summary, records = deploy.run_episode(my_robot, planner, action_low=lo, action_high=hi,
                                          timing=timing, max_cycles=500)

Imports neither torch nor the simulator: the caller builds the robot (a MuJoCo
``SimRobot``, a bridge robot, real hardware) and the planner.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from rtmpc.controller.base import MonotonicClock, Robot
from rtmpc.controller.clocks import FastForwardClock, VirtualClock
from rtmpc.controller.config import LoopConfig, LoopTiming, SafetyConfig
from rtmpc.controller.loop import ControlLoop
from rtmpc.controller.safety import SafetyFilter
from rtmpc.controller.telemetry import summarize

__all__ = ["run_episode", "combine", "STOPPED"]

log = logging.getLogger(__name__)

STOPPED = ("SIGINT", "SIGTERM", "stop")  # stop reasons after which no further episode runs


def run_episode(robot: Robot, planner, *, action_low: np.ndarray, action_high: np.ndarray, timing: LoopTiming,
                max_cycles: int, loop: LoopConfig = LoopConfig(), safety: SafetyConfig = SafetyConfig(),
                safe_action: np.ndarray | None = None, realtime: bool = True, run_dir: Path | None = None,
                obs_names: tuple[str, ...] = (), title: str = "") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One episode of ``planner`` on ``robot``; returns (the loop's summary, the telemetry records).

    action_low/high (A,): the robot's bounds (the safety filter's); timing: the one resolved
    planning rate (:meth:`LoopTiming.resolve`); with ``loop.servo_hz`` the servo sends at that
    rate and the planner plans at ``timing``'s (:class:`~rtmpc.controller.servo.ServoLoop`);
    realtime: wall-clock time (the loop's mode), else lockstep: planned inline on a clock that
    skips idle time, so the action used is always the plan's and a plan that would have been
    late in real time still counts as a miss (servo: on a virtual clock, every plan on time);
    run_dir: where telemetry and ``telemetry.png`` go (None: nothing written). The robot is
    closed at the end, whatever happens.
    """
    from rtmpc.controller.mcap_log import records_from_mcap
    from rtmpc.controller.plot import plot_episode

    if loop.servo_hz:
        from rtmpc.controller.servo import ServoLoop

        # two rates: the servo ticks at loop.servo_hz (its deadline, the filter's rate limit and
        # watchdog), the planner steps at the planning rate ``timing``; lockstep: a virtual clock
        servo = LoopTiming.resolve(loop, rate_hz=loop.servo_hz)
        if safety.stale_after_s is None:  # a robot may read out slower than the servo ticks: 3 model steps
            safety = safety.replace(stale_after_s=3 * timing.period_s)
        guard = SafetyFilter(action_low, action_high, servo.period_s, safety, safe_action=safe_action)
        control = ServoLoop(robot, planner, guard, loop, model_period_s=timing.period_s, timing=servo,
                            clock=MonotonicClock() if realtime else VirtualClock(), run_dir=run_dir,
                            obs_names=obs_names)
    else:
        guard = SafetyFilter(action_low, action_high, timing.period_s, safety, safe_action=safe_action)
        clock = MonotonicClock() if realtime else FastForwardClock()
        loop_cfg = loop if realtime else loop.replace(mode="sync")
        control = ControlLoop(robot, planner, guard, loop_cfg, clock=clock, timing=timing, run_dir=run_dir,
                              obs_names=obs_names)
    try:
        summary = control.run(max_cycles=max_cycles)
    finally:
        robot.close()
    records = control.telemetry.records()
    if run_dir is not None and records["cycle"].size:
        # The plot is drawn from the MCAP file when the run streamed one: it holds every cycle,
        # also those a run longer than the ring no longer has in memory.
        drawn = records_from_mcap(summary["mcap"]) if summary.get("mcap") else records
        png = plot_episode(drawn if drawn["cycle"].size else records, Path(run_dir) / "telemetry.png",
                           obs_names=obs_names, action_low=action_low,
                           action_high=action_high, budget_s=summary.get("budget_s"),
                           title=f"{title}: return {summary['episode_return']:.1f}, {summary['misses']} misses in "
                                 f"{summary['cycles']} cycles")
        log.info("episode plot: %s", png)
    return summary, records


def combine(returns: list[float], records: list[dict[str, np.ndarray]],
            summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary over episodes: episodes, return_mean/std, returns, cycles, misses,
    skipped_slots (schedule slots no cycle ran in: the loop woke a whole period late), rate_hz
    (achieved, mean over episodes), safety_events and safety_by_kind, fallbacks, stop_reason,
    and plan_ms / jitter_ms / latency_ms at p50, p99 and max over every kept cycle (``dropped``: the
    cycles that left a full telemetry ring, not counted in these), rt_priority (the loop thread's
    SCHED_FIFO priority in every episode; 0: normal scheduling in one or more); with a servo
    (two rates): servo_hz, model_hz, replans, replan_hz, plans_late, plan_starved and
    plan_age_ms_p50 / p99."""
    merged = {k: np.concatenate([r[k] for r in records]) for k in records[0]}
    total = summarize(merged)
    result = {"episodes": len(returns), "return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
              "returns": [float(r) for r in returns], "cycles": total["cycles"], "misses": total["misses"],
              "rate_hz": float(np.mean([s["rate_hz"] for s in summaries])),
              "safety_events": total["safety_events"]["total"], "safety_by_kind": total["safety_events"],
              "fallbacks": total["fallbacks"], "stop_reason": summaries[-1].get("stop_reason"),
              "dropped": int(sum(s.get("dropped", 0) for s in summaries)),
              "skipped_slots": int(sum(s.get("skipped_slots", 0) for s in summaries)),
              "rt_priority": int(min(s.get("rt_priority", 0) for s in summaries))}
    for k in ("plan_ms", "jitter_ms", "latency_ms"):
        for q in ("p50", "p99", "max"):
            result[f"{k}_{q}"] = total[f"{k}_{q}"]
    if "servo_hz" in summaries[0]:  # the two-rate loop's own statistics
        for k in ("servo_hz", "model_hz", "interpolation", "servo_ticks_per_step"):
            result[k] = summaries[0][k]
        for k in ("replans", "plans_late", "plan_starved"):
            result[k] = int(sum(s[k] for s in summaries))
        for k in ("replan_hz", "plan_age_ms_p50"):
            result[k] = float(np.mean([s[k] for s in summaries]))
        result["plan_age_ms_p99"] = float(max(s["plan_age_ms_p99"] for s in summaries))
    return result
