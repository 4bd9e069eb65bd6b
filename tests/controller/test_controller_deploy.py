"""controller.deploy: a user's own robot and planner through one episode, and the summary over episodes."""

from __future__ import annotations

import numpy as np
from bridge_fakes import ConstantPlanner, ToyRobot
from rtmpc.controller import LoopConfig, LoopTiming, SafetyConfig, deploy


def test_a_user_robot_runs_one_lockstep_episode_with_its_plot(tmp_path):
    robot = ToyRobot(steps=20)
    timing = LoopTiming.resolve(LoopConfig(), task_rate_hz=50.0)
    summary, records = deploy.run_episode(robot, ConstantPlanner(value=2.0), action_low=np.array([-1.0]),
                                          action_high=np.array([1.0]), timing=timing, max_cycles=100,
                                          loop=LoopConfig(commit="now"), safety=SafetyConfig(), realtime=False,
                                          run_dir=tmp_path, title="toy")
    assert summary["stop_reason"] == "done" and summary["cycles"] == 21  # the 21st reads done
    assert robot.applied[:20] == [1.0] * 20  # the planner's 2.0, clipped by the safety filter to the bound
    assert records["cycle"].size == 21 and (tmp_path / "telemetry.png").read_bytes()[:4] == b"\x89PNG"
    total = deploy.combine([summary["episode_return"]] * 2, [records, records], [summary, summary])
    assert total["episodes"] == 2 and total["cycles"] == 42 and total["return_std"] == 0.0
