"""The two-rate loop (controller.servo) on a virtual clock: plans read by time between their
model steps, late plans used by time, a run-out plan answered with the safe action."""

from __future__ import annotations

import numpy as np
import pytest
from controller_fakes import FakeClock, FakePlanner, FakeRobot
from rtmpc.configs import ConfigError
from rtmpc.controller import LoopConfig, LoopTiming, SafetyConfig, SafetyFilter
from rtmpc.controller.safety import PLAN_STARVED
from rtmpc.controller.servo import ServoLoop, interpolate, servo_ticks_per_step
from rtmpc.controller.telemetry import FALLBACK, PLAN, SAFE

SERVO_HZ, MODEL_PERIOD, M = 10.0, 0.4, 4  # 4 servo ticks per model step


def make(planner=None, robot=None, clock=None, interpolation="zoh", H=5, **loop):
    clock = clock if clock is not None else FakeClock()
    planner = planner if planner is not None else FakePlanner(clock, horizon=H)
    robot = robot if robot is not None else FakeRobot(clock)
    cfg = LoopConfig(servo_hz=SERVO_HZ, interpolation=interpolation, **loop)
    timing = LoopTiming.resolve(cfg, rate_hz=SERVO_HZ)
    filt = SafetyFilter(np.array([-1.0]), np.array([1.0]), timing.period_s, SafetyConfig(stale_after_s=10.0))
    loop_ = ServoLoop(robot, planner, filt, cfg, model_period_s=MODEL_PERIOD, timing=timing, clock=clock)
    return loop_, clock, robot, planner


def test_interpolation_matches_the_plan_at_knots_and_between():
    plan = np.array([[0.0, 1.0], [1.0, 3.0], [2.0, 5.0]])
    out = np.zeros(2)
    for x, zoh, lin in [(0.0, [0, 1], [0, 1]), (0.5, [0, 1], [0.5, 2]), (1.0, [1, 3], [1, 3]),
                        (1.75, [1, 3], [1.75, 4.5]), (2.5, [2, 5], [2, 5])]:
        assert interpolate(plan, x, False, out) and out.tolist() == zoh
        assert interpolate(plan, x, True, out) and out.tolist() == pytest.approx(lin)
    assert not interpolate(plan, 3.0, False, out) and not interpolate(plan, 3.0, True, out)


def test_the_servo_rate_must_be_a_whole_multiple_of_the_model_rate():
    assert servo_ticks_per_step(0.01, 0.08) == 8
    with pytest.raises(ConfigError, match="not a whole multiple"):
        servo_ticks_per_step(0.03, 0.08)
    with pytest.raises(ConfigError, match="loop.mode: async and loop.commit: next"):
        make(mode="sync")


@pytest.mark.parametrize("interpolation", ["zoh", "linear"])
def test_on_time_plans_are_read_by_time_and_replanned_every_model_step(interpolation):
    loop, clock, robot, planner = make(interpolation=interpolation)
    summary = loop.run(max_cycles=20)
    sent = np.array(robot.sent)[:20, 0]
    r = loop.telemetry.records()
    # call 0 is the warm-up plan; call i >= 1 is started at tick 4 (i - 1) with its row 0 fixed
    for k in range(4, 20):
        i, x = k // M, (k % M) / M  # the plan started at tick 4 (i - 1), x model steps past row 1
        row1, row2 = planner.row(i, 1)[0], planner.row(i, 2)[0]
        expected = row1 if interpolation == "zoh" else (1 - x) * row1 + x * row2
        assert sent[k] == pytest.approx(expected), k
    # each plan's row 0 is what the servo sent over its first model step
    for i in range(2, 5):
        assert planner.first_seen[i][0] == pytest.approx(planner.row(i - 1, 1)[0])
    assert summary["replans"] >= 4 and summary["plans_late"] == 0 and summary["plan_starved"] == 0
    assert summary["misses"] == 0 and summary["servo_hz"] == SERVO_HZ and summary["model_hz"] == 2.5
    assert set(r["source"][:20].tolist()) <= {PLAN}
    assert summary["plan_age_ms_p99"] <= 1e3 * (2 * MODEL_PERIOD)  # a plan is used for one model step past row 1


def test_a_late_plan_is_counted_the_old_one_is_read_on_and_the_late_one_used_by_time():
    clock = FakeClock()
    planner = FakePlanner(clock, horizon=5, stall={2})  # call 2 is started at tick 4 and overruns
    robot = FakeRobot(clock, hooks={10: lambda: planner.let_go()})
    loop, clock, robot, planner = make(planner=planner, robot=robot, clock=clock)
    summary = loop.run(max_cycles=20)  # call 3 (started at tick 12) is due, so waited for, at tick 16
    sent = np.array(robot.sent)[:20, 0]
    r = loop.telemetry.records()
    assert summary["plans_late"] == 1
    # ticks 8, 9: call 2 is late; call 1 (started at tick 0) is read on by time: its row 2
    assert sent[8] == pytest.approx(planner.row(1, 2)[0]) and r["source"][8] == FALLBACK
    # tick 10: call 2 is in (started at tick 4): 1.5 model steps past its start: row 1
    assert sent[10] == pytest.approx(planner.row(2, 1)[0])
    # the next plan starts at the next model-step tick after it (12), on that tick's observation
    assert planner.obs_seen[3][0] == pytest.approx(robot.read_values[13][0])


def test_a_plan_that_runs_out_sends_the_safe_action_and_counts_starvation():
    clock = FakeClock()
    planner = FakePlanner(clock, horizon=3, stall={2})
    robot = FakeRobot(clock, hooks={14: lambda: planner.let_go()})
    loop, clock, robot, planner = make(planner=planner, robot=robot, clock=clock, H=3)
    summary = loop.run(max_cycles=16)
    sent = np.array(robot.sent)[:16, 0]
    r = loop.telemetry.records()
    # call 1 (started at tick 0, 3 rows) runs out at tick 12; call 2 (started at tick 4) comes at
    # tick 14, 2.5 model steps after its start: its row 2
    assert np.all(sent[12:14] == 0.0) and np.all(r["source"][12:14] == SAFE)
    assert np.all(r["safety"][12:14] & PLAN_STARVED)
    assert summary["plan_starved"] == 2 and summary["safety_events"]["plan_starved"] == 2
    assert sent[14] == pytest.approx(planner.row(2, 2)[0]) and not r["safety"][14] & PLAN_STARVED


def test_a_bad_observation_sends_the_safe_action_and_starts_no_plan():
    clock = FakeClock()
    robot = FakeRobot(clock, values=lambda c: [np.nan, 1.0] if c == 4 else [c, 1.0])
    loop, clock, robot, planner = make(robot=robot, clock=clock)
    loop.run(max_cycles=12)
    r = loop.telemetry.records()
    assert r["source"][4] == SAFE and robot.sent[4][0] == 0.0
    assert not any(np.isnan(o).any() for o in planner.obs_seen)  # no plan on the NaN observation


def test_a_skipped_model_step_tick_still_starts_a_plan():
    """A servo that wakes a whole period late skips ticks; when it skips a model step's own tick
    (tick 8 here), the plan of that step starts at the first tick after it (9), so the plan in
    use (2 rows, as a policy's) runs out for at most a tick instead of a whole model step."""
    clock = FakeClock()
    late = {6: lambda: clock.sleep_until(clock.now() + 0.35)}  # the servo wakes next at 0.95 s: tick 9
    robot = FakeRobot(clock, hooks=late)
    loop, clock, robot, planner = make(robot=robot, clock=clock, H=2)
    summary = loop.run(max_cycles=16)
    r = loop.telemetry.records()
    ticks = r["slot"].tolist()
    assert 8 not in ticks and 9 in ticks  # tick 8 was skipped
    # a plan was started on tick 9's observation, the next one a model step later (tick 13)
    for tick in (9, 13):
        assert any(seen[0] == pytest.approx(robot.read_values[ticks.index(tick) + 1][0]) for seen in planner.obs_seen)
    # only tick 12 (the plan from tick 4 at its row 2) had no plan; before the fix, ticks 12-15
    assert summary["plan_starved"] == 1 and r["source"][ticks.index(12)] == SAFE
