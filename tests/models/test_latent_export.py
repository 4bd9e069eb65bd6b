"""Export of the latent model: parity with PyTorch, metadata, the runtime's RolloutModel,
policy-prior trajectories inside the bounds, MPPI with prior samples."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from rtmpc.models import ModelError, load_model
from rtmpc.models.runtime import read_metadata
from rtmpc.models.tdmpc.config import LatentModelConfig
from rtmpc.models.tdmpc.export import check_latent_parity, export_latent
from rtmpc.models.tdmpc.model import LatentWorldModel, make_graph
from rtmpc.models.tdmpc.runtime import LatentRolloutModel
from rtmpc.planners import make_planner, planner_config

TINY = LatentModelConfig(latent_dim=16, hidden=32, enc_hidden=32, num_q=3, num_bins=21)
LOW, HIGH = np.array([-2.0, 0.0]), np.array([1.0, 3.0])  # asymmetric bounds on purpose
GAMMA = 0.95


def random_model(cfg: LatentModelConfig = TINY, scale: float = 0.3, seed: int = 0) -> LatentWorldModel:
    """A tiny model with every weight perturbed (the zero-initialised heads say something)."""
    torch.manual_seed(seed)
    model = LatentWorldModel(3, 2, cfg, LOW, HIGH, seed=seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.set_num_threads(1)
    model = random_model()
    path = export_latent(model, tmp_path_factory.mktemp("latent") / "model.onnx", gamma=GAMMA,
                         extra_metadata={"task": "toy", "action_repeat": "2"})
    return model, path


def reference(model, obs, actions, pi_eps, q_idx):
    with torch.no_grad():
        out = make_graph(model, GAMMA)(torch.tensor(obs, dtype=torch.float32)[None], torch.from_numpy(actions),
                                       torch.from_numpy(pi_eps), torch.tensor(q_idx), torch.zeros(0, 1, 2))
    return out[0].numpy()


def test_parity_and_metadata(exported):
    model, path = exported
    obs = np.random.default_rng(1).normal(size=(16, 3))
    assert check_latent_parity(model, path, obs, gamma=GAMMA) <= 1e-3  # also within atol + rtol |value|
    meta = read_metadata(path)
    assert meta["kind"] == "latent" and meta["obs_dim"] == "3" and meta["act_dim"] == "2"
    assert meta["latent_dim"] == "16" and meta["num_q"] == "3" and float(meta["gamma"]) == GAMMA
    assert json.loads(meta["action_low"]) == LOW.tolist() and json.loads(meta["action_high"]) == HIGH.tolist()
    assert meta["task"] == "toy" and meta["action_repeat"] == "2" and meta["rtmpc_version"]
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # written atomically


@pytest.mark.parametrize("cfg", [TINY.replace(episodic=True), TINY.replace(latent_norm="layernorm", activation="mish"),
                                 TINY.replace(activation="elu", enc_layers=1)],
                         ids=["episodic", "layernorm-mish", "elu-1-layer-encoder"])
def test_parity_of_variants(cfg, tmp_path):
    model = random_model(cfg)
    path = export_latent(model, tmp_path / "model.onnx", gamma=GAMMA)
    assert check_latent_parity(model, path, gamma=GAMMA) <= 1e-3


def test_parity_failure_is_reported(tmp_path):
    model = random_model()
    path = export_latent(model, tmp_path / "model.onnx", gamma=GAMMA)
    with torch.no_grad():
        model.reward_head[-1].bias[0] += 1.0  # one bin: the softmax changes
    with pytest.raises(ModelError, match="returns differs"):
        check_latent_parity(model, path, gamma=GAMMA)


def test_a_policy_mismatch_fails_and_training_only_warns(tmp_path, caplog):
    model = random_model()
    path = export_latent(model, tmp_path / "model.onnx", gamma=GAMMA)
    with torch.no_grad():
        model.pi_head[-1].bias[0] += 0.01  # the prior's mean moves: far beyond rounding
    with pytest.raises(ModelError, match="parity failed"):  # the terminal value uses the policy too
        check_latent_parity(model, path, gamma=GAMMA)
    worst = check_latent_parity(model, path, gamma=GAMMA, strict=False)  # what training does
    assert worst > 1e-3 and "goes on with this export" in caplog.text
    assert "prior_actions differs" in caplog.text and "action half-range" in caplog.text


def test_runtime_rollout_matches_pytorch(exported):
    model, path = exported
    rm = load_model(path, stochastic=False)
    assert isinstance(rm, LatentRolloutModel) and rm.has_prior
    assert rm.dims.kind == "latent" and rm.dims.latent_dim == 16 and rm.dims.gamma == GAMMA
    rng = np.random.default_rng(2)
    obs = rng.normal(size=3)
    for k, h in ((8, 3), (5, 1), (8, 4)):  # new shapes rebind, H is free
        actions = rng.uniform(LOW, HIGH, (k, h, 2)).astype(np.float32)
        got = rm.rollout(obs, actions)
        want = reference(model, obs, actions, np.zeros((k, 2), np.float32), [0, 1])
        assert got.shape == (k,)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_runtime_rollout_includes_the_terminal_value(exported):
    """H steps of rewards plus gamma^H Q: changing the last action changes the return only
    through its reward and the terminal value, and a one-step rollout is r_0 + gamma Q(z_1)."""
    model, path = exported
    rm = load_model(path, stochastic=False)
    obs = np.array([0.3, -0.2, 0.5])
    a = np.array([[[0.5, 1.5]]], np.float32)
    with torch.no_grad():
        z0 = model.encode(torch.tensor(obs, dtype=torch.float32)[None])
        an = model.normalize_action(torch.from_numpy(a[:, 0]))
        r0 = model.reward(z0, an)
        z1 = model.next(z0, an)
        q = model.Q(z1, model.pi(z1, torch.zeros(1, 2))[0], torch.tensor([0, 1])).mean(0)
    np.testing.assert_allclose(rm.rollout(obs, a), (r0 + GAMMA * q).numpy(), rtol=1e-4, atol=1e-4)


def test_stochastic_rollouts_draw_pairs_and_noise(exported):
    _, path = exported
    rm = load_model(path, rng=0)
    obs = np.zeros(3)
    actions = np.random.default_rng(0).uniform(LOW, HIGH, (16, 3, 2)).astype(np.float32)
    first = rm.rollout(obs, actions).copy()
    assert not np.array_equal(first, rm.rollout(obs, actions))
    again = load_model(path, rng=0)
    np.testing.assert_array_equal(first, again.rollout(obs, actions))  # seeded: reproducible


def test_prior_actions_respect_bounds(exported, tmp_path):
    model, path = exported
    rm = load_model(path)
    rng = np.random.default_rng(0)
    for obs in rng.normal(scale=5.0, size=(5, 3)):
        prior = rm.prior_actions(obs, 24, 3, rng)
        assert prior.shape == (24, 3, 2) and prior.dtype == np.float32
        assert np.all(prior >= LOW) and np.all(prior <= HIGH)
    # A saturated policy (huge means and log-std) still stays inside the bounds.
    saturated = copy.deepcopy(model)
    with torch.no_grad():
        saturated.pi_head[-1].bias.fill_(50.0)
    path2 = export_latent(saturated, tmp_path / "saturated.onnx", gamma=GAMMA)
    prior = load_model(path2).prior_actions(np.zeros(3), 64, 5, rng)
    assert np.all(prior >= LOW) and np.all(prior <= HIGH) and np.allclose(prior, HIGH, atol=1e-3)


def test_prior_actions_follow_the_policy(exported):
    """The first prior action is pi(encode(obs), eps) mapped to the bounds."""
    model, path = exported
    rm = load_model(path)
    obs = np.array([0.1, 0.2, -0.3])
    prior = rm.prior_actions(obs, 6, 2, np.random.default_rng(5)).copy()
    eps = np.random.default_rng(5).standard_normal((6, 2, 2), dtype=np.float32)
    with torch.no_grad():
        z = model.encode(torch.tensor(obs, dtype=torch.float32)[None]).expand(6, -1)
        a0 = model.denormalize_action(model.pi(z, torch.from_numpy(eps[:, 0]))[0]).numpy()
    np.testing.assert_allclose(prior[:, 0], a0, rtol=1e-4, atol=1e-4)


def test_user_errors(exported):
    _, path = exported
    rm = load_model(path)
    with pytest.raises(ModelError, match="observation has 2 entries but the model expects 3"):
        rm.rollout(np.zeros(2), np.zeros((4, 3, 2)))
    with pytest.raises(ModelError, match=r"expected \(K, H, 2\)"):
        rm.rollout(np.zeros(3), np.zeros((4, 3)))
    with pytest.raises(ModelError, match="n >= 1"):
        rm.prior_actions(np.zeros(3), 0, 3, np.random.default_rng(0))


def test_mppi_with_policy_prior_samples(exported):
    _, path = exported
    cfg = planner_config(kind="mppi", horizon=3, samples=64, iterations=3, elites=8, prior_samples=8, alpha=0.0,
                        init_std=2.0)
    model = load_model(path, rng=0)
    priors, scored = [], []  # what the planner drew from the prior, and the sequences it scored
    draw, rollout = model.prior_actions, model.rollout
    model.prior_actions = lambda o, n, h, rng: priors.append((n, h, draw(o, n, h, rng))) or priors[-1][2]
    model.rollout = lambda o, acts, *a, **k: scored.append(np.array(acts[:8])) or rollout(o, acts, *a, **k)
    planner = make_planner(cfg, model, rng=0)
    obs = np.array([0.1, 0.0, -0.1])
    a = planner.plan(obs)
    assert a.shape == (2,) and np.all(a >= LOW) and np.all(a <= HIGH) and np.isfinite(planner.stats.predicted_return)
    # one draw per plan, the first 8 sequences of every iteration are that draw (clipped to the bounds)
    assert len(priors) == 1 and priors[0][:2] == (8, 3) and len(scored) == 3
    for seqs in scored:
        np.testing.assert_array_equal(seqs, np.clip(priors[0][2], LOW, HIGH).astype(np.float32))
    again = make_planner(cfg, load_model(path, rng=0), rng=0)
    np.testing.assert_array_equal(a, again.plan(obs))


def test_two_threads_split_the_candidates_and_agree(exported):
    _, path = exported
    one, two = load_model(path, threads=1, stochastic=False), load_model(path, threads=2, stochastic=False)
    assert one.workers == 1 and two.workers == 2
    rng = np.random.default_rng(3)
    obs = rng.normal(size=3)
    for k in (256, 130, 16):  # 16 < 2 x 64: not split
        actions = rng.uniform(LOW, HIGH, (k, 3, 2)).astype(np.float32)
        np.testing.assert_allclose(two.rollout(obs, actions), one.rollout(obs, actions), rtol=1e-5, atol=1e-5)
    assert len(two._score) == 1
