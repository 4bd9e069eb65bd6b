"""MBPO's parts on toy problems with known answers: SAC alone, the branched rollouts through the
ONNX ensemble and their schedule, the real/model mix, the actor's export, a seeded tiny run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rtmpc.configs import ConfigError
from rtmpc.configs.rundir import RunDir, read_csv
from rtmpc.models.mbpo.config import MBPOConfig, SACConfig
from rtmpc.models.mbpo.rollout import ModelBuffer, branched_rollouts
from rtmpc.models.mbpo.sac import SAC
from rtmpc.models.mbpo.train import MBPOAgent, export_actor
from rtmpc.sim.base import TaskSpec


def _spec(obs_dim=3, act_dim=2, low=(-1.0, -1.0), high=(1.0, 1.0)):
    return TaskSpec(name="toy", obs_dim=obs_dim, act_dim=act_dim, action_low=np.array(low, np.float32),
                    action_high=np.array(high, np.float32), control_period=0.1, action_repeat=1, episode_steps=10)


def _point_returns(sac: SAC, starts=(-1.0, -0.5, 0.5, 1.0), steps: int = 10) -> float:
    """Mean deterministic return on the 1-D point: x' = clip(x + 0.25 a, -2, 2), reward -x'^2."""
    total = 0.0
    for x0 in starts:
        x = x0
        for _ in range(steps):
            a = float(sac.act(np.array([[x]], np.float32), deterministic=True)[0, 0])
            x = float(np.clip(x + 0.25 * a, -2, 2))
            total -= x * x
    return total / len(starts)


@pytest.mark.parametrize("layer_norm, actor_every", [(False, 1), (True, 1), (True, 4)])
def test_sac_alone_moves_a_1d_point_to_its_target(layer_norm, actor_every):
    # Optimal mean return over the starts is -0.47 (x0 = 1: -0.875, 0.5: -0.0625); doing nothing
    # scores -6.25 and uniform random actions about -6.3. SAC must reach better than -1.5, with
    # plain critics, with RLPD's LayerNorm critics, and with the actor updated every 4th update.
    torch.manual_seed(0)
    cfg = SACConfig(hidden=(32, 32), lr=3e-3, gamma=0.9, batch_size=64, init_alpha=0.05,
                    critic_layer_norm=layer_norm, actor_every=actor_every)
    sac = SAC(1, 1, [-1.0], [1.0], cfg, seed=0)
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in sac.critic.modules()) == (4 if layer_norm else 0)
    rng = np.random.default_rng(0)
    before = _point_returns(sac)
    obs, act, rew, nxt = [], [], [], []
    x = rng.uniform(-1, 1)
    for t in range(1500):
        a = rng.uniform(-1, 1) if t < 200 else float(sac.act(np.array([[x]], np.float32))[0, 0])
        x2 = float(np.clip(x + 0.25 * a, -2, 2))
        obs.append([x]), act.append([a]), rew.append(-x2 * x2), nxt.append([x2])
        x = x2 if (t + 1) % 10 else rng.uniform(-1, 1)
        if t >= 200:
            i = rng.integers(0, len(obs), cfg.batch_size)
            sac.update(*(torch.tensor(np.asarray(v, np.float32)[i]) for v in (obs, act, rew, nxt)),
                       torch.zeros(cfg.batch_size))
    after = _point_returns(sac)
    assert before < -3.0 and after > -1.5, (before, after)
    assert (sac.updates, sac.actor_updates) == (1300, 1300 // actor_every)


def test_actor_every_updates_the_actor_and_temperature_only_on_every_nth_call():
    cfg = SACConfig(hidden=(8,), batch_size=16, actor_every=3)
    sac = SAC(2, 1, [-1.0], [1.0], cfg, seed=0)
    g = torch.Generator().manual_seed(0)
    batch = [torch.randn(16, 2, generator=g), torch.rand(16, 1, generator=g) * 2 - 1, torch.randn(16, generator=g),
             torch.randn(16, 2, generator=g), torch.zeros(16)]
    for call in range(1, 10):
        actor = [p.detach().clone() for p in sac.actor.parameters()]
        critic = [p.detach().clone() for p in sac.critic.parameters()]
        alpha = sac.alpha
        out = sac.update(*batch)
        moved = any(not torch.equal(a, b) for a, b in zip(actor, sac.actor.parameters(), strict=True))
        assert moved == (call % 3 == 0) and (sac.alpha != alpha) == (call % 3 == 0), call
        assert all(not torch.equal(a, b) for a, b in zip(critic, sac.critic.parameters(), strict=True))
        assert ("actor_loss" in out) == (call >= 3)
    assert (sac.updates, sac.actor_updates) == (9, 3)
    restored = SAC(2, 1, [-1.0], [1.0], cfg, seed=5)
    restored.load_state_dict(sac.state_dict())
    assert (restored.updates, restored.actor_updates) == (9, 3)


def _agent(tmp_path, **changes) -> MBPOAgent:
    cfg = MBPOConfig().replace(**{"rollout_batch": 40, "epoch_length": 10, "rollout_schedule": (1, 4, 1, 4),
                                  "rollout_every": 10, "retain_steps": 20, "threads": 1, **changes})
    cfg = cfg.replace(model=cfg.model.replace(members=3, hidden=16, layers=2), elites=2,
                      fit=cfg.fit.replace(epochs=2), sac=cfg.sac.replace(hidden=(16,), batch_size=200),
                      parity_samples=16)
    agent = MBPOAgent(_spec(), cfg, seed=0)
    rng = np.random.default_rng(1)
    for i in range(60):
        o = rng.standard_normal(3).astype(np.float32)
        a = rng.uniform(-1, 1, 2).astype(np.float32)
        agent.real.add(o, a, float(rng.standard_normal()), o + 0.1 * rng.standard_normal(3), False, i // 20)
    agent.fit_model(RunDir(tmp_path))
    return agent


@pytest.mark.parametrize("epoch, k", [(0, 1), (1, 1), (2, 2), (3, 3), (4, 4), (9, 4)])
def test_branched_rollouts_start_from_buffer_states_with_the_scheduled_length(tmp_path, epoch, k):
    agent = _agent(tmp_path)
    assert len(agent.elites) == 2 and (tmp_path / "ensemble.onnx").is_file()
    agent.agent_steps = epoch * agent.cfg.epoch_length
    actor = agent.sac.act
    agent.sac.act = lambda o, deterministic=False: np.tanh(o[:, :2] - o[:, 2:]).astype(np.float32)  # known policy
    agent.rollout()
    agent.sac.act = actor
    buf, n = agent.model_buf, agent.cfg.rollout_batch
    assert agent.k == k and len(buf) == n * k and buf.capacity == n * k * 2  # 2 rounds retained
    obs, act, _, next_obs, done = buf._ordered()
    real = {tuple(r) for r in agent.real.obs}
    assert all(tuple(r) in real for r in obs[:n])  # every rollout branches from a real state
    for t in range(1, k):  # and goes on from its own prediction
        np.testing.assert_array_equal(obs[t * n:(t + 1) * n], next_obs[(t - 1) * n:t * n])
    np.testing.assert_allclose(act, np.tanh(obs[:, :2] - obs[:, 2:]), rtol=0, atol=1e-6)  # the policy's actions
    assert agent.step_fn.transitions == n * k


class _NaNFor:
    """A stand-in for EnsembleStep: next state = state + 1, reward 1, but NaN for rows whose x0 is in ``bad``."""

    def __init__(self, bad):
        self.bad = bad

    def step(self, obs, act):
        nxt = obs + 1.0
        nxt[np.isin(obs[:, 0], self.bad)] = np.nan
        return nxt, np.ones(len(obs), np.float32)


def test_rollout_rows_with_non_finite_predictions_are_dropped_from_there_on():
    starts = np.array([[0.0], [10.0], [20.0], [30.0]], np.float32)
    buf = ModelBuffer(1, 1, 100)
    # the row from 10 diverges at its first step, the row from 20 at its second (from 21): 3 + 0 + 1 + 3 kept
    out = branched_rollouts(_NaNFor([10.0, 21.0]), lambda o: np.zeros((len(o), 1), np.float32), starts, 3, buf)
    assert (out["rollouts"], out["transitions"]) == (4, 7)
    stored = buf._ordered()
    assert np.isfinite(stored[3]).all() and np.isfinite(stored[2]).all()
    assert sorted(stored[0][:, 0].tolist()) == [0, 1, 2, 20, 30, 31, 32]


def test_the_model_buffer_keeps_the_newest_rows_when_resized():
    buf = ModelBuffer(1, 1, 5)
    for i in range(7):
        buf.add(*(np.full((1, 1), i, np.float32),) * 2, np.full(1, i, np.float32), np.full((1, 1), i, np.float32),
                np.zeros(1, np.float32))
    assert sorted(buf.reward.tolist()) == [2, 3, 4, 5, 6]
    buf.resize(3)
    assert buf._ordered()[2].tolist() == [4, 5, 6]


@pytest.mark.parametrize("ratio", [0.05, 0.5])
def test_the_real_model_ratio_holds_in_sampled_batches(tmp_path, ratio):
    agent = _agent(tmp_path, real_ratio=ratio)
    agent.real._reward[: len(agent.real)] = 1000.0  # real rows marked
    b = agent.cfg.sac.batch_size
    assert float((agent.batch()[2] == 1000.0).sum()) == b  # no model rows yet: all real
    agent.rollout()
    assert not np.any(agent.model_buf.reward[: len(agent.model_buf)] == 1000.0)
    counts = [int((agent.batch()[2] == 1000.0).sum()) for _ in range(5)]
    assert counts == [round(ratio * b)] * 5, counts


def test_actor_export_matches_pytorch_within_bounds(tmp_path):
    from rtmpc.models.common.policy import load_policy

    spec = _spec(obs_dim=4, act_dim=2, low=(-2.0, 0.0), high=(2.0, 1.0))
    sac = SAC(4, 2, spec.action_low, spec.action_high, SACConfig(hidden=(32, 32)), seed=3)
    obs = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32) * 3
    err = export_actor(sac.actor, tmp_path / "model.onnx", spec, check_obs=obs)
    assert err <= 1e-4
    policy = load_policy(tmp_path / "model.onnx")
    assert policy.dims.kind == "mbpo" and policy.state_shapes == []
    want = sac.act(obs, deterministic=True)
    got = np.stack([policy.act(o, ())[0] for o in obs])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.all(got >= spec.action_low) and np.all(got <= spec.action_high)
    assert np.ptp(got, axis=0).min() > 1e-3  # the actions depend on the observation


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="elites = 9"):
        MBPOConfig(elites=9)
    with pytest.raises(ConfigError, match="rollout_schedule"):
        MBPOConfig(rollout_schedule=(5, 2, 1, 3))
    assert [MBPOConfig(rollout_schedule=(20, 100, 1, 15)).rollout_length(e) for e in (0, 20, 60, 100, 500)] == \
        [1, 1, 8, 15, 15]


def _tiny_run(out, seed: int) -> tuple[list[dict], np.ndarray]:
    from rtmpc.models import registry
    from rtmpc.models.common.policy import load_policy
    from rtmpc.scripts.train import train_run

    torch.set_num_threads(1)
    train_run("mbpo_cartpole", out=out, overrides=list(registry.family("mbpo").SMOKE_OVERRIDES), seed=seed)
    timing = lambda k: k.endswith("_s") or k == "seconds"  # noqa: E731
    rows = [{k: v for k, v in r.items() if not timing(k)} for r in read_csv(out / "metrics.csv")]
    policy = load_policy(out / "model.onnx")
    obs = np.random.default_rng(0).standard_normal((8, policy.dims.obs_dim))
    return rows, np.stack([policy.act(o, ())[0] for o in obs])


def test_a_seeded_tiny_run_is_reproducible(tmp_path):
    rows_a, act_a = _tiny_run(tmp_path / "a", seed=0)
    rows_b, act_b = _tiny_run(tmp_path / "b", seed=0)
    rows_c, act_c = _tiny_run(tmp_path / "c", seed=1)
    assert rows_a == rows_b and np.array_equal(act_a, act_b)
    assert rows_a != rows_c and not np.array_equal(act_a, act_c)  # the seed matters
    header = set(read_csv(tmp_path / "a" / "metrics.csv")[0])
    assert {"eval_return", "rollout_length", "sac_updates_per_s", "model_transitions_per_s"} <= header


def test_one_onnx_step_is_each_rows_member_sample_of_the_pytorch_ensemble(tmp_path):
    from rtmpc.models.common.ensemble import select_members

    agent = _agent(tmp_path)
    step = agent.step_fn
    elite = select_members(agent.ensemble, agent.elites)
    n, e = 7, step.members  # 7 rows on 2 members: shares of 4, the last padded
    obs = np.random.default_rng(5).standard_normal((n, 3)).astype(np.float32)
    act = np.random.default_rng(6).uniform(-1, 1, (n, 2)).astype(np.float32)
    replay = np.random.default_rng(11)
    step.rng = np.random.default_rng(11)
    next_obs, reward = step.step(obs, act)
    order = replay.permutation(n)
    noise = replay.standard_normal((e, 4, 4), dtype=np.float32)
    with torch.no_grad():
        dm, dlv, rm, rlv = elite.predict(torch.from_numpy(obs).expand(e, n, 3), torch.from_numpy(act).expand(e, n, 2))
    for slot, row in enumerate(order):
        member, j = divmod(slot, 4)
        want = obs[row] + dm[member, row].numpy() + np.exp(0.5 * dlv[member, row].numpy()) * noise[member, j, :3]
        want_r = rm[member, row].item() + np.exp(0.5 * rlv[member, row].item()) * noise[member, j, 3]
        np.testing.assert_allclose(next_obs[row], want, rtol=1e-4, atol=1e-4)
        assert abs(reward[row] - want_r) < 1e-3


def test_int8_rollouts_run_on_the_quantised_copy_and_stay_near_float32(tmp_path):
    from rtmpc.models.mbpo.rollout import EnsembleStep
    from rtmpc.models.runtime import open_session

    agent = _agent(tmp_path, rollout_precision="int8")
    fp32, int8 = tmp_path / "ensemble.onnx", tmp_path / "ensemble.int8.onnx"
    assert int8.is_file()
    meta = agent.step_fn.session.get_modelmeta().custom_metadata_map
    assert meta["precision"] == "int8"  # the rollouts run on the int8 copy, not the export
    assert 0.0 < agent.last_fit["int8_rel_diff"] < 0.05, agent.last_fit
    obs = agent.real.obs[:40]
    act = np.random.default_rng(2).uniform(-1, 1, (40, 2)).astype(np.float32)
    got = {}
    for name, path in (("fp32", fp32), ("int8", int8)):  # same member draws and noise
        got[name] = EnsembleStep(open_session(path, 1), np.random.default_rng(3), str(path)).step(obs, act)
    spread = got["fp32"][0].std(axis=0)
    assert np.abs(got["int8"][0] - got["fp32"][0]).max() < 0.1 * spread.max()
    assert not np.array_equal(got["int8"][0], got["fp32"][0])  # a different file really ran
