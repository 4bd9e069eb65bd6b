"""The control rate is resolved once (the command line over the file, the file over the model)
and the loop, the safety filter, the robot and the summary all use that one rate."""

from __future__ import annotations

import math

import pytest
import rtmpc.scripts.control as control
import yaml

from rtmpc import controller, sim


@pytest.fixture
def seen(monkeypatch):
    """Records the period or rate each component was built with."""
    seen: dict[str, float] = {}

    class Loop(controller.ControlLoop):
        def __init__(self, *a, timing, **kw):
            seen["loop"] = timing.period_s
            super().__init__(*a, timing=timing, **kw)

        def run(self, max_cycles=None):
            seen["max_cycles"] = max_cycles
            return super().run(max_cycles=max_cycles)

    class Safety(controller.SafetyFilter):
        def __init__(self, low, high, period_s, *a, **kw):
            seen["safety"] = period_s
            super().__init__(low, high, period_s, *a, **kw)

    def bridge_robot(endpoint, spec, period_s, tls=None, ros2=None):
        seen["robot"] = period_s
        # the robot's process: the task at its physics step (spec comes from the model file)
        env = sim.make(sim.TaskConfig(name=spec.name, episode_steps=spec.episode_steps * spec.action_repeat))
        robot = sim.SimRobot(env, mode="lockstep")
        robot.stats = {}  # what a BridgeRobot reports
        return robot

    monkeypatch.setattr(controller.deploy, "ControlLoop", Loop)
    monkeypatch.setattr(controller.deploy, "SafetyFilter", Safety)
    monkeypatch.setattr(control, "_bridge_robot", bridge_robot)
    return seen


def _config_at(run_dir, tmp_path, rate):
    raw = yaml.safe_load((run_dir / "config.yaml").read_text())
    raw.setdefault("loop", {})["rate_hz"] = rate
    raw["loop"]["servo_hz"] = None  # one rate: pets_cartpole's own config runs a 100 Hz servo
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(raw))
    return control.control_config(path, [], None)


@pytest.mark.parametrize("flag, file, expected", [(20.0, 10.0, 20.0), (None, 10.0, 10.0), (None, None, 6.25)])
def test_one_rate_for_loop_safety_robot_and_summary(run_dir, tmp_path, seen, flag, file, expected):
    cfg = _config_at(run_dir, tmp_path, file)
    # the tiny run's point-target model steps at 6.25 Hz (0.02 s x action repeat 8); its episode is
    # 15 model steps (2.4 s)
    r = control.run_episodes(run_dir / "model.onnx", None, cfg, rate_hz=flag, robot_endpoint="tcp/127.0.0.1:1")
    period = 1.0 / expected
    assert seen["loop"] == pytest.approx(period) and seen["safety"] == pytest.approx(period)
    assert seen["robot"] == pytest.approx(period)
    assert r["rate_hz_target"] == pytest.approx(expected)
    assert seen["max_cycles"] == round(2.4 * expected) + math.ceil(expected)  # the episode, and a second more


def test_a_model_on_another_task_is_refused_or_warned_with_both_names(caplog):
    from types import SimpleNamespace

    from rtmpc.models.base import ModelError

    dims = SimpleNamespace(obs_dim=5, act_dim=1)
    with pytest.raises(ModelError, match=r"task point-target \(the model was trained on cartpole-swingup\)"):
        control._check_task("m.onnx", dims, "cartpole-swingup", SimpleNamespace(name="point-target", obs_dim=6,
                                                                                 act_dim=2))
    with caplog.at_level("WARNING"):
        control._check_task("m.onnx", dims, "cartpole-swingup", SimpleNamespace(name="cartpole-balance", obs_dim=5,
                                                                                 act_dim=1))
    assert any("trained on cartpole-swingup, not cartpole-balance" in r.getMessage() for r in caplog.records)
