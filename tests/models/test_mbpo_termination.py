"""MBPO's learned termination head (mbpo.termination: learned): what it learns, its ONNX file,
rollouts that stop where it says, and a terminating Gymnasium task trained end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rtmpc.configs.rundir import RunDir, read_csv
from rtmpc.models.base import ModelError
from rtmpc.models.common.buffer import ReplayBuffer
from rtmpc.models.common.commit import Manifest
from rtmpc.models.mbpo.config import TerminationConfig
from rtmpc.models.mbpo.known_termination import KNOWN, known_termination
from rtmpc.models.mbpo.rollout import ModelBuffer, TerminationStep, branched_rollouts
from rtmpc.models.mbpo.termination import TerminationHead, export_termination, fit_termination
from rtmpc.models.runtime import load_model, open_session


def _committed(run) -> tuple[ReplayBuffer, dict[str, np.ndarray]]:
    """The last commit's real buffer and model buffer of the run at ``run``."""
    commits = Manifest(RunDir(run))
    commits.read()
    with np.load(commits.file("model_buffer")) as z:
        return ReplayBuffer.load(commits.file("buffer")), {k: z[k] for k in z.files}


def _boundary_data(n=3000, seed=0):
    """Transitions that end where the state reached has x0 > 1.5 (about 7% of them)."""
    g = np.random.default_rng(seed)
    obs = g.standard_normal((n, 3)).astype(np.float32)
    act = g.uniform(-1, 1, (n, 2)).astype(np.float32)
    nxt = (obs + 0.1 * np.pad(act, ((0, 0), (0, 1)))).astype(np.float32)
    return obs, act, nxt, nxt[:, 0] > 1.5


@pytest.mark.parametrize("inputs", ["next", "all"])
def test_the_head_learns_a_terminal_boundary_and_its_onnx_file_decides_the_same(tmp_path, inputs):
    torch.manual_seed(0)
    obs, act, nxt, done = _boundary_data()
    cfg = TerminationConfig(hidden=(64, 64), updates=600, inputs=inputs)
    head = TerminationHead(3, 2, cfg, seed=0)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr)
    got = fit_termination(head, opt, obs, act, nxt, done, cfg, np.random.default_rng(0))
    # held out: every fifth row (about 40 terminal and 560 other rows)
    assert got["term_recall"] >= 0.9 and got["term_fpr"] <= 0.05, got
    path = tmp_path / "termination.onnx"
    err = export_termination(head, path, check_obs=obs[:64], check_act=act[:64], check_next=nxt[:64])
    assert err < 1e-3
    step = TerminationStep(open_session(path, 1), cfg.threshold, str(path))
    with torch.no_grad():
        ref = torch.sigmoid(head(*map(torch.from_numpy, (obs, act, nxt)))).numpy() > cfg.threshold
    near = np.abs(torch.sigmoid(head(*map(torch.from_numpy, (obs, act, nxt)))).detach().numpy() - 0.5) < 1e-4
    assert np.array_equal(step.done(obs, act, nxt)[~near], ref[~near])
    assert step.calls == len(obs) and step.ended == int(step.done(obs, act, nxt).sum())


def test_nothing_is_fitted_before_min_terminal_terminations():
    obs, act, nxt, _ = _boundary_data(200)
    cfg = TerminationConfig(updates=5, min_terminal=3)
    head = TerminationHead(3, 2, cfg)
    before = [p.detach().clone() for p in head.parameters()]
    done = np.zeros(200, bool)
    done[[1, 2]] = True  # two terminal training rows (row 0 is held out)
    out = fit_termination(head, torch.optim.Adam(head.parameters()), obs, act, nxt, done, cfg,
                          np.random.default_rng(0))
    assert out == {"term_rows": 2.0} and not bool(head.fitted)
    assert all(torch.equal(a, b) for a, b in zip(before, head.parameters(), strict=True))
    done[3] = True
    fit_termination(head, torch.optim.Adam(head.parameters()), obs, act, nxt, done, cfg, np.random.default_rng(0))
    assert bool(head.fitted)


class _Shift:
    """A stand-in for EnsembleStep: next state = state + 1, reward 1."""

    def step(self, obs, act):
        return obs + 1.0, np.ones(len(obs), np.float32)


class _EndsAbove:
    """A stand-in for TerminationStep: terminal where the state reached has x0 > limit."""

    def __init__(self, limit):
        self.limit = limit

    def done(self, obs, act, next_obs):
        return next_obs[:, 0] > self.limit


def test_rollouts_stop_where_the_head_says_done():
    starts = np.array([[0.0], [1.0], [2.0], [5.0]], np.float32)
    buf = ModelBuffer(1, 1, 100)
    out = branched_rollouts(_Shift(), lambda o: np.zeros((len(o), 1), np.float32), starts, 4, buf, _EndsAbove(2.5))
    obs, _, _, next_obs, done = buf._ordered()
    # x0 = 2 and 5 end at the first step, 1 at the second, 0 at the third: 4 + 2 + 1 transitions
    assert out["transitions"] == 7 and out["terminal"] == 4 and len(buf) == 7
    assert obs[:, 0].tolist() == [0, 1, 2, 5, 1, 2, 2] and done.tolist() == [0, 0, 1, 1, 0, 1, 1]
    assert np.all((next_obs[:, 0] > 2.5) == (done == 1))
    free = ModelBuffer(1, 1, 100)
    assert branched_rollouts(_Shift(), lambda o: np.zeros((len(o), 1), np.float32), starts, 4, free)["terminal"] == 0
    assert len(free) == 16 and not free.done[:16].any()


HOPPER = ("task.name=gym:Hopper-v5", "task.action_repeat=1", "mbpo.total_steps=400", "mbpo.random_steps=150",
          "mbpo.learning_starts=150", "mbpo.model_train_every=100", "mbpo.rollout_every=50",
          "mbpo.rollout_batch=300", "mbpo.epoch_length=100",
          "mbpo.rollout_schedule=[1,3,1,3]", "mbpo.retain_steps=100", "mbpo.updates_per_step=1",
          "mbpo.eval_episodes=1", "mbpo.eval_every=4", "mbpo.threads=1", "mbpo.fit.epochs=3",
          "mbpo.model.hidden=32", "mbpo.sac.hidden=[32]", "mbpo.termination_model.updates=100",
          "mbpo.termination_model.hidden=[32]", "mbpo.termination_model.min_terminal=5", "mbpo.parity_samples=32")


def test_a_terminating_gymnasium_task_trains_with_the_learned_head_and_resumes_exactly(tmp_path):
    pytest.importorskip("gymnasium")
    from rtmpc.models.common.policy import load_policy
    from rtmpc.scripts.train import train_run

    torch.set_num_threads(1)
    overrides = [*HOPPER, "mbpo.termination=learned"]
    train_run("mbpo_cartpole", out=tmp_path / "a", overrides=overrides, seed=0)
    rows = read_csv(tmp_path / "a" / "metrics.csv")
    last = rows[-1]
    assert int(last["real_terminal"]) >= 5  # random Hopper actions fall within ~10-40 steps
    assert float(last["term_fpr"]) <= 0.2 and any(float(r["model_terminal_share"] or 0) > 0 for r in rows)
    session = open_session(tmp_path / "a" / "termination.onnx", 1)
    meta = dict(session.get_modelmeta().custom_metadata_map)
    assert meta["role"] == "termination" and meta["kind"] == "mbpo"
    # the exported head against Hopper's own test on the run's real transitions (19 terminal of 400
    # here: recall 1.0 at 21% false positives; all-terminal or a coin would fail one bound)
    real, _ = _committed(tmp_path / "a")
    truth = known_termination("gym:Hopper-v5").done(real.obs, real.act, real.next_obs)
    said = TerminationStep(session, 0.5).done(real.obs, real.act, real.next_obs)
    recall, fpr = (said & truth).sum() / truth.sum(), (said & ~truth).sum() / (~truth).sum()
    assert recall >= 0.9 and fpr <= 0.35, (recall, fpr)
    with pytest.raises(ModelError, match="not a policy file"):
        load_policy(tmp_path / "a" / "termination.onnx")
    with pytest.raises(ModelError, match="'termination' part of an rtmpc mbpo run.*use the run's model.onnx"):
        load_model(tmp_path / "a" / "termination.onnx")
    # stopped after 200 env steps, then resumed: the same run
    train_run("mbpo_cartpole", out=tmp_path / "b", overrides=overrides, seed=0, steps=200)
    train_run("mbpo_cartpole", out=tmp_path / "b", overrides=overrides, seed=0, resume=True)
    timing = lambda k: k.endswith("_s") or k == "seconds"  # noqa: E731
    strip = lambda rs: [{k: v for k, v in r.items() if not timing(k)} for r in rs]  # noqa: E731
    assert strip(read_csv(tmp_path / "b" / "metrics.csv")) == strip(rows)


def test_a_terminating_task_without_the_head_is_a_one_line_error(tmp_path):
    pytest.importorskip("gymnasium")
    from rtmpc.scripts.train import train_run

    with pytest.raises(ModelError, match="set mbpo.termination=known or learned"):
        train_run("mbpo_cartpole", out=tmp_path / "a", overrides=list(HOPPER), seed=0)
    with pytest.raises(ModelError, match="no known termination function.*set mbpo.termination=learned"):
        train_run("mbpo_cartpole", out=tmp_path / "b", overrides=[*HOPPER, "task.name=point-target",
                                                                   "mbpo.termination=known"], seed=0)


@pytest.mark.parametrize("task", sorted(KNOWN))
def test_each_known_termination_is_the_environments_own(task):
    # random-action episodes until 1,500 steps: the function on the state reached must say
    # what the environment's `terminated` says, at every step
    pytest.importorskip("gymnasium")
    from rtmpc import sim

    env, rng, fn = sim.make(task), np.random.default_rng(0), known_termination(task)
    steps = ends = 0
    while steps < 1500:
        obs, _ = env.reset(seed=int(rng.integers(1 << 30)))
        while True:
            a = rng.uniform(env.spec.action_low, env.spec.action_high).astype(np.float32)
            nxt, _, terminated, truncated, _ = env.step(a)
            assert fn.done(obs[None], a[None], nxt[None])[0] == terminated, (task, steps)
            steps, ends, obs = steps + 1, ends + int(terminated), nxt
            if terminated or truncated:
                break
    env.close()
    assert ends >= 5 and fn.ended == ends and fn.calls == steps


def test_a_run_with_the_known_termination_stores_model_terminals(tmp_path):
    pytest.importorskip("gymnasium")
    from rtmpc.scripts.train import train_run

    torch.set_num_threads(1)
    train_run("mbpo_cartpole", out=tmp_path / "a", overrides=[*HOPPER, "mbpo.termination=known"], seed=0)
    rows = read_csv(tmp_path / "a" / "metrics.csv")
    assert int(rows[-1]["real_terminal"]) >= 5 and "term_recall" not in rows[-1]
    assert any(float(r["model_terminal_share"] or 0) > 0 for r in rows)
    # every stored model transition is terminal exactly where Hopper's test says so of its s'
    _, model = _committed(tmp_path / "a")
    said = known_termination("gym:Hopper-v5").done(model["obs"], model["act"], model["next_obs"])
    assert model["done"].sum() >= 10 and np.array_equal(model["done"].astype(bool), said)
    assert not (tmp_path / "a" / "termination.onnx").exists()
