"""Trained actors as policy files: export parity, the ONNX runtime with an explicit recurrent
state, the runner behind the planner interface, and `rtmpc control` over a policy file."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from rtmpc.models.base import ModelError
from rtmpc.models.common.policy import load_policy
from rtmpc.models.common.policy_export import check_policy_parity, export_policy
from rtmpc.planners import PolicyRunner, make_planner, planner_config

OBS, ACT = 6, 2  # point-target's sizes
LOW, HIGH = np.array([-1.0, -1.0]), np.array([1.0, 1.0])


class Tanh(torch.nn.Module):
    """ACT Gaussian actor squashed into [-1, 1]: tanh(W obs + std * eps)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(OBS, ACT)

    def forward(self, obs, eps):
        return torch.tanh(self.lin(obs) + 0.3 * eps)


class Recurrent(torch.nn.Module):
    """ACT GRU actor: the state carries what it has seen."""

    def __init__(self, hidden=8):
        super().__init__()
        torch.manual_seed(1)
        self.cell = torch.nn.GRUCell(OBS, hidden)
        self.head = torch.nn.Linear(hidden, ACT)

    def forward(self, obs, eps, h):
        h2 = self.cell(obs, h)
        return torch.tanh(self.head(h2) + 0.1 * eps), h2


META = {"task": "point-target", "control_period": "0.02", "action_repeat": "1"}


@pytest.fixture
def tanh_file(tmp_path):
    module = Tanh()
    path = export_policy(module, tmp_path / "policy.onnx", kind="toy", obs_dim=OBS, act_dim=ACT, action_low=LOW,
                         action_high=HIGH, extra_metadata=META)
    return module, path


def test_feed_forward_export_matches_torch_deterministic_and_sampled(tanh_file):
    module, path = tanh_file
    assert check_policy_parity(module, path, np.zeros((3, OBS))) <= 1e-4
    policy = load_policy(path)
    obs = np.linspace(-1, 1, OBS)
    action, state = policy.act(obs, policy.initial_state())
    with torch.no_grad():
        want = module(torch.tensor(obs[None], dtype=torch.float32), torch.zeros(1, ACT)).numpy()[0]
    np.testing.assert_allclose(action, want, atol=1e-5)
    assert state == ()
    sampled = [load_policy(path, deterministic=False, rng=7).act(obs, ())[0] for _ in range(2)]
    np.testing.assert_array_equal(sampled[0], sampled[1])  # seeded
    assert np.abs(sampled[0] - action).max() > 1e-3  # and not the mean


def test_recurrent_state_is_an_explicit_input_and_output(tmp_path):
    module = Recurrent()
    path = export_policy(module, tmp_path / "gru.onnx", kind="toy", obs_dim=OBS, act_dim=ACT, action_low=LOW,
                         action_high=HIGH, state_shapes=[(8,)])
    assert check_policy_parity(module, path) <= 1e-4
    policy = load_policy(path)
    s0 = policy.initial_state()
    assert [s.shape for s in s0] == [(1, 8)]
    obs = np.ones(OBS)
    a1, s1 = policy.act(obs, s0)
    a2, _ = policy.act(obs, s1)
    assert np.abs(a1 - a2).max() > 1e-4  # the same observation, another state: another action
    runner = PolicyRunner(policy)
    np.testing.assert_allclose(runner.plan(obs), a1, atol=1e-6)
    np.testing.assert_allclose(runner.plan(obs), a2, atol=1e-6)
    runner.reset()
    np.testing.assert_allclose(runner.plan(obs), a1, atol=1e-6)


def test_the_runner_is_what_make_planner_gives_a_policy(tanh_file):
    _, path = tanh_file
    runner = make_planner(planner_config(), load_policy(path))
    assert isinstance(runner, PolicyRunner)
    obs = np.zeros(OBS)
    action = runner.plan(obs)
    np.testing.assert_array_equal(runner.planned_actions(), [action, action])
    first = np.array([0.5, -2.0])  # committed one period ahead, clipped to the bounds
    nxt = runner.plan(obs, first)
    np.testing.assert_array_equal(runner.planned_actions(), [[0.5, -1.0], nxt])


def test_a_model_file_is_not_a_policy_and_an_impossible_state_is_refused(tanh_file, tmp_path):
    _, path = tanh_file
    proto = onnx.load(path)
    for entry in proto.metadata_props:
        if entry.key == "role":
            entry.value = "model"
    onnx.save(proto, tmp_path / "not_policy.onnx")
    with pytest.raises(ModelError, match="is not a policy file"):
        load_policy(tmp_path / "not_policy.onnx")
    for entry in proto.metadata_props:
        if entry.key == "role":
            entry.value = "policy"
        if entry.key == "state_shapes":
            entry.value = json.dumps([[10**9]])
    onnx.save(proto, tmp_path / "huge.onnx")
    with pytest.raises(ModelError, match="recurrent state of shapes"):
        load_policy(tmp_path / "huge.onnx")


def test_rtmpc_control_runs_a_policy_file_through_the_loop(tanh_file):
    from tiny_run import rtmpc

    _, path = tanh_file
    res = rtmpc("control", "--model", str(path), "--cycles", "5", "--json", "--rate", "50")
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["cycles"] == 5 and out["misses"] == 0 and out["task"] == "point-target" and out["planner"] == "policy"
