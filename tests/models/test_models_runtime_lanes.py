"""The runtime's lanes (candidates split over threads) and the per-member graph layout."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from pets_toys import SMALL, constant_ensemble
from rtmpc.models import ModelError, load_model
from rtmpc.models.common.ensemble import ProbabilisticEnsemble
from rtmpc.models.common.ensemble_export import LAYOUTS, PARITY_ATOL, check_parity, export_onnx

GAMMA = 0.9
DELTAS = np.array([[-1.0, 0.5], [0.0, 0.5], [1.0, 0.5], [2.0, 0.5], [3.0, 0.5]])
REWARDS = np.arange(5.0)
OBS0 = np.array([0.25, -1.0])


def discounted(values) -> float:
    return sum(GAMMA**t * v for t, v in enumerate(values))


def actions(k: int, h: int, a: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (k, h, a)).astype(np.float32)


@pytest.fixture(scope="module")
def toy_path(tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("toy") / "model.onnx"
    return export_onnx(constant_ensemble(DELTAS, REWARDS), path, action_low=[-1.0], action_high=[1.0],
                       gamma=GAMMA)


@pytest.fixture(scope="module")
def small_path(tmp_path_factory):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    model = ProbabilisticEnsemble(3, 2, SMALL, seed=0)
    model.fit_normalisers(rng.normal(1.0, 2.0, (200, 5)), rng.normal(0.0, 0.1, (200, 4)))
    path = tmp_path_factory.mktemp("small") / "model.onnx"
    return export_onnx(model, path, action_low=[-1, -1], action_high=[1, 1])


@pytest.mark.parametrize("propagation", ["TSinf", "TS1", "expectation"])
def test_two_lanes_give_the_known_answers(toy_path, propagation):
    h, k = 7, 40
    model = load_model(toy_path, threads=2, propagation=propagation, rng=0, min_lane=4)
    ret = model.rollout(OBS0, actions(k, h))
    assert model.parallel == "lanes" and [(k0, k1) for _, k0, k1 in model._split] == [(0, 20), (20, 40)]
    np.testing.assert_allclose(ret, discounted([REWARDS.mean()] * h), rtol=1e-5)
    if propagation == "TSinf":
        spread = (np.arange(h) + 1) * DELTAS[:, 0].std() / 2
        np.testing.assert_allclose(model.disagreement, np.broadcast_to(spread, (k, h)), rtol=1e-4)
    elif propagation == "expectation":
        np.testing.assert_allclose(model.disagreement, DELTAS[:, 0].std() / 2, rtol=1e-4)
    else:
        np.testing.assert_allclose(model.disagreement[:, 0], DELTAS[:, 0].std() / 2, rtol=1e-4)


def test_lanes_agree_with_one_lane_and_follow_the_seed(small_path):
    obs0, acts = np.array([1.0, 0.5, -1.0]), actions(64, 6, a=2)
    one = load_model(small_path, propagation="expectation").rollout(obs0, acts).copy()
    two = load_model(small_path, threads=2, propagation="expectation", min_lane=8).rollout(obs0, acts)
    np.testing.assert_allclose(two, one, rtol=1e-6)  # deterministic mode: same numbers
    runs = [load_model(small_path, threads=2, rng=seed, min_lane=8).rollout(obs0, acts).copy() for seed in (0, 0, 1)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2]) and np.all(np.isfinite(runs[0]))
    # Sampled returns scatter closely around the one-lane ones with many particles.
    ts_one = load_model(small_path, rng=3, particles=50).rollout(obs0, acts)
    np.testing.assert_allclose(runs[0], ts_one, atol=5e-3)


def test_small_k_runs_one_single_threaded_lane_and_buffers_are_reused(small_path):
    model = load_model(small_path, threads=2, min_lane=16, rng=0)  # rows per member: K * P / E = K
    obs0 = np.zeros(3)
    model.rollout(obs0, actions(20, 3, a=2))
    # Too few rows for two lanes: the first lane alone, on the single-threaded session (not
    # ONNX Runtime's pool, whose wake-ups per operator cost more than they save at this size).
    assert len(model._split) == 1 and model._split[0][0].sess is not model._sess
    assert model._split[0][0].sess.get_session_options().intra_op_num_threads == 1
    model.rollout(obs0, actions(40, 3, a=2))
    assert len(model._split) == 2 and all(lane.sess is not model._sess for lane, _, _ in model._split)
    assert model._cap == 40
    lane_buffers = [lane._b["x"] for lane in model._lanes]
    model.rollout(obs0, actions(32, 3, a=2))
    assert [lane._b["x"] for lane in model._lanes] == lane_buffers  # same arrays, no reallocation
    assert model.disagreement.shape == (32, 3)
    # Two particles per member: K = 20 candidates are 40 rows per member, enough for two lanes.
    model = load_model(small_path, threads=2, min_lane=16, rng=0, particles=10)
    model.rollout(obs0, actions(20, 3, a=2))
    assert len(model._split) == 2


def test_intra_mode_runs_one_lane_on_the_threaded_session(small_path):
    model = load_model(small_path, threads=2, parallel="intra", rng=0)
    assert model.parallel == "intra" and len(model._lanes) == 1 and model._lanes[0].sess is model._sess
    assert model._sess.get_session_options().intra_op_num_threads == 2
    before = model.eval_seconds
    model.rollout(np.zeros(3), actions(40, 4, a=2))
    assert model.eval_seconds > before
    with pytest.raises(ModelError, match="parallel = 'both'"):
        load_model(small_path, threads=2, parallel="both")
    with pytest.raises(ModelError, match="min_lane = 0"):
        load_model(small_path, min_lane=0)


def test_an_error_in_a_worker_lane_reaches_the_caller(toy_path):
    calls = []

    def reward_fn(o, a, n):
        calls.append(len(o))
        return np.zeros(len(o) if len(calls) == 1 else 1)  # the second lane gets a bad shape

    model = load_model(toy_path, threads=2, reward_fn=reward_fn, rng=0, min_lane=4)
    with pytest.raises(ModelError, match="reward_fn returned shape"):
        model.rollout(OBS0, actions(40, 3))


@pytest.mark.parametrize("activation", ["silu", "relu", "tanh"])
def test_layouts_compute_the_same_function(tmp_path, activation):
    torch.set_num_threads(1)
    cfg = SMALL.replace(activation=activation)
    model = ProbabilisticEnsemble(3, 2, cfg, seed=1)
    rng = np.random.default_rng(1)
    model.fit_normalisers(rng.normal(1.0, 2.0, (200, 5)), rng.normal(0.0, 0.1, (200, 4)))
    with torch.no_grad():  # non-zero biases, so that folding them is exercised
        for layer in [*model.hidden_layers, model.head]:
            layer.bias.normal_(0.0, 0.1)
    obs0, acts = np.array([1.0, 0.5, -1.0]), actions(12, 5, a=2)
    returns = {}
    for layout in LAYOUTS:
        path = export_onnx(model, tmp_path / f"{layout}.onnx", action_low=[-1, -1], action_high=[1, 1],
                           layout=layout)
        assert check_parity(model, path) <= PARITY_ATOL
        returns[layout] = load_model(path, propagation="expectation").rollout(obs0, acts).copy()
        ops = Counter(node.op_type for node in onnx.load(path).graph.node)
        if layout == "members":  # one 2-D Gemm per member and layer, normalisers folded in, no softplus
            assert ops["Gemm"] == 5 * 3 and ops["MatMul"] == 0 and ops["Sub"] == 0 and ops["Softplus"] == 0
    np.testing.assert_allclose(returns["members"], returns["batched"], rtol=1e-5, atol=1e-5)


def test_members_head_is_exact_at_the_log_variance_bounds(tmp_path):
    """std = A sqrt(1 + C / (1 + exp(u))) against softplus bounds, far past both of them."""
    torch.set_num_threads(1)
    model = ProbabilisticEnsemble(3, 2, SMALL, seed=2)
    with torch.no_grad():
        model.max_logvar.uniform_(-1.0, 1.0)
        model.min_logvar.uniform_(-14.0, -8.0)
        model.head.bias[:, :, model.out_dim:] += torch.linspace(-60.0, 60.0, model.out_dim)
    path = export_onnx(model, tmp_path / "m.onnx", action_low=[-1, -1], action_high=[1, 1])
    assert check_parity(model, path, n_random=512) <= PARITY_ATOL  # checks the stds too
    with torch.no_grad():
        model.max_logvar.fill_(60.0)
        model.min_logvar.fill_(-60.0)
    with pytest.raises(ModelError, match="layout='batched'"):
        export_onnx(model, tmp_path / "far.onnx", action_low=[-1, -1], action_high=[1, 1])
    export_onnx(model, tmp_path / "far.onnx", action_low=[-1, -1], action_high=[1, 1], layout="batched")


def test_unknown_layout_is_refused(tmp_path):
    with pytest.raises(ValueError, match="layout = 'sideways'"):
        export_onnx(constant_ensemble(DELTAS, REWARDS), tmp_path / "m.onnx", action_low=[-1], action_high=[1],
                    layout="sideways")
