"""Deep Dyna-Q (models/dynaq/deep.py): the model's termination head on CartPole, double-DQN targets
in closed form, imagined rollouts against a scripted model, the exact state round trip, the
exported greedy policy, and config errors. One torch thread; the whole file runs in seconds."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from rtmpc.configs import ConfigError
from rtmpc.models.dynaq.deep import (
    DeepDynaQ,
    DeepDynaQConfig,
    DynamicsEnsemble,
    GreedyQPolicy,
    balanced_accuracy,
    double_dqn_targets,
    export_q_policy,
)

from rtmpc import sim

TASK = "gym:CartPole-v1"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _random_transitions(n: int, seed: int) -> dict[str, np.ndarray]:
    """n transitions of uniformly random actions in CartPole (episodes restart as they end)."""
    env = sim.make(TASK)
    rng = np.random.default_rng(seed)
    keys = ("obs", "act", "reward", "next_obs", "terminated")
    out: dict[str, list] = {k: [] for k in keys}
    obs, _ = env.reset(seed=seed)
    while len(out["obs"]) < n:
        a = int(rng.integers(2))
        nxt, r, term, trunc, _ = env.step(np.array([float(a)]))
        for k, v in zip(keys, (obs, [a], r, nxt, term)):
            out[k].append(v)
        obs = env.reset()[0] if term or trunc else nxt
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


# --- the learned model ------------------------------------------------------------------------

def test_termination_head_predicts_cartpole_limits_on_held_out_data():
    """Random-policy CartPole: 3,000 transitions to train on (~4.5 % terminal: the pole passes 12
    degrees, rarely the cart 2.4 m), 3,000 held out from other episodes (143 terminal). After 250
    model updates of the default model (5 members, 3 x 200 units, done_pos_weight 3), the members'
    mean termination probability > 0.5 has a balanced accuracy >= 0.95 on the held-out transitions
    (measured 0.989 / 0.993 / 0.990 for seeds 0 / 1 / 2; a 3 x 64-unit model gets only ~0.90); the
    Δobs prediction has a normalised held-out MSE < 0.02 (measured 0.003) and the reward (always 1)
    is within 0.1 everywhere (measured <= 0.025)."""
    cfg = DeepDynaQConfig()
    agent = DeepDynaQ(4, 2, cfg)
    agent.real.add_batch(**_random_transitions(3000, seed=0), episode=0)
    agent.train_model(updates=250)
    held = _random_transitions(3000, seed=1)
    truth = held["terminated"] > 0.5
    assert 60 <= truth.sum() <= 250
    with torch.no_grad():
        delta, reward, logit = agent.model.predict(torch.from_numpy(held["obs"]),
                                                   torch.from_numpy(held["act"][:, 0].astype(np.int64)))
    pred = torch.sigmoid(logit).mean(0).numpy() > 0.5
    bacc = balanced_accuracy(pred, truth)
    assert bacc >= 0.95, f"balanced accuracy {bacc:.3f}"
    err = ((delta.mean(0).numpy() - (held["next_obs"] - held["obs"])) / agent.model.delta_std.numpy()) ** 2
    assert err.mean() < 0.02
    np.testing.assert_allclose(reward.mean(0).numpy(), 1.0, atol=0.1)  # CartPole pays 1 every step


def test_balanced_accuracy():
    truth = np.array([1, 1, 0, 0, 0, 0], bool)
    assert balanced_accuracy(np.array([1, 0, 0, 0, 0, 1], bool), truth) == pytest.approx(0.5 * (0.5 + 0.75))
    assert np.isnan(balanced_accuracy(truth, np.zeros(6, bool)))


# --- double DQN -------------------------------------------------------------------------------

def _table(values: np.ndarray) -> torch.nn.Linear:
    """Q(s, a) = values[s, a] for one-hot states s: a bias-free linear layer."""
    lin = torch.nn.Linear(values.shape[0], values.shape[1], bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(values.T, dtype=torch.float32))
    return lin


def test_double_dqn_targets_in_closed_form():
    """Three next states, two actions. The online net picks the action, the target net values it:
    state 0 online argmax 1 -> target Q 5; state 1 online argmax 0 -> target Q -1 (vanilla DQN
    would take max = 4); state 2 terminal -> reward only."""
    online = _table(np.array([[0.0, 1.0], [2.0, 1.0], [7.0, 9.0]]))
    target = _table(np.array([[3.0, 5.0], [-1.0, 4.0], [100.0, 100.0]]))
    next_obs = torch.eye(3)
    reward = torch.tensor([1.0, 0.5, 2.0])
    terminated = torch.tensor([0.0, 0.0, 1.0])
    y = double_dqn_targets(online, target, reward, next_obs, terminated, gamma=0.9)
    np.testing.assert_allclose(y.numpy(), [1.0 + 0.9 * 5.0, 0.5 + 0.9 * -1.0, 2.0], rtol=0, atol=1e-6)


def test_q_update_is_one_huber_step_and_polyak_target():
    """agent.q_update with tables for Q and its target and plain SGD: the loss is the Huber loss of
    Q(s, a) - y (one error below 1, one above), the step moves each Q(s, a) by -lr * dLoss/dQ,
    and the target net moves tau of the way to the new online net."""
    cfg = DeepDynaQConfig(planning_ratio=0.0, gamma=0.9, target_tau=0.25, target_period=1, grad_clip=0.0)
    agent = DeepDynaQ(3, 2, cfg)
    q_vals = np.array([[0.0, 1.0], [2.0, 1.0], [7.0, 9.0]])
    t_vals = np.array([[3.0, 5.0], [-1.0, 4.0], [100.0, 100.0]])
    agent.q, agent.q_target = _table(q_vals), _table(t_vals)
    agent.q_opt = torch.optim.SGD(agent.q.parameters(), lr=0.5)
    obs = torch.eye(3)[[0, 1]]
    act = torch.tensor([1, 0])
    batch = (obs, act, torch.tensor([1.0, 0.0]), torch.eye(3)[[1, 2]], torch.tensor([0.0, 1.0]))
    # targets: row 0 -> s' = 1: online argmax 0, target Q = -1: y = 1 + 0.9 * -1 = 0.1; row 1 terminal: y = 0
    y = np.array([0.1, 0.0])
    err = np.array([q_vals[0, 1], q_vals[1, 0]]) - y  # 0.9 (quadratic part), 2.0 (linear part)
    huber = np.where(np.abs(err) < 1, 0.5 * err**2, np.abs(err) - 0.5).mean()
    loss = agent.q_update(batch)
    assert loss == pytest.approx(huber, abs=1e-6)
    grad = np.clip(err, -1, 1) / 2  # d mean Huber / d Q(s, a)
    want = q_vals.copy()
    want[0, 1] -= 0.5 * grad[0]
    want[1, 0] -= 0.5 * grad[1]
    np.testing.assert_allclose(agent.q.weight.detach().numpy().T, want, atol=1e-6)
    np.testing.assert_allclose(agent.q_target.weight.detach().numpy().T, t_vals + 0.25 * (want - t_vals), atol=1e-5)


# --- imagined rollouts --------------------------------------------------------------------------

class _ScriptedModel(DynamicsEnsemble):
    """Three members that agree on the rest and disagree on entry 3 by ``obs[1]``: every step adds 1
    to x (entry 0) and to entry 1; the members' std of the next entry 3 is obs[1] (normaliser std 1),
    so disagreement grows by 1 a step; termination when the next x passes 2.5; reward 1 + x."""

    def __init__(self):
        super().__init__(4, 2, members=3, hidden=4, layers=1)

    def predict(self, obs, act):
        n = obs.shape[0]
        delta = torch.zeros(3, n, 4)
        delta[:, :, 0] = 1.0
        delta[:, :, 1] = 1.0
        delta[:, :, 3] = torch.tensor([-1.0, 0.0, 1.0])[:, None] * obs[:, 1]
        reward = (1.0 + obs[:, 0]).expand(3, n)
        logit = (10.0 * (obs[:, 0] + 1.0 - 2.5)).expand(3, n)
        return delta, reward, logit


def test_imagined_rollouts_stop_at_termination_and_drop_disagreement():
    """Starts at x = 0 with obs[1] = 0, 2 and 5; threshold 2.5, rollout length 6:
    obs[1] = 0: steps with disagreement 0, 1, 2 are kept, the third ends in x = 3 > 2.5: terminated,
    and the rollout stops there (3 transitions, not 6); obs[1] = 2: the first step (disagreement 2)
    is kept, the second (3) dropped and the rollout ended (1 transition); obs[1] = 5: nothing kept."""
    cfg = DeepDynaQConfig(rollout_length=6, disagreement_threshold=2.5, rollout_epsilon=0.0, imagined_size=1000)
    agent = DeepDynaQ(4, 2, cfg)
    agent.model = _ScriptedModel()
    for i, u in enumerate((0.0, 2.0, 5.0)):
        s = np.array([0.0, u, 0.0, 0.0])
        agent.real.add(s, np.array([0.0]), 1.0, s, False, i)
    counts = agent.imagine(300)
    im, n = agent.imagined, len(agent.imagined)
    u0 = im.obs[:n, 1] - im.obs[:n, 0]  # obs[1] - x stays the start's obs[1] along a rollout
    from_zero, from_two = np.isclose(u0, 0.0), np.isclose(u0, 2.0)
    assert np.all(from_zero | from_two)  # nothing kept from obs[1] = 5
    terms = im.terminated[:n] > 0.5
    # obs[1] = 0: x = 0, 1, 2 -> 1, 2, 3; only the step to 3 terminated; rewards 1 + x
    assert sorted(set(im.obs[:n][from_zero, 0].tolist())) == [0.0, 1.0, 2.0]
    np.testing.assert_array_equal(terms, im.next_obs[:n, 0] > 2.5)
    assert not np.any(im.obs[:n, 0] > 2.5)  # nothing continues past a predicted termination
    np.testing.assert_allclose(im.reward[:n], 1.0 + im.obs[:n, 0])
    # obs[1] = 2: the first step only, never terminated
    assert np.all(im.obs[:n][from_two, 0] == 0.0) and not terms[from_two].any()
    assert np.all(np.abs(im.next_obs[:n, 3] - im.obs[:n, 3]) <= 2.0)  # no kept step with members further apart
    # the counts: n0, n2, n5 rollouts from each start make 3, 2 and 1 transitions, keep 3, 1 and 0
    n0, n2 = int(from_zero.sum()) // 3, int(from_two.sum())
    n5 = 300 - n0 - n2
    assert from_zero.sum() == 3 * n0 and min(n0, n2, n5) > 50
    assert counts == {"made": 3 * n0 + 2 * n2 + n5, "kept": n, "dropped": n2 + n5, "terminated": n0}
    assert terms.sum() == n0


# --- the state round trip -----------------------------------------------------------------------

SMALL = DeepDynaQConfig(q_hidden=(32, 32), batch_size=32, learning_starts=60, eps_decay_steps=200,
                        model_members=3, model_hidden=32, model_layers=2, model_batch_size=32,
                        model_train_every=50, model_updates=5, rollout_length=2, rollouts_per_step=2,
                        rollout_every=10, imagined_size=300, q_updates=2, target_period=3, seed=3)


def _assert_same(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


def test_state_round_trip_continues_bit_identically():
    """Run 150+ steps (Q, model and planning all active) up to an episode's end, save the state through
    torch.save / torch.load(weights_only=True), load it into an agent built with another seed, then
    step both 150 more steps in fresh envs: every tensor, buffer row, counter and the generator agree
    exactly. A second round trip mid-episode restores the current episode as well."""
    a = DeepDynaQ(4, 2, SMALL)
    env_a = sim.make(TASK)
    while a.env_steps < 150 or a.obs is not None:
        a.env_step(env_a)
    assert a.model_rounds >= 2 and len(a.imagined) > 0 and a.q_updates_done > 100
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    b = DeepDynaQ(4, 2, SMALL.replace(seed=99))
    b.load_state_dict(saved)
    _assert_same(a.state_dict()["q"], b.state_dict()["q"])
    env_b = sim.make(TASK)
    for _ in range(150):
        a.env_step(env_a)
        b.env_step(env_b)
    sa, sb = a.state_dict(), b.state_dict()
    for s in (sa, sb):
        s["cfg"].pop("seed")
        s["stats"] = {k: v for k, v in s["stats"].items() if not k.endswith("_s")}  # timings
    _assert_same(sa, sb)
    assert a.env_steps == 150 + saved["counters"]["env_steps"]
    # the returned state is a copy: training on changes the agent, not the state taken before
    before = a.state_dict()
    kept = before["q"]["net.0.weight"].clone()
    a.env_step(env_a)
    while a.obs is None:
        a.env_step(env_a)
    assert torch.equal(before["q"]["net.0.weight"], kept)
    assert not torch.equal(kept, a.q.net[0].weight.detach())
    # mid-episode: the current observation, return and length come along
    c = DeepDynaQ(4, 2, SMALL)
    c.load_state_dict(a.state_dict())
    assert np.array_equal(a.obs, c.obs) and c.episode_length == a.episode_length > 0
    assert c.episode_return == a.episode_return and c.rng.bit_generator.state == a.rng.bit_generator.state


def test_plain_dqn_has_no_model_and_samples_real_data_only():
    cfg = dataclasses.replace(SMALL, planning_ratio=0.0)
    agent = DeepDynaQ(4, 2, cfg)
    env = sim.make(TASK)
    for _ in range(100):
        agent.env_step(env)
    assert agent.model is None and len(agent.imagined) == 0 and agent.q_updates_done == 2 * 41
    assert agent.state_dict()["model"] is None


# --- the exported greedy policy ---------------------------------------------------------------------

def test_exported_policy_is_the_argmax_of_q(tmp_path):
    from rtmpc.models.common.policy import load_policy

    agent = DeepDynaQ(4, 2, SMALL)
    env = sim.make(TASK)
    for _ in range(80):  # some real transitions for the parity check and a few updates
        agent.env_step(env)
    with torch.no_grad():  # a net that splits the observations between the actions
        gen = torch.Generator().manual_seed(0)
        for name, p in agent.q.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5 if name.endswith("weight") else 0 * p)
    module = GreedyQPolicy(agent.q)
    out = module(torch.zeros(3, 4), torch.zeros(3, 1))
    assert out.shape == (3, 1) and out.dtype == torch.float32
    path = export_q_policy(agent, tmp_path / "policy.onnx", env.spec)
    policy = load_policy(path)
    assert (policy.dims.kind, policy.n_actions, policy.dims.obs_dim, policy.dims.act_dim) == ("dynaq", 2, 4, 1)
    assert policy.dims.meta["task"] == TASK
    obs = np.random.default_rng(0).normal(size=(2000, 4)) * np.array([1.0, 1.5, 0.2, 1.5])
    with torch.no_grad():
        q = agent.q(torch.tensor(obs, dtype=torch.float32)).numpy()
    want = q.argmax(1)
    got = np.array([policy.act(o, ())[0][0] for o in obs])
    clear = np.abs(q[:, 0] - q[:, 1]) > 1e-5  # a near-tie may round either way in float32
    assert clear.mean() > 0.99 and np.all(np.isin(got, [0.0, 1.0]))
    np.testing.assert_array_equal(got[clear], want[clear].astype(np.float64))
    assert np.mean(want == 0) > 0.05 and np.mean(want == 1) > 0.05  # both actions occur
    # the noise input is there but changes nothing
    noisy = load_policy(path, deterministic=False, rng=1)
    np.testing.assert_array_equal([noisy.act(o, ())[0][0] for o in obs[:200]], got[:200])


# --- config errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("planning_ratio", 1.5), ("rollout_length", 0), ("gamma", 1.0),
                                          ("target_tau", 0.0), ("disagreement_threshold", -1.0),
                                          ("model_members", 0), ("eval_episodes", 0), ("q_hidden", (64, 0)),
                                          ("eps_end", 0.9)])
def test_bad_config_names_the_field(field, value):
    kwargs = {field: value}
    if field == "eps_end":
        kwargs["eps_start"] = 0.5  # end above start
    with pytest.raises(ConfigError, match=field):
        DeepDynaQConfig(**kwargs)


def test_continuous_task_is_refused():
    from rtmpc.models.dynaq.deep import train_deep_dynaq

    with pytest.raises(ConfigError, match="discrete"):
        train_deep_dynaq(lambda: sim.make("gym:Pendulum-v1"), SMALL)
