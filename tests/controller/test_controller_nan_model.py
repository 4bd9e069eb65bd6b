"""A model that predicts nothing finite is a safety event with the real planners: counted as
nonfinite_model, logged, and the safe action sent (never the stale warm-start plan)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from controller_fakes import FakeClock, FakeRobot
from rtmpc.controller import ControlLoop, LoopConfig, SafetyConfig, SafetyFilter
from rtmpc.controller.safety import NONFINITE_MODEL
from rtmpc.models.base import ModelDims, RolloutModel
from rtmpc.planners import make_planner, planner_config


class BreaksAt(RolloutModel):
    """Returns -|u_0 - 0.5| summed over the horizon (optimum: 0.5, inside [-1, 1]); NaN for
    every sequence once ``broken`` is set."""

    def __init__(self):
        self.dims = ModelDims(obs_dim=2, act_dim=1, action_low=np.array([-1.0], np.float32),
                              action_high=np.array([1.0], np.float32))
        self.broken = False

    def rollout(self, obs0, actions):
        out = -np.abs(actions[:, :, 0] - 0.5).sum(axis=1).astype(np.float64)
        return np.full_like(out, np.nan) if self.broken else out


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("commit", ["now", "next"])
@pytest.mark.parametrize("kind", ["cem", "mppi"])
def test_a_nan_model_sends_the_safe_action_and_counts_it(kind, commit, mode, caplog):
    clock = FakeClock()
    model = BreaksAt()
    planner = make_planner(planner_config(kind, horizon=4, samples=64, elites=8, iterations=3), model, rng=0)

    def brk():
        model.broken = True

    robot = FakeRobot(clock, hooks={6: brk})
    safe = -0.25
    filt = SafetyFilter(np.array([-1.0]), np.array([1.0]), 0.1, SafetyConfig(safe_action=(safe,)))
    loop = ControlLoop(robot, planner, filt, LoopConfig(rate_hz=10.0, mode=mode, commit=commit, warmup_plans=1),
                       clock=clock)
    with caplog.at_level(logging.WARNING):
        summary = loop.run(max_cycles=14)
    sent = np.array(robot.sent)[:, 0]
    r = loop.telemetry.records()
    before = slice(2, 5)  # planning well, before the break
    assert np.all(np.abs(sent[before] - 0.5) < 0.2), sent
    assert not np.any(r["safety"][before] & NONFINITE_MODEL)
    after = slice(9, 14)  # every plan since the break found no finite rollout
    assert np.all(sent[after] == safe), sent
    assert np.all(r["safety"][after] & NONFINITE_MODEL)
    assert summary["safety_events"]["nonfinite_model"] >= 5
    assert "nonfinite_model" in caplog.text
    assert planner.stats.no_plan and planner.stats.nonfinite == 64 * 3
