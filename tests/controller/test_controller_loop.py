"""The control loop on a virtual clock with a scripted robot and planner (no sleeping)."""

from __future__ import annotations

import gc
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from controller_fakes import FakeClock, FakePlanner, FakeRobot
from rtmpc.configs import ConfigError
from rtmpc.controller import (
    ControlLoop,
    FastForwardClock,
    LoopConfig,
    LoopTiming,
    PlannerFailed,
    SafetyConfig,
    SafetyFilter,
)
from rtmpc.controller.safety import CLIPPED, NONFINITE_ACTION, NONFINITE_OBS, RATE_LIMITED, STALE_OBS
from rtmpc.controller.telemetry import FALLBACK, NONE, PLAN, SAFE

MODES = ("async", "sync")


def make(mode="async", *, rate=10.0, clock=None, A=1, low=-1.0, high=1.0, safety=SafetyConfig(),
         planner=None, robot=None, run_dir=None, **loop):
    """(loop, clock, robot, planner) with warm-up off unless asked for."""
    clock = clock if clock is not None else FakeClock()
    planner = planner if planner is not None else FakePlanner(clock, act_dim=A)
    robot = robot if robot is not None else FakeRobot(clock)
    loop.setdefault("warmup_plans", 0)
    loop.setdefault("commit", "now")  # commit = next: test_controller_commit_next.py
    cfg = LoopConfig(rate_hz=rate, mode=mode, **loop)
    filt = SafetyFilter(np.full(A, low), np.full(A, high), 1.0 / rate, safety)
    return ControlLoop(robot, planner, filt, cfg, clock=clock, run_dir=run_dir), clock, robot, planner


# -- scheduling ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_wake_times_are_exactly_on_the_grid_over_thousands_of_cycles(mode):
    clock = FakeClock(start=12.345)
    # in sync mode each plan takes 4 ms of virtual time: sleeping a period after it would drift
    planner = FakePlanner(clock, advance={i: 0.004 for i in range(10_000)} if mode == "sync" else {})
    loop, clock, robot, _ = make(mode, rate=30.0, clock=clock, planner=planner)
    cycles = 4000 if mode == "sync" else 1500
    summary = loop.run(max_cycles=cycles)
    r = loop.telemetry.records()
    period = 1.0 / 30.0
    k = np.arange(cycles)
    assert np.array_equal(r["slot"], k)
    assert np.array_equal(r["scheduled"], 12.345 + k * period)  # exact: no accumulation
    assert clock.sleeps == [12.345 + i * period for i in range(cycles)]
    assert np.all(r["jitter"] == 0.0)
    assert summary["cycles"] == cycles and summary["misses"] == 0
    assert summary["rate_hz"] == pytest.approx(30.0, rel=1e-9)
    assert summary["stop_reason"] == "max_cycles"


def test_sync_overrun_is_counted_sent_late_and_whole_periods_are_skipped():
    clock = FakeClock()
    planner = FakePlanner(clock, advance={2: 0.095, 4: 0.25})  # budget 0.09 s at 10 Hz
    loop, clock, robot, _ = make("sync", clock=clock, planner=planner)
    summary = loop.run(max_cycles=8)
    r = loop.telemetry.records()
    assert r["missed"].tolist() == [False, False, True, False, True, False, False, False]
    assert np.all(r["source"] == PLAN)  # sync: the late plan itself is sent, late
    assert r["sent"][2] == pytest.approx(0.2 + 0.095) and r["sent"][2] > r["scheduled"][2] + 0.09
    assert r["plan_s"][4] == pytest.approx(0.25)
    # cycle 4 ends at 0.65 s: slot 5 (0.5 s) is skipped, slot 6 wakes 50 ms late
    assert r["slot"].tolist() == [0, 1, 2, 3, 4, 6, 7, 8]
    assert r["jitter"][5] == pytest.approx(0.05)
    assert summary["skipped_slots"] == 1 and summary["misses"] == 2
    assert robot.sent_at[2] == pytest.approx(0.295)


# -- deadline and fallback (async) -----------------------------------------------------------

def test_async_overrun_sends_the_warm_started_fallback_on_time():
    clock = FakeClock(start=100.0)
    planner = FakePlanner(clock, horizon=5, stall={3})
    robot = FakeRobot(clock, hooks={5: planner.let_go})
    loop, clock, robot, planner = make("async", clock=clock, planner=planner, robot=robot)
    summary = loop.run(max_cycles=8)
    r = loop.telemetry.records()
    deadline = r["scheduled"] + loop.timing.budget_s
    assert r["missed"].tolist() == [False, False, False, True, True, False, False, False]
    assert r["source"].tolist() == [PLAN, PLAN, PLAN, FALLBACK, FALLBACK, PLAN, PLAN, PLAN]
    # the fallback is the last finished plan (call 2, made in slot 2) advanced one row per slot
    np.testing.assert_allclose(r["action"][3], planner.row(2, 1))
    np.testing.assert_allclose(r["action"][4], planner.row(2, 2))
    assert r["sent"][3] == deadline[3] and r["sent"][4] == deadline[4]  # on time, not late
    # in cycle 5 the late plan (call 3) is adopted and cycle 5's observation planned at once
    np.testing.assert_allclose(r["action"][5], planner.row(4, 0))
    np.testing.assert_allclose(planner.obs_seen[3], robot.read_values[1 + 3])
    np.testing.assert_allclose(planner.obs_seen[4], robot.read_values[1 + 5])
    assert r["plan_s"][3] == pytest.approx(0.2)  # written back when the late plan came in
    assert np.isnan(r["plan_s"][4])  # cycle 4 had no plan of its own
    assert planner.calls == 7
    assert summary["misses"] == 2 and summary["fallbacks"] == 2
    assert np.all(r["sent"][[0, 1, 2, 5, 6, 7]] == r["scheduled"][[0, 1, 2, 5, 6, 7]])


def test_async_fallback_runs_out_then_safe_action():
    clock = FakeClock()
    planner = FakePlanner(clock, horizon=3, stall={1})
    robot = FakeRobot(clock, hooks={6: planner.let_go})
    loop, clock, robot, planner = make("async", clock=clock, planner=planner, robot=robot,
                                       safety=SafetyConfig(safe_action=(-0.5,)))
    summary = loop.run(max_cycles=8)
    r = loop.telemetry.records()
    assert r["source"].tolist() == [PLAN, FALLBACK, FALLBACK, SAFE, SAFE, SAFE, PLAN, PLAN]
    np.testing.assert_allclose(r["action"][1:3, 0], [planner.row(0, 1)[0], planner.row(0, 2)[0]])
    np.testing.assert_allclose(r["action"][3:6, 0], -0.5)
    assert summary["misses"] == 5 and summary["safe_actions"] == 3


def test_async_with_no_plan_yet_sends_the_safe_action():
    clock = FakeClock()
    planner = FakePlanner(clock, stall={0})
    robot = FakeRobot(clock, hooks={2: planner.let_go})
    loop, *_ = make("async", clock=clock, planner=planner, robot=robot)
    loop.run(max_cycles=4)
    r = loop.telemetry.records()
    assert r["source"].tolist() == [SAFE, SAFE, PLAN, PLAN]
    assert r["action"][:2, 0].tolist() == [0.0, 0.0]


def test_async_on_a_real_clock_sends_the_fallback_at_the_deadline():
    # FastForwardClock: real waits on the planner thread with real timeouts, idle time skipped
    clock = FastForwardClock()
    stall_clock = FakeClock()  # the planner's stall flag only; it never moves
    planner = FakePlanner(stall_clock, stall={2})
    robot = FakeRobot(clock, hooks={4: planner.let_go})
    loop, *_ = make("async", rate=100.0, clock=clock, planner=planner, robot=robot)
    summary = loop.run(max_cycles=6)
    r = loop.telemetry.records()
    assert r["source"][2] == FALLBACK and r["source"][3] == FALLBACK
    assert np.all(r["sent"][2:4] >= r["scheduled"][2:4] + loop.timing.budget_s)
    assert summary["misses"] >= 2


# -- safety in the loop ----------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_nan_observation_sends_the_safe_action_and_skips_the_planner(mode):
    clock = FakeClock()
    robot = FakeRobot(clock, values=lambda c: [np.nan, 1.0] if c == 2 else [c, 1.0])
    loop, clock, robot, planner = make(mode, clock=clock, robot=robot)
    summary = loop.run(max_cycles=5)
    r = loop.telemetry.records()
    assert r["source"][2] == SAFE and r["safety"][2] == NONFINITE_OBS
    assert r["action"][2, 0] == 0.0 and robot.sent[2][0] == 0.0
    assert planner.calls == 4
    assert summary["safety_events"]["nonfinite_obs"] == 1 and summary["safety_events"]["total"] == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("policy", ["hold", "safe"])
def test_nan_plan_is_replaced_and_counted(mode, policy):
    clock = FakeClock()
    planner = FakePlanner(clock, nan={3})
    loop, clock, robot, planner = make(mode, clock=clock, planner=planner,
                                       safety=SafetyConfig(nonfinite_action=policy))
    summary = loop.run(max_cycles=5)
    r = loop.telemetry.records()
    expected = planner.row(2, 0)[0] if policy == "hold" else 0.0
    assert r["action"][3, 0] == pytest.approx(expected)
    assert np.isnan(r["planned"][3, 0]) and r["safety"][3] == NONFINITE_ACTION
    assert np.all(np.isfinite(np.array(robot.sent)))
    assert summary["safety_events"]["nonfinite_action"] == 1


def test_nan_plan_fallback_is_guarded_too():
    clock = FakeClock()
    planner = FakePlanner(clock, nan={1}, stall={2})
    robot = FakeRobot(clock, hooks={4: planner.let_go})
    loop, clock, robot, planner = make("async", clock=clock, planner=planner, robot=robot)
    loop.run(max_cycles=5)
    r = loop.telemetry.records()
    assert r["source"][2] == FALLBACK and r["safety"][2] == NONFINITE_ACTION
    assert np.all(np.isfinite(np.array(robot.sent)))


@pytest.mark.parametrize("mode", MODES)
def test_stale_observation_trips_the_watchdog(mode):
    clock = FakeClock()
    # the robot stops producing new readings after cycle 2 and resumes at cycle 8
    robot = FakeRobot(clock, seq=lambda c: 2 if 2 <= c < 8 else c)
    loop, clock, robot, planner = make(mode, clock=clock, robot=robot,
                                       safety=SafetyConfig(stale_after_s=0.25))
    summary = loop.run(max_cycles=10)
    r = loop.telemetry.records()
    stale = (r["safety"] & STALE_OBS) > 0
    assert stale.tolist() == [False] * 5 + [True] * 3 + [False] * 2  # age 0.3, 0.4, 0.5 s
    assert np.all(r["source"][stale] == SAFE) and np.all(r["action"][stale] == 0.0)
    assert summary["safety_events"]["stale_obs"] == 3
    assert planner.calls == 7


def test_stale_stamp_trips_the_watchdog():
    clock = FakeClock()
    robot = FakeRobot(clock, stamp=lambda c, now: now - (0.5 if c == 3 else 0.01))
    loop, *_ = make("sync", clock=clock, robot=robot,
                    safety=SafetyConfig(stale_from="stamp", stale_after_s=0.2))
    loop.run(max_cycles=5)
    assert loop.telemetry.records()["safety"].tolist() == [0, 0, 0, STALE_OBS, 0]


@pytest.mark.parametrize("mode", MODES)
def test_rate_limit_and_bounds_are_enforced(mode):
    clock = FakeClock()
    # bang-bang plans far outside the bounds [-1, 1] x [0, 2]
    planner = FakePlanner(clock, act_dim=2, action=lambda i: [5.0, -3.0] if i % 2 else [-5.0, 9.0])
    loop = ControlLoop(FakeRobot(clock), planner,
                       SafetyFilter([-1.0, 0.0], [1.0, 2.0], 0.1, SafetyConfig(max_rate=2.5)),
                       LoopConfig(rate_hz=10.0, mode=mode, warmup_plans=0, commit="now"), clock=clock)
    summary = loop.run(max_cycles=12)
    r = loop.telemetry.records()
    sent = np.vstack([np.zeros(2), r["action"]])  # the filter starts from the safe action (0, 0)
    step = np.abs(np.diff(sent, axis=0))
    assert np.all(step <= 0.25 * 2.0 + 1e-12)  # 2.5 / s x range 2 x 0.1 s
    assert np.all((r["action"] >= [-1.0, 0.0]) & (r["action"] <= [1.0, 2.0]))
    assert np.all(r["safety"] & CLIPPED) and np.all(r["safety"] & RATE_LIMITED)
    assert summary["safety_events"]["clipped"] == 12 and summary["safety_events"]["rate_limited"] == 12


# -- summary and telemetry -------------------------------------------------------------------

def test_summary_matches_the_records_and_the_files(tmp_path):
    clock = FakeClock()
    planner = FakePlanner(clock, stall={4}, nan={9}, advance={})
    robot = FakeRobot(clock, hooks={7: planner.let_go},
                      values=lambda c: [np.nan, 0.0] if c == 11 else [c, 0.0])
    loop, clock, robot, planner = make("async", clock=clock, planner=planner, robot=robot,
                                       run_dir=tmp_path, safety=SafetyConfig(max_rate=1.0))
    summary = loop.run(max_cycles=20)
    r = loop.telemetry.records()
    assert summary["cycles"] == len(r["cycle"]) == 20
    assert summary["misses"] == int(r["missed"].sum()) == 3
    assert summary["episode_return"] == pytest.approx(sum(1.0 + 0.5 * c for c in range(20)))
    assert summary["episode_return"] == pytest.approx(r["reward"].sum())
    plan_ms = r["plan_s"][np.isfinite(r["plan_s"])] * 1e3
    assert summary["plan_ms_max"] == pytest.approx(plan_ms.max())
    assert summary["plan_ms_p50"] == pytest.approx(np.percentile(plan_ms, 50))
    assert summary["jitter_ms_p99"] == pytest.approx(np.percentile(r["jitter"] * 1e3, 99))
    by_kind = summary["safety_events"]
    assert by_kind["nonfinite_obs"] == int(np.count_nonzero(r["safety"] & NONFINITE_OBS)) == 1
    assert by_kind["nonfinite_action"] == 1
    assert by_kind["total"] == sum(v for k, v in by_kind.items() if k != "total")
    assert summary["rate_hz"] == pytest.approx(10.0)
    # files: written atomically (no temporary left), same rows
    saved = np.load(tmp_path / "telemetry.npz")
    np.testing.assert_array_equal(saved["action"], r["action"])
    np.testing.assert_array_equal(saved["missed"], r["missed"])
    on_disk = json.loads((tmp_path / "telemetry_summary.json").read_text())
    assert on_disk["misses"] == 3 and on_disk["stop_reason"] == "max_cycles"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[1:] == ["telemetry.npz", "telemetry_summary.json"] and names[0] == Path(summary["mcap"]).name


def test_done_observation_ends_the_episode():
    clock = FakeClock()
    robot = FakeRobot(clock, done_at=6, reward=lambda c: 1.0)
    loop, clock, robot, planner = make("async", clock=clock, robot=robot,
                                       safety=SafetyConfig(safe_action=(0.3,)))
    summary = loop.run()
    r = loop.telemetry.records()
    assert summary["stop_reason"] == "done" and summary["cycles"] == 7
    assert r["source"][-1] == NONE and r["done"][-1] and np.isnan(r["sent"][-1])
    assert summary["episode_return"] == 7.0
    assert len(robot.sent) == 7 and robot.sent[-1][0] == 0.3  # six planned actions, then safe


def test_safe_on_exit_can_be_turned_off():
    loop, clock, robot, planner = make("sync", safe_on_exit=False)
    loop.run(max_cycles=3)
    assert len(robot.sent) == 3 and robot.sent[-1][0] == pytest.approx(planner.row(2, 0)[0])


# -- stopping ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_with_the_safe_action_and_flushed_telemetry(tmp_path, mode, sig):
    clock = FakeClock()
    before = signal.getsignal(sig)
    robot = FakeRobot(clock, hooks={4: lambda: os.kill(os.getpid(), sig)})
    loop, clock, robot, planner = make(mode, clock=clock, robot=robot, run_dir=tmp_path,
                                       safety=SafetyConfig(safe_action=(-0.25,)))
    summary = loop.run()
    assert summary["stop_reason"] == sig.name and summary["cycles"] == 5
    assert len(robot.sent) == 6 and robot.sent[-1][0] == -0.25
    assert signal.getsignal(sig) is before
    saved = np.load(tmp_path / "telemetry.npz")
    assert saved["cycle"].tolist() == [0, 1, 2, 3, 4]


def test_stop_from_another_caller_sends_the_safe_action():
    clock = FakeClock()
    hooks = {}
    robot = FakeRobot(clock, hooks=hooks)
    loop, clock, robot, planner = make("async", clock=clock, robot=robot, safe_on_exit=False)
    hooks[3] = loop.stop
    summary = loop.run()
    assert summary["stop_reason"] == "stop" and summary["cycles"] == 4
    assert robot.sent[-1][0] == 0.0


@pytest.mark.parametrize("mode", MODES)
def test_planner_error_sends_the_safe_action_and_reraises(tmp_path, mode):
    clock = FakeClock()
    planner = FakePlanner(clock, fail={2})
    loop, clock, robot, planner = make(mode, clock=clock, planner=planner, run_dir=tmp_path,
                                       safe_on_exit=False)
    with pytest.raises((RuntimeError, PlannerFailed), match="planner failure in call 2|call 2"):
        loop.run(max_cycles=10)
    assert robot.sent[-1][0] == 0.0 and len(robot.sent) == 3
    assert loop.summary["stop_reason"] == "error" and loop.summary["cycles"] == 2
    assert (tmp_path / "telemetry.npz").exists()


def test_gc_is_off_during_the_run_and_restored():
    seen = []
    clock = FakeClock()
    robot = FakeRobot(clock, hooks={1: lambda: seen.append(gc.isenabled())})
    loop, *_ = make("sync", clock=clock, robot=robot)
    was = gc.isenabled()
    loop.run(max_cycles=3)
    assert seen == [False] and gc.isenabled() == was


def test_the_only_full_collection_is_before_the_first_cycle(monkeypatch):
    """A full collection after a training run held the GIL ~150 ms; at the end of the run a
    wall-clock robot in the same process is still running (it fell behind real time), so the
    loop collects before its clock starts and never after its first cycle."""
    events = []
    clock = FakeClock()
    robot = FakeRobot(clock, hooks={0: lambda: events.append("cycle 0")})
    monkeypatch.setattr(gc, "collect", lambda *a: events.append("collect") or 0)
    loop, *_ = make("async", clock=clock, robot=robot)
    loop.run(max_cycles=3)
    assert events.index("cycle 0") > events.index("collect") and events.count("collect") == 1


# -- set-up --------------------------------------------------------------------------------

def test_warmup_plans_then_resets_the_planner():
    loop, clock, robot, planner = make("sync", warmup_plans=2)
    loop.run(max_cycles=1)
    assert planner.calls == 3 and planner.resets == 2


def test_planner_and_filter_must_agree_on_the_action_size():
    clock = FakeClock()
    loop = ControlLoop(FakeRobot(clock), FakePlanner(clock, act_dim=2),
                       SafetyFilter([-1.0], [1.0], 0.1), LoopConfig(rate_hz=10.0), clock=clock)
    with pytest.raises(ValueError, match=r"shape \(5, 2\).*1 actions"):
        loop.run(max_cycles=1)


def test_timing_resolves_from_the_task_rate_and_checks_the_margin():
    assert LoopTiming.resolve(LoopConfig(), task_rate_hz=50.0).budget_s == pytest.approx(0.018)
    assert LoopTiming.resolve(LoopConfig(rate_hz=20.0, deadline_margin_s=0.001)).budget_s == \
        pytest.approx(0.049)
    with pytest.raises(ConfigError, match="rate_hz is not set"):
        LoopTiming.resolve(LoopConfig())
    with pytest.raises(ConfigError, match="deadline_margin_s = 0.05 s leaves no time"):
        LoopTiming.resolve(LoopConfig(rate_hz=25.0, deadline_margin_s=0.05))
    with pytest.raises(ConfigError, match="mode"):
        LoopConfig(mode="threaded")
    with pytest.raises(ConfigError, match="rate_hz"):
        LoopConfig(rate_hz=0.0)


def test_a_planner_thread_that_outlives_its_run_blocks_the_next_run_until_it_ends():
    clock = FakeClock()
    planner = FakePlanner(clock, stall={2})
    loop, clock, robot, planner = make("async", clock=clock, planner=planner, join_timeout_s=0.05)
    loop.run(max_cycles=3)  # ends with call 2 still planning
    with pytest.raises(RuntimeError, match="still planning"):
        loop.run(max_cycles=3)
    planner.let_go()
    assert loop.run(max_cycles=3)["misses"] == 0
