"""Thread priorities of a wall-clock run (controller.priority): the loop thread above the planner's.

Linux only (per-thread policies and nice values). SCHED_FIFO needs a privilege; where the
test process lacks it, the refused path is what runs (and is tested with a refusal forced).
"""

from __future__ import annotations

import logging
import os
import sys
import threading

import numpy as np
import pytest
from controller_fakes import FakeClock, FakePlanner, FakeRobot
from rtmpc.controller import ControlLoop, LoopConfig, MonotonicClock, SafetyConfig, SafetyFilter, priority

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities: Linux")


def _fifo_allowed() -> bool:
    """Whether this process may take SCHED_FIFO (tried in a throwaway thread)."""
    out = []

    def probe():
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            out.append(True)
        except OSError:
            out.append(False)

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return out[0]


class RecordingPlanner(FakePlanner):
    """Records, in each plan call, the planner thread's policy and nice value."""

    def plan(self, obs, first_action=None):
        tid = threading.get_native_id()
        self.seen = (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, tid))
        return super().plan(obs, first_action)


def _run(clock, **loop):
    cfg = LoopConfig(rate_hz=200.0, warmup_plans=0, mcap=False, **loop)
    planner = RecordingPlanner(clock)
    filt = SafetyFilter(np.array([-1.0]), np.array([1.0]), 0.005, SafetyConfig())
    seen = {}

    class Robot(FakeRobot):
        def read(self):  # the loop thread's policy while it runs
            seen["loop"] = os.sched_getscheduler(0)
            return super().read()

    summary = ControlLoop(Robot(clock), planner, filt, cfg, clock=clock).run(max_cycles=20)
    return summary, planner, seen


def test_a_wall_clock_run_lowers_the_planner_thread_and_restores_the_loop_thread():
    before = (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    summary, planner, seen = _run(MonotonicClock(), planner_nice=7)
    assert planner.seen == (os.SCHED_OTHER, max(7, before[1]))  # nice 7, normal policy (not the loop's FIFO)
    if _fifo_allowed():
        assert seen["loop"] == os.SCHED_FIFO and summary["rt_priority"] == 50
    else:
        assert seen["loop"] == os.SCHED_OTHER and summary["rt_priority"] == 0
    # the calling thread gets back what it had
    assert (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())) == before


def test_a_lockstep_run_leaves_priorities_alone():
    summary, planner, seen = _run(FakeClock(), planner_nice=7)
    assert planner.seen[0] == os.SCHED_OTHER and planner.seen[1] != 7 and seen["loop"] == os.SCHED_OTHER
    assert summary["rt_priority"] == 0


def test_rt_priority_zero_does_not_ask():
    summary, _, seen = _run(MonotonicClock(), rt_priority=0)
    assert seen["loop"] == os.SCHED_OTHER and summary["rt_priority"] == 0


def test_a_refused_fifo_warns_once_and_the_run_goes_on(monkeypatch, caplog):
    def refuse(*_):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(priority.os, "sched_setscheduler", refuse)
    monkeypatch.setattr(priority, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="rtmpc.controller.priority"):
        a = priority.raise_to_fifo(50)
        b = priority.raise_to_fifo(50)
    assert a is None and b is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "ulimit -r" in lines[0] and "loop.rt_priority: 0" in lines[0]


def test_lowering_one_thread_leaves_the_others():
    me = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, me)
    seen = []

    def worker():
        priority.lower_this_thread(12)
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [max(12, before)] and os.getpriority(os.PRIO_PROCESS, me) == before


@pytest.mark.parametrize("key,value", [("rt_priority", 100), ("rt_priority", -1), ("planner_nice", 20)])
def test_impossible_priorities_are_config_errors(key, value):
    from rtmpc.configs import ConfigError

    with pytest.raises(ConfigError, match=key):
        LoopConfig(**{key: value})
