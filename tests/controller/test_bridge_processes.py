"""Fault tests with real processes on 127.0.0.1: `rtmpc robot` (cartpole, 100 Hz) in its
own process, the controller in another (or in this one), free ports, every process
killed at the end and every wait bounded."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from bridge_fakes import (
    GUARD_S,
    ConstantPlanner,
    controller_args,
    endpoint,
    free_port,
    process,
    robot_args,
    wait_until,
)

pytest.importorskip("zenoh")

from rtmpc.controller import ControlLoop, LoopConfig, SafetyConfig, SafetyFilter  # noqa: E402
from rtmpc.controller.bridge import BridgeConfig, BridgeRobot, FaultConfig  # noqa: E402
from rtmpc.controller.bridge.messages import OBS_WAITING, OBS_WATCHDOG  # noqa: E402
from rtmpc.controller.safety import STALE_OBS  # noqa: E402
from rtmpc.controller.telemetry import PLAN, SAFE  # noqa: E402

ROBOT_PERIOD = 0.01  # cartpole-swingup
SLACK_S = 0.03  # scheduling noise allowed on a loaded 2-core machine


def running(robot: BridgeRobot, steps: int = 20):
    """The robot's episode is under way (a controller armed it) for ``steps`` steps."""
    def cond():
        m = robot.latest
        return m is not None and not m.flags & OBS_WAITING and m.step >= steps
    return cond


def loop_over(robot: BridgeRobot, rate: float, **safety):
    filt = SafetyFilter(np.array([-1.0]), np.array([1.0]), 1.0 / rate, SafetyConfig(stale_from="stamp", **safety))
    return ControlLoop(robot, ConstantPlanner(value=0.2), filt, LoopConfig(rate_hz=rate))


def test_killing_the_controller_makes_the_robot_apply_its_safe_action_within_its_watchdog_time(tmp_path):
    port, watchdog = free_port(), 10  # periods: 100 ms
    with process(robot_args(port, "--watchdog", str(watchdog)), tmp_path, "robot") as robot_p, \
            process(controller_args(port, 50.0), tmp_path, "controller") as controller_p:
        observer = BridgeRobot(5, 1, ROBOT_PERIOD, BridgeConfig(endpoint=endpoint(port), connect_timeout_s=GUARD_S))
        try:
            wait_until(running(observer, steps=30), what=f"the controller to drive the robot\n{controller_p.logs()}")
            assert observer.stats["robot_watchdog"] == 0, robot_p.logs()
            killed = time.monotonic()
            controller_p.p.kill()
            wait_until(lambda: observer.latest.flags & OBS_WATCHDOG, what="the robot's watchdog")
            # the robot's stamps are on the same monotonic clock; a later message only overstates the delay
            delay = observer.latest.stamp - killed
        finally:
            observer.close()
        assert robot_p.terminate() == 0, robot_p.logs()
    assert delay <= watchdog * ROBOT_PERIOD + ROBOT_PERIOD + SLACK_S, f"safe action {1e3 * delay:.1f} ms after the kill"
    s = robot_p.json_line()
    assert s["watchdog_trips"] == 1 and s["watchdog_periods"] > 0 and s["commands"]["accepted"] > 0
    assert "watchdog: no fresh command" in robot_p.err_path.read_text()


def test_a_killed_robot_is_detected_within_a_period_held_and_resumed_when_it_restarts(tmp_path):
    port, rate = free_port(), 50.0
    period = 1.0 / rate
    with process(robot_args(port), tmp_path, "robot1") as first:
        robot = BridgeRobot(5, 1, period, BridgeConfig(endpoint=endpoint(port), connect_timeout_s=GUARD_S))
        loop = loop_over(robot, rate)
        thread = threading.Thread(target=loop.run, kwargs={"max_cycles": 0}, daemon=True)
        thread.start()
        try:
            wait_until(running(robot), what="the loop to drive the robot")
            killed = time.monotonic()
            first.kill()  # returns once the process is reaped: its sockets are closed
            gone = time.monotonic()
            wait_until(lambda: robot.stats["lost"] == 1, what="the loss of the robot")
            lost_seen = started = time.monotonic()
            with process(robot_args(port), tmp_path, "robot2") as second:
                wait_until(lambda: robot.stats["restarts"] == 1, what=f"the new robot\n{second.logs()}")
                back = time.monotonic()
                wait_until(running(robot, steps=40), what="the loop to drive the new robot")
                loop.stop()
                thread.join(GUARD_S)
                s = robot.stats
                assert second.terminate() == 0, second.logs()
        finally:
            loop.stop()
            thread.join(GUARD_S)
            robot.close()
    assert not thread.is_alive()
    r = loop.telemetry.records()
    wake, stale, source = r["wake"], (r["safety"] & STALE_OBS) != 0, r["source"]
    assert not stale[(wake < killed) & (wake > killed - 5 * period)].any()  # (a loaded machine may stall earlier)
    detected = wake[(wake > killed) & stale][0]
    # from the moment the process is gone (the kernel takes tens of ms to tear it down)
    assert detected - gone <= period + SLACK_S, f"stale {1e3 * (detected - gone):.1f} ms after the robot was gone"
    # the first fresh observation after the loss comes from the new robot, no later than a period
    # after this thread saw the restart (the loop may see it first: this thread polls)
    fresh = wake[(wake > detected) & ~stale][0]
    assert started < fresh <= back + period + SLACK_S, f"fresh {1e3 * (fresh - started):.1f} ms after the restart"
    held = (wake > detected) & (wake < fresh)
    assert held.sum() >= 2 and stale[held].all() and (source[held] == SAFE).all()  # held: safe action, no plans
    after = wake > back + 2 * period
    assert (source[after] == PLAN).sum() >= 10 and not stale[after][-5:].any()  # resumed
    assert lost_seen - killed < 1.0
    assert s["restarts"] == 1 and s["lost"] == 1 and s["old_session"] == 0


def test_dropped_and_reordered_messages_are_counted_and_the_loop_keeps_running(tmp_path):
    port, rate, cycles = free_port(), 100.0, 300
    faults = ["--drop", "0.1", "--reorder", "0.05", "--fault-seed", "1"]
    with process(robot_args(port, *faults), tmp_path, "robot") as robot_p:
        robot = BridgeRobot(5, 1, 1.0 / rate, BridgeConfig(endpoint=endpoint(port), connect_timeout_s=GUARD_S,
                                                           faults=FaultConfig(drop=0.1, reorder=0.05, seed=2)))
        try:
            summary = loop_over(robot, rate, stale_after_s=0.1).run(max_cycles=cycles)
        finally:
            robot.close()
        mine = robot.stats
        assert robot_p.terminate() == 0, robot_p.logs()
    s = robot_p.json_line()
    assert summary["stop_reason"] == "max_cycles" and summary["cycles"] == cycles
    # observations (robot -> controller): some were injected before this side connected
    assert 0 < mine["out_of_order"] <= s["obs_injected"]["reorder"]
    assert mine["out_of_order"] <= mine["gaps"] <= s["obs_injected"]["drop"] + s["obs_injected"]["reorder"]
    assert mine["duplicate"] == 0 and mine["accepted"] > cycles * 0.7
    # commands (controller -> robot): every one sent after the robot was there
    c = s["commands"]
    assert mine["cmd_drop"] > 10 and mine["cmd_reorder"] > 3
    # all arrive (reliable TCP) but perhaps the last two, in flight when the robot was stopped
    assert mine["sent"] - mine["cmd_drop"] - 2 <= c["received"] <= mine["sent"] - mine["cmd_drop"]
    assert mine["cmd_reorder"] - 2 <= c["out_of_order"] <= mine["cmd_reorder"]
    assert c["gaps"] <= mine["cmd_drop"] + mine["cmd_reorder"] and c["duplicate"] == 0
