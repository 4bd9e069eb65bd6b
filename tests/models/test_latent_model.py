"""The TD-MPC latent world model: losses fall on a known system, TD targets come from the
target ensemble, the blocks behave as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rtmpc.configs import ConfigError
from rtmpc.models.common.buffer import ReplayBuffer
from rtmpc.models.tdmpc.config import LatentModelConfig, LatentTrainConfig, tdmpc2_discount
from rtmpc.models.tdmpc.model import (
    LatentLearner,
    LatentWorldModel,
    SimNorm,
    load_latent,
    load_latent_learner,
    save_latent,
    two_hot,
    two_hot_inv,
)
from rtmpc.models.tdmpc.train import sample_batch

TINY = LatentModelConfig(latent_dim=16, hidden=32, enc_hidden=32, num_q=2, num_bins=21)


def linear_buffer(episodes: int = 20, steps: int = 25, seed: int = 0) -> ReplayBuffer:
    """The known system: x' = 0.9 x + 0.3 u, observed as (x, x^2), reward 1 - x'^2."""
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(2, 1)
    for ep in range(episodes):
        x = rng.uniform(-1, 1)
        for _ in range(steps):
            u = rng.uniform(-1, 1)
            x1 = 0.9 * x + 0.3 * u
            buf.add([x, x * x], [u], 1.0 - x1 * x1, [x1, x1 * x1], False, ep)
            x = x1
    return buf


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def test_losses_decrease_on_a_known_system():
    buf = linear_buffer()
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = LatentWorldModel(2, 1, TINY, [-1], [1], seed=0)
    learner = LatentLearner(model, LatentTrainConfig(batch_size=64, lr=3e-3), discount=0.9, seed=0)
    hist = [learner.update(*sample_batch(buf, model, 64, 3, rng)) for _ in range(150)]
    first = {k: np.mean([h[k] for h in hist[:10]]) for k in hist[0]}
    last = {k: np.mean([h[k] for h in hist[-10:]]) for k in hist[0]}
    for key in ("consistency_loss", "reward_loss", "value_loss", "total_loss"):
        assert last[key] < 0.7 * first[key], (key, first[key], last[key])
    # The reward head has learnt the known reward of real transitions.
    with torch.no_grad():
        obs = torch.from_numpy(buf.obs[:200])
        act = model.normalize_action(torch.from_numpy(buf.act[:200]))
        pred = model.reward(model.encode(obs), act).numpy()
    assert np.mean(np.abs(pred - buf.reward[:200])) < 0.15


def test_td_targets_use_the_target_ensemble():
    model = LatentWorldModel(2, 1, TINY, [-1], [1], seed=0).eval()
    learner = LatentLearner(model, LatentTrainConfig(), discount=0.9, seed=0)
    with torch.no_grad():
        for p in model.parameters():  # give the zero-initialised output layers something to say
            p.add_(0.1 * torch.randn_like(p))
        model.target_qs.load_state_dict(model.qs.state_dict())
    z = model.encode(torch.randn(7, 2)).detach()
    reward, done = torch.rand(7), torch.tensor([0, 0, 1, 0, 0, 0, 1], dtype=torch.float32)

    def target():
        learner.generator.manual_seed(3)
        return learner.td_target(z, reward, done)

    before = target()
    # By hand: r + gamma (1 - done) min over the pair (num_q = 2: both heads) of the *target* Q
    # at the policy's action, drawn with the same noise.
    learner.generator.manual_seed(3)
    eps = torch.randn(7, 1, generator=learner.generator)
    a = model.pi(z, eps)[0]
    q = model.Q(z, a, target=True).min(0).values
    assert torch.allclose(before, reward + 0.9 * (1 - done) * q, atol=1e-6)
    assert torch.equal(before[done == 1], reward[done == 1])  # no bootstrap past a termination
    with torch.no_grad():  # the online ensemble does not enter the target ...
        model.qs.w2.add_(5.0)
    assert torch.equal(target(), before)
    with torch.no_grad():  # ... the target ensemble does
        model.target_qs.w2.add_(5.0)
    assert not torch.allclose(target()[done == 0], before[done == 0])


def test_target_ensemble_follows_by_polyak_averaging():
    buf = linear_buffer(episodes=4)
    model = LatentWorldModel(2, 1, TINY, [-1], [1], seed=0)
    learner = LatentLearner(model, LatentTrainConfig(batch_size=16, tau=0.25), discount=0.9, seed=0)
    old_target = {k: v.clone() for k, v in model.target_qs.state_dict().items()}
    learner.update(*sample_batch(buf, model, 16, 3, np.random.default_rng(0)))
    online = model.qs.state_dict()
    for k, v in model.target_qs.state_dict().items():
        assert torch.allclose(v, 0.75 * old_target[k] + 0.25 * online[k], atol=1e-6), k


def test_simnorm_groups_are_simplices():
    z = SimNorm(4, 16)(torch.randn(3, 5, 16) * 10)
    groups = z.reshape(3, 5, 4, 4)
    assert torch.all(groups >= 0) and torch.allclose(groups.sum(-1), torch.ones(3, 5, 4))
    model = LatentWorldModel(3, 2, TINY, [-1, -1], [1, 1], seed=0)
    latent = model.next(model.encode(torch.randn(4, 3) * 100), torch.ones(4, 2))
    assert torch.allclose(latent.reshape(4, -1, TINY.simnorm_dim).sum(-1), torch.ones(4, 2))


def test_two_hot_round_trip():
    bins = torch.linspace(-10, 10, 101)
    x = torch.tensor([-500.0, -3.0, -0.2, 0.0, 0.7, 42.0, 20000.0])
    soft = two_hot(x, -10.0, 10.0, 101)
    assert torch.allclose(soft.sum(-1), torch.ones(7))
    back = two_hot_inv(torch.log(soft + 1e-30), bins)
    assert torch.allclose(back, x, rtol=1e-3, atol=1e-3)


def test_discount_heuristic_and_config_checks():
    assert tdmpc2_discount(500) == pytest.approx(0.99)
    assert tdmpc2_discount(10) == 0.95 and tdmpc2_discount(100_000) == 0.995
    with pytest.raises(ConfigError, match="latent_dim = 20 is not a multiple of simnorm_dim = 8: use 16"):
        LatentModelConfig(latent_dim=20)
    with pytest.raises(ConfigError, match="activation = 'gelu' is not allowed"):
        LatentModelConfig(activation="gelu")


def test_checkpoint_round_trip(tmp_path):
    buf = linear_buffer(episodes=4)
    model = LatentWorldModel(2, 1, TINY.replace(episodic=True), [-2], [2], seed=0)
    learner = LatentLearner(model, LatentTrainConfig(batch_size=16), discount=0.9, seed=0)
    learner.update(*sample_batch(buf, model, 16, 3, np.random.default_rng(0)))
    path = save_latent(model, tmp_path / "latent.pt", learner, extra={"agent_steps": 7})
    again, learner2, extra = load_latent_learner(path, LatentTrainConfig(batch_size=16))
    assert extra["agent_steps"] == 7 and learner2.updates == 1 and learner2.discount == 0.9
    for (k, v), v2 in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(v, v2), k
    assert load_latent(path).termination_head is not None
