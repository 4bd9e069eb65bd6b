"""The loop with commit = next (one-period delay compensation), on a virtual clock.

Call 0 of the fake planner is the warm-up plan on the set-up observation (warmup_plans: 1);
call c >= 1 is the plan made in cycle c - 1 on that cycle's observation, with the action
sent in cycle c - 1 as its first action. So with no misses slot k >= 1 sends call k's row 1.
"""

from __future__ import annotations

import numpy as np
import pytest
from controller_fakes import FakeClock, FakePlanner, FakeRobot
from rtmpc.controller import ControlLoop, LoopConfig, SafetyConfig, SafetyFilter
from rtmpc.controller.telemetry import FALLBACK, PLAN, SAFE
from rtmpc.planners.base import Planner, PlanStats

MODES = ("async", "sync")


def make(mode="async", *, rate=10.0, clock=None, A=1, safety=SafetyConfig(), planner=None,
         robot=None, **loop):
    """(loop, clock, robot, planner), commit = next, one warm-up plan unless told."""
    clock = clock if clock is not None else FakeClock()
    planner = planner if planner is not None else FakePlanner(clock, act_dim=A)
    robot = robot if robot is not None else FakeRobot(clock)
    loop.setdefault("warmup_plans", 1)
    cfg = LoopConfig(rate_hz=rate, mode=mode, commit="next", **loop)
    filt = SafetyFilter(np.full(A, -1.0), np.full(A, 1.0), 1.0 / rate, safety)
    return ControlLoop(robot, planner, filt, cfg, clock=clock), clock, robot, planner


@pytest.mark.parametrize("mode", MODES)
def test_sends_at_wake_the_plan_made_on_the_previous_observation(mode):
    clock = FakeClock(start=3.0)
    # sync: each plan takes 40 ms of virtual time, after the send
    advance = {i: 0.04 for i in range(1, 100)} if mode == "sync" else {}
    planner = FakePlanner(clock, horizon=5, advance=advance)
    loop, clock, robot, planner = make(mode, clock=clock, planner=planner)
    summary = loop.run(max_cycles=8)
    r = loop.telemetry.records()
    sent = np.array(robot.sent[:8])[:, 0]
    # slot 0: the warm-up plan made before the clock started (its row 0), kept (no reset after)
    assert sent[0] == pytest.approx(planner.row(0, 0)[0]) and r["source"][0] == PLAN
    assert planner.resets == 1 and planner.first_seen[0] is None
    np.testing.assert_allclose(planner.obs_seen[0], robot.read_values[0])  # the set-up read
    # slot k: call k's row 1, the plan made in cycle k - 1 on o_{k-1} with a_{k-1} fixed
    np.testing.assert_allclose(sent[1:], [planner.row(k, 1)[0] for k in range(1, 8)])
    for k in range(8):
        np.testing.assert_allclose(planner.obs_seen[k + 1], robot.read_values[1 + k])
        np.testing.assert_allclose(planner.first_seen[k + 1], robot.sent[k])
    assert np.all(r["source"] == PLAN) and not r["missed"].any()
    np.testing.assert_allclose(r["action"][:, 0], sent)
    np.testing.assert_allclose(r["planned"][:, 0], sent)
    np.testing.assert_array_equal(r["predicted_return"], np.arange(8.0))  # of the plan acted on
    # sent at wake, not after planning: latency 0 on the virtual clock, the schedule exact
    assert np.all(r["sent"] == r["wake"]) and np.all(r["wake"] == r["scheduled"])
    assert robot.sent_at[:8] == [3.0 + 0.1 * k for k in range(8)]
    assert summary["latency_ms_max"] == 0.0 and summary["misses"] == 0
    assert summary["commit"] == "next"
    if mode == "sync":
        np.testing.assert_allclose(r["plan_s"], 0.04)
    else:
        assert np.all(np.isfinite(r["plan_s"]))


@pytest.mark.parametrize("mode", MODES)
def test_without_a_warm_up_plan_slot_0_sends_the_safe_action(mode):
    loop, clock, robot, planner = make(mode, warmup_plans=0, safety=SafetyConfig(safe_action=(-0.4,)))
    loop.run(max_cycles=3)
    r = loop.telemetry.records()
    assert r["source"].tolist() == [SAFE, PLAN, PLAN]
    assert robot.sent[0][0] == -0.4
    assert robot.sent[1][0] == pytest.approx(planner.row(0, 1)[0])  # call 0: planned on o_0
    np.testing.assert_allclose(planner.first_seen[0], [-0.4])
    np.testing.assert_allclose(planner.obs_seen[0], robot.read_values[1])


def test_async_late_plan_falls_back_to_the_last_plans_next_rows_and_counts_misses():
    clock = FakeClock(start=100.0)
    planner = FakePlanner(clock, horizon=5, stall={3})  # call 3: cycle 2's plan, for slot 3
    robot = FakeRobot(clock, hooks={5: planner.let_go})
    loop, clock, robot, planner = make("async", clock=clock, planner=planner, robot=robot)
    summary = loop.run(max_cycles=8)
    r = loop.telemetry.records()
    assert r["missed"].tolist() == [False, False, True, True, True, False, False, False]
    assert r["source"].tolist() == [PLAN, PLAN, PLAN, FALLBACK, FALLBACK, FALLBACK, PLAN, PLAN]
    # the last finished plan is call 2 (made in slot 1): slot k sends its row k - 1
    for k in (3, 4, 5):
        np.testing.assert_allclose(r["action"][k], planner.row(2, k - 1))
    # cycle 5 takes the late call 3 and plans its own observation at once (call 4): slot 6
    np.testing.assert_allclose(r["action"][6], planner.row(4, 1))
    np.testing.assert_allclose(planner.obs_seen[4], robot.read_values[1 + 5])
    np.testing.assert_allclose(planner.first_seen[4], robot.sent[5])
    assert r["plan_s"][2] == pytest.approx(0.3)  # written back when the late plan came in
    assert np.all(np.isnan(r["plan_s"][3:5]))  # cycles 3 and 4 had no plan of their own
    assert np.all(r["sent"] == r["scheduled"])  # every action, fallbacks too, sent at wake
    assert summary["misses"] == 3 and summary["fallbacks"] == 3


def test_async_fallback_runs_out_then_safe_action():
    clock = FakeClock()
    planner = FakePlanner(clock, horizon=3, stall={2})  # call 2: cycle 1's plan
    robot = FakeRobot(clock, hooks={6: planner.let_go})
    loop, clock, robot, planner = make("async", clock=clock, planner=planner, robot=robot,
                                       safety=SafetyConfig(safe_action=(-0.5,)))
    summary = loop.run(max_cycles=8)
    r = loop.telemetry.records()
    assert r["source"].tolist() == [PLAN, PLAN, FALLBACK, SAFE, SAFE, SAFE, SAFE, PLAN]
    np.testing.assert_allclose(r["action"][2], planner.row(1, 2))
    np.testing.assert_allclose(r["action"][3:7, 0], -0.5)
    np.testing.assert_allclose(r["action"][7], planner.row(3, 1))
    assert summary["misses"] == 5 and summary["safe_actions"] == 4


def test_sync_late_plan_is_counted_and_sent_by_the_next_cycle_even_after_skipped_slots():
    clock = FakeClock()
    # budget 0.09 s at 10 Hz: call 2 (cycle 1's plan) is late but done before slot 2;
    # call 4 (cycle 3's plan) ends at 0.55 s: slot 4 is skipped, slot 5 wakes 50 ms late
    planner = FakePlanner(clock, advance={2: 0.095, 4: 0.25})
    loop, clock, robot, planner = make("sync", clock=clock, planner=planner)
    summary = loop.run(max_cycles=7)
    r = loop.telemetry.records()
    assert r["slot"].tolist() == [0, 1, 2, 3, 5, 6, 7]
    assert r["missed"].tolist() == [False, True, False, True, False, False, False]
    assert np.all(r["source"] == PLAN)  # sync: no fallback, plans age by cycles (lockstep)
    np.testing.assert_allclose(r["action"][2], planner.row(2, 1))  # late, still in time for slot 2
    assert r["sent"][2] == pytest.approx(0.2)
    np.testing.assert_allclose(r["action"][4], planner.row(4, 1))  # cycle 4 (slot 5): call 4's row 1
    assert r["sent"][4] == pytest.approx(0.55) and r["jitter"][4] == pytest.approx(0.05)
    assert r["plan_s"][[1, 3]] == pytest.approx([0.095, 0.25])
    assert summary["misses"] == 2 and summary["skipped_slots"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_unusable_observation_sends_the_safe_action_plans_nothing_and_the_next_slot_falls_back(mode):
    clock = FakeClock()
    robot = FakeRobot(clock, values=lambda c: [np.nan, 1.0] if c == 2 else [c, 1.0])
    loop, clock, robot, planner = make(mode, clock=clock, robot=robot)
    summary = loop.run(max_cycles=5)
    r = loop.telemetry.records()
    assert r["source"].tolist() == [PLAN, PLAN, SAFE, FALLBACK, PLAN]
    assert robot.sent[2][0] == 0.0
    np.testing.assert_allclose(r["action"][3], planner.row(2, 2))  # cycle 1's plan, row 2
    assert planner.calls == 1 + 4 and summary["misses"] == 0


class _PlanOnly(Planner):
    stats = PlanStats()

    def plan(self, obs):
        return np.zeros(1)

    def planned_actions(self):
        return np.zeros((5, 1))

    def reset(self):
        pass


def test_a_planner_without_first_action_or_with_one_step_plans_is_refused():
    loop, *_ = make("sync", planner=_PlanOnly())
    with pytest.raises(TypeError, match="commit = next needs planner.plan.*_PlanOnly"):
        loop.run(max_cycles=1)
    clock = FakeClock()
    loop, *_ = make("sync", clock=clock, planner=FakePlanner(clock, horizon=1))
    with pytest.raises(ValueError, match="at least 2 steps, the planner's have 1"):
        loop.run(max_cycles=1)
