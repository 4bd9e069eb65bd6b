"""Model analysis (models.analysis): known answers for the k-step errors, the baselines,
the calibration statistics and the suggested horizon."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from rtmpc.models.analysis import (
    FunctionPredictor,
    Prediction,
    SimPredictor,
    Trajectory,
    Windows,
    analyze,
    collect_trajectory,
    linear_drift_horizon,
    make_windows,
    predict_windows,
    rankdata,
    read_suggested_horizon,
    reliability_curve,
    spearman,
    supported_horizon,
    to_json,
)
from rtmpc.models.base import ModelError
from rtmpc.models.pets.predictor import PETSPredictor
from rtmpc.models.tdmpc.predictor import LatentPredictor

# -- a linear toy system: x' = x + 0.1 u, reward c . x' (known answers) --------------------
B = np.array([[0.1, 0.0], [0.0, 0.1], [0.05, -0.05]])  # (O=3, A=2)
C = np.array([1.0, -0.5, 2.0])


def toy_step(x: np.ndarray, u: np.ndarray, bias: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    nxt = x + u @ B.T + bias
    return nxt, nxt @ C


def toy_trajectories(n: int = 3, steps: int = 30, seed: int = 0) -> list[Trajectory]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = [rng.normal(size=3)]
        acts = rng.uniform(-1, 1, (steps, 2))
        rews = []
        for u in acts:
            nxt, r = toy_step(x[-1][None], u[None])
            x.append(nxt[0])
            rews.append(r[0])
        out.append(Trajectory(np.asarray(x), acts, np.asarray(rews), source="random"))
    return out


def test_windows_cut_every_start_from_two():
    trs = toy_trajectories(n=2, steps=10)
    w = make_windows(trs, horizon=4)
    assert w.n == 2 * (10 - 4 - 1) and w.actions.shape == (w.n, 4, 2) and w.true_obs.shape == (w.n, 4, 3)
    np.testing.assert_array_equal(w.obs0[0], trs[0].obs[2])
    np.testing.assert_array_equal(w.true_obs[0], trs[0].obs[3:7])
    np.testing.assert_array_equal(w.prev_reward[0], trs[0].reward[[1, 0]])
    with pytest.raises(ModelError, match="no window of 20 steps"):
        make_windows(trs, horizon=20)


def test_an_exact_model_has_zero_error_at_every_k():
    w = make_windows(toy_trajectories(), horizon=8)
    rep = analyze(FunctionPredictor(toy_step, 3, 2), w, gamma=0.9)
    assert max(rep["state_error_by_k"]) < 1e-12 and max(rep["return_error_by_k"]) < 1e-12
    assert rep["suggested_horizon"] == 8
    # The baselines are not exact: the model beats them.
    assert min(rep["state_error_last_state_by_k"]) > 0.01


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_a_constant_bias_grows_as_predicted(gamma):
    """x_hat = x + b every step: after k steps the state is off by k b (linear growth), the
    reward of step k by c.b k, the k-step return by |c.b| sum_{j=1..k} gamma^(j-1) j."""
    b = np.array([0.2, -0.1, 0.05])
    h = 10
    w = make_windows(toy_trajectories(), horizon=h)
    scale = np.array([1.0, 2.0, 0.5])
    rep = analyze(FunctionPredictor(lambda x, u: toy_step(x, u, b), 3, 2), w, gamma=gamma, scale=scale,
                  fraction=0.5)
    k = np.arange(1, h + 1)
    np.testing.assert_allclose(rep["state_error_by_k"], k * np.sqrt(np.mean((b / scale) ** 2)), rtol=1e-9)
    np.testing.assert_allclose(rep["state_error_by_k"], rep["state_error_linear_by_k"], rtol=1e-9)
    np.testing.assert_allclose(rep["state_rmse_by_dim"], np.abs(b)[:, None] * k, rtol=1e-9)
    cb = abs(C @ b)
    np.testing.assert_allclose(rep["reward_error_by_k"], cb * k, rtol=1e-9)
    expected_ret = cb * np.cumsum(gamma ** (k - 1) * k)
    np.testing.assert_allclose(rep["return_error_by_k"], expected_ret, rtol=1e-9)
    # The horizon is where that known curve crosses half the spread of the true return.
    spread = np.asarray(rep["return_spread_by_k"])
    assert rep["suggested_horizon"] == supported_horizon(expected_ret, spread, 0.5)
    assert 0 < rep["suggested_horizon"] < h
    # A bias makes exactly the linear drift the MBPO-style rule assumes (gamma = 1).
    if gamma == 1.0:
        assert rep["mbpo_k_star"] == rep["suggested_horizon"]


def test_baselines_on_a_constant_velocity_system():
    """x' = x + v: the constant-velocity baseline is exact, the last-state one is k |v| off."""
    v = np.array([0.3, -0.1])
    obs = np.cumsum(np.tile(v, (21, 1)), axis=0)
    tr = Trajectory(obs, np.zeros((20, 1)), np.zeros(20))
    rep = analyze(FunctionPredictor(lambda x, u: (x + v, np.zeros(len(x))), 2, 1), make_windows([tr], 5),
                  scale=np.ones(2))
    k = np.arange(1, 6)
    np.testing.assert_allclose(rep["state_error_const_velocity_by_k"], 0.0, atol=1e-12)
    np.testing.assert_allclose(rep["state_error_last_state_by_k"], k * np.sqrt(np.mean(v**2)), rtol=1e-9)


def test_the_true_simulator_as_a_model_is_exact():
    """Rolled from saved physics states, the simulator reproduces its own episodes."""
    from rtmpc import sim
    env = sim.make("cartpole-swingup", seed=0, action_repeat=4, episode_steps=25)
    rng = np.random.default_rng(0)
    trs = [collect_trajectory(env, lambda o: rng.uniform(-1, 1, 1), seed=s, source="random") for s in range(2)]
    w = make_windows(trs, horizon=6, stride=2)
    rep = analyze(SimPredictor(sim.make("cartpole-swingup", seed=7, action_repeat=4)), w)
    assert max(rep["state_error_by_k"]) < 1e-9 and max(rep["return_error_by_k"]) < 1e-9
    assert rep["suggested_horizon"] == 6
    assert math.isnan(rep["disagreement_error_spearman"])  # no disagreement at all: undefined, not 0
    with pytest.raises(ModelError, match="physics states"):
        SimPredictor(env).begin(w.obs0)


# -- calibration statistics -------------------------------------------------------------
def test_rankdata_averages_ties():
    np.testing.assert_array_equal(rankdata([10, 20, 20, 5, 20]), [2, 4, 4, 1, 4])
    np.testing.assert_array_equal(rankdata([3.0, 1.0, 2.0]), [3, 1, 2])


def test_spearman_recovers_a_known_correlation():
    """Bivariate normal with Pearson rho: Spearman's rho_s = 6/pi asin(rho/2) (Pearson 1907);
    invariant to monotone transforms; sign-correct; NaN when undefined."""
    rng = np.random.default_rng(0)
    for rho in (0.3, 0.8, -0.6):
        z = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=20_000)
        expected = 6 / np.pi * np.arcsin(rho / 2)
        assert spearman(z[:, 0], z[:, 1]) == pytest.approx(expected, abs=0.015)
        assert spearman(np.exp(z[:, 0]), z[:, 1] ** 3) == pytest.approx(spearman(z[:, 0], z[:, 1]), abs=1e-12)
    assert spearman(np.arange(10), np.arange(10) ** 2) == pytest.approx(1.0)
    assert math.isnan(spearman(np.ones(10), np.arange(10)))
    assert math.isnan(spearman([1.0, 2.0], [1.0, 2.0]))


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 5, 300), rng.integers(0, 7, 300) + rng.integers(0, 5, 300)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_reliability_curve_sits_on_the_diagonal_when_calibrated():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.1, 2.0, 50_000)
    calibrated = np.abs(sigma * rng.standard_normal(sigma.size))
    curve = reliability_curve(sigma, calibrated, bins=8)
    assert sum(curve["count"]) == sigma.size and len(curve["count"]) == 8
    np.testing.assert_allclose(curve["err_rms"], curve["pred_rms"], rtol=0.06)
    over = reliability_curve(sigma, 2 * calibrated, bins=8)  # over-confident by a factor of 2
    np.testing.assert_allclose(np.divide(over["err_rms"], over["pred_rms"]), 2.0, rtol=0.06)


def test_supported_horizon_edges():
    spread = np.ones(5)
    assert supported_horizon(np.zeros(5), spread, 0.5) == 5
    assert supported_horizon(np.full(5, 0.6), spread, 0.5) == 0
    assert supported_horizon(np.array([0.1, 0.2, 0.6, 0.1, 0.1]), spread, 0.5) == 2  # first crossing counts
    assert supported_horizon(np.array([0.1, np.nan, 0.1]), np.ones(3), 0.5) == 1  # a NaN error is a failure
    # Linear drift: err_k = e1 k (k+1) / 2 = 0.1, 0.3, 0.6, ...
    assert linear_drift_horizon(0.1, np.ones(6), 0.5) == 2


# -- the PETS predictor over ONNX -----------------------------------------------------------
def test_pets_predictor_mean_and_compounding_disagreement(tmp_path):
    """Member e moves the state by DELTAS[e] whatever the input: with each member on its own
    trajectory the mean moves by k mean(DELTAS) and the spread is k std(DELTAS); fed the
    mean (expectation) the spread stays one step's."""
    torch = pytest.importorskip("torch")
    from pets_toys import constant_ensemble
    from rtmpc.models.common.ensemble_export import export_onnx

    torch.set_num_threads(1)
    deltas = np.array([[-1.0, 0.5], [0.0, 0.5], [1.0, 0.5], [2.0, 0.5], [3.0, 0.5]])
    rewards = np.arange(5.0)
    path = export_onnx(constant_ensemble(deltas, rewards), tmp_path / "model.onnx", action_low=[-1.0],
                       action_high=[1.0], gamma=0.9)
    obs0 = np.array([[0.25, -1.0], [1.0, 2.0]])
    acts = np.zeros((2, 4, 1))
    w = Windows(obs0, obs0, acts, np.zeros((2, 4, 2)), np.zeros((2, 4)), np.zeros((2, 2)), None, np.array(["", ""]))
    k = np.arange(1, 5)[None, :, None]
    for propagation, spread_k in (("members", k), ("expectation", np.ones_like(k))):
        pred = PETSPredictor(path, propagation=propagation)
        assert pred.gamma == pytest.approx(0.9)
        out = predict_windows(pred, w)
        np.testing.assert_allclose(out.obs, obs0[:, None, :] + k * deltas.mean(0), atol=1e-5)
        np.testing.assert_allclose(out.obs_spread, np.broadcast_to(spread_k * deltas.std(0), (2, 4, 2)), atol=1e-5)
        np.testing.assert_allclose(out.reward, 2.0, atol=1e-5)
        np.testing.assert_allclose(out.reward_spread, rewards.std(), atol=1e-5)
        np.testing.assert_allclose(out.obs_var, out.obs_spread**2, atol=1e-4)  # the toy's noise is ~0
    with pytest.raises(ModelError, match="propagation"):
        PETSPredictor(path, propagation="TS1")


def test_report_json_is_strict_and_tune_can_read_the_horizon(tmp_path):
    w = make_windows(toy_trajectories(n=1), horizon=3)
    rep = analyze(FunctionPredictor(toy_step, 3, 2), w)
    text = to_json({**rep, "nan": float("nan")})
    assert json.loads(text)["nan"] is None
    assert read_suggested_horizon(tmp_path) is None
    (tmp_path / "analysis.json").write_text(text)
    assert read_suggested_horizon(tmp_path) == 3


class _ValuePredictor(FunctionPredictor):
    """The exact toy, with a value head that overestimates the return-to-go by 1 + k/10."""

    def __init__(self, to_go_fn):
        super().__init__(toy_step, 3, 2)
        self.to_go_fn, self.k = to_go_fn, 0

    def begin(self, obs0, states0=None):
        super().begin(obs0)
        self.row, self.k = np.arange(len(obs0)), 0

    def step(self, act):
        pred = super().step(act)
        self.k += 1
        return Prediction(reward=pred.reward, obs=pred.obs, value=self.to_go_fn(self.row, self.k) + 1 + self.k / 10)


def test_value_error_against_the_true_return_to_go():
    trs = [dataclasses.replace(t, terminated=True) for t in toy_trajectories(n=1, steps=12)]
    w = make_windows(trs, horizon=3, gamma=0.8)
    assert w.value_ok.all()  # a terminated episode: nothing was cut off
    r = trs[0].reward
    to_go = np.array([sum(0.8**j * r[i + j] for j in range(len(r) - i)) for i in range(len(r) + 1)])
    np.testing.assert_allclose(w.true_value[0], to_go[3:6])  # window 0 starts at t = 2
    rep = analyze(_ValuePredictor(lambda row, k: w.true_value[row, k - 1]), w, gamma=0.8)
    np.testing.assert_allclose(rep["value_error_by_k"], [1.1, 1.2, 1.3])
    assert "value_error_by_k" not in analyze(FunctionPredictor(toy_step, 3, 2), make_windows(trs, 3))


def test_the_horizon_is_the_smallest_over_sources():
    trs = toy_trajectories(n=2, seed=0) + [Trajectory(t.obs * 0.1, t.act, t.reward * 0.1, source="quiet")
                                           for t in toy_trajectories(n=2, seed=1)]
    b = np.array([0.2, -0.1, 0.05])
    rep = analyze(FunctionPredictor(lambda x, u: toy_step(x, u, b), 3, 2), make_windows(trs, 10))
    by = rep["by_source"]
    assert set(by) == {"random", "quiet"} and by["quiet"]["suggested_horizon"] < by["random"]["suggested_horizon"]
    assert rep["suggested_horizon"] == by["quiet"]["suggested_horizon"]
    assert rep["suggested_horizon_pooled"] >= rep["suggested_horizon"]


def test_value_targets_cut_short_by_a_time_limit_are_left_out():
    trs = toy_trajectories(n=1, steps=40)
    w = make_windows(trs, horizon=3, gamma=0.8)  # 0.8^k <= 0.05 from k = 14 on
    t = np.arange(2, 40 - 3 + 1)
    np.testing.assert_array_equal(w.value_ok, 0.8 ** (40 - t - 3) <= 0.05)
    assert not make_windows(trs, 3, gamma=0.8, value_sources=("controller",)).value_ok.any()


# -- the latent predictor over ONNX ---------------------------------------------------------
def test_latent_predictor_scores_as_the_planner_does(tmp_path):
    """A latent model's file gives only whole-sequence scores: step k must equal the
    runtime's deterministic score of the first k actions, and the report is built on it."""
    torch = pytest.importorskip("torch")
    from rtmpc.models.runtime import load_model
    from rtmpc.models.tdmpc.config import LatentModelConfig
    from rtmpc.models.tdmpc.export import export_latent
    from rtmpc.models.tdmpc.model import LatentWorldModel

    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = LatentModelConfig(latent_dim=16, hidden=32, enc_hidden=32, num_q=3, num_bins=21)
    model = LatentWorldModel(3, 2, cfg, np.array([-1.0, -1.0]), np.array([1.0, 1.0]), seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    path = export_latent(model.eval(), tmp_path / "model.onnx", gamma=0.8)
    trs = [dataclasses.replace(t, terminated=True) for t in toy_trajectories(n=2, steps=12)]
    w = make_windows(trs, horizon=4, gamma=0.8)
    pred = LatentPredictor(path)
    assert pred.gamma == pytest.approx(0.8)
    out = predict_windows(pred, w)
    assert out.reward is None and out.obs is None and out.score.shape == (w.n, 4)
    runtime = load_model(path, stochastic=False)
    for k in (1, 4):
        expected = [runtime.rollout(w.obs0[i], w.actions[i:i + 1, :k].astype(np.float32))[0] for i in (0, 5)]
        np.testing.assert_allclose(out.score[[0, 5], k - 1], expected, rtol=1e-5, atol=1e-5)
    rep = analyze(pred, w, gamma=0.8, rollouts=out)
    assert len(rep["score_error_by_k"]) == 4 and 0 <= rep["suggested_horizon"] <= 4
    assert "state_error_by_k" not in rep and "return_error_by_k" not in rep and "mbpo_k_star" not in rep
    with pytest.raises(ModelError, match="fair value target"):
        analyze(pred, make_windows(toy_trajectories(n=1, steps=12), 4, gamma=0.8), gamma=0.8)
    with pytest.raises(ModelError, match="PETS"):
        LatentPredictor(path, propagation="members")
