"""A Gymnasium task by name through train, export, control and analyze, as a user runs them."""

from __future__ import annotations

import json

import pytest
from tiny_run import TINY, rtmpc

pytest.importorskip("gymnasium")

PENDULUM = [*TINY, "--set", "task.name=gym:Pendulum-v1", "--set", "task.action_repeat=1",
            "--set", "task.episode_steps=20"]


def test_gym_pendulum_trains_exports_controls_and_is_analysed(tmp_path):
    out = tmp_path / "run"
    res = rtmpc("train", "pets_cartpole", "--out", str(out), *PENDULUM)
    assert res.returncode == 0, res.stderr[-3000:]
    res = rtmpc("export", str(out), "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["obs_dim"] == 3
    res = rtmpc("control", "--model", str(out / "model.onnx"), "--cycles", "10", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["task"] == "gym:Pendulum-v1" and summary["cycles"] == 10
    res = rtmpc("analyze", str(out), "--episodes", "1", "--horizon", "4")
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["task"] == "gym:Pendulum-v1"
    assert (out / "analysis.json").is_file()
