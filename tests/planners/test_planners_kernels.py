"""The Numba kernels against numpy references, on small seeded arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rtmpc.planners import kernels


def test_finalize_scores_makes_every_nonfinite_minus_inf_and_counts_them():
    scores = np.array([1.0, np.nan, -2.0, np.inf, -np.inf, 0.0])
    count = kernels.finalize_scores(scores)
    assert count == 3
    np.testing.assert_array_equal(scores, [1.0, -np.inf, -2.0, -np.inf, -np.inf, 0.0])


@pytest.mark.parametrize("n_elite", [1, 2, 7, 63, 64])
def test_select_elites_finds_the_top_scores_with_ties_and_minus_inf(n_elite):
    rng = np.random.default_rng(0)
    scores = rng.integers(-5, 5, size=64).astype(float)  # many ties
    scores[rng.choice(64, 10, replace=False)] = -np.inf
    idx = np.empty(64, dtype=np.int64)
    kernels.select_elites(scores, n_elite, idx)
    assert sorted(idx.tolist()) == list(range(64))  # a permutation
    np.testing.assert_array_equal(np.sort(scores[idx[:n_elite]]), np.sort(scores)[-n_elite:])


def test_select_elites_on_many_random_sizes():
    rng = np.random.default_rng(1)
    for _ in range(200):
        K = int(rng.integers(2, 300))
        E = int(rng.integers(1, K + 1))
        scores = rng.standard_normal(K)
        idx = np.empty(K, dtype=np.int64)
        kernels.select_elites(scores, E, idx)
        assert scores[idx[:E]].min() >= np.sort(scores)[-E]


def test_uniform_weights_drop_minus_inf_elites():
    scores = np.array([3.0, -np.inf, 1.0])
    idx = np.arange(3, dtype=np.int64)
    w = np.empty(3)
    assert kernels.uniform_weights(scores, idx, 3, w) == 2.0
    np.testing.assert_array_equal(w, [1.0, 0.0, 1.0])


def test_exponential_weights_are_scaled_by_the_elites_spread():
    idx = np.arange(4, dtype=np.int64)
    w = np.empty(4)
    for scale in (1e-3, 1.0, 1e4):  # invariant to the scale of the returns
        scores = scale * np.array([2.0, 0.0, 1.0, -np.inf])
        total = kernels.exponential_weights(scores, idx, 4, 0.5, w)
        np.testing.assert_allclose(w, [1.0, math.exp(-2.0), math.exp(-1.0), 0.0])
        assert total == pytest.approx(w.sum())
    kernels.exponential_weights(np.full(4, 7.0), idx, 4, 0.5, w)  # no spread: uniform
    np.testing.assert_array_equal(w, 1.0)
    assert kernels.exponential_weights(np.full(4, -np.inf), idx, 4, 0.5, w) == 0.0


def test_refit_gaussian_matches_numpy_and_respects_momentum_and_std_bounds():
    rng = np.random.default_rng(2)
    K, H, A, E = 50, 4, 3, 10
    actions = rng.standard_normal((K, H, A)).astype(np.float32)
    idx = rng.permutation(K).astype(np.int64)
    w = rng.random(E)
    mean, std = np.zeros((H, A)), np.ones((H, A))
    lo, hi = np.full(A, 0.2), np.full(A, 0.9)
    kernels.refit_gaussian(actions, idx, E, w, w.sum(), 0.25, lo, hi, mean, std)
    elites = actions[idx[:E]].astype(float)
    m = np.einsum("e,eha->ha", w, elites) / w.sum()
    s = np.sqrt(np.einsum("e,eha->ha", w, (elites - m) ** 2) / w.sum())
    np.testing.assert_allclose(mean, 0.75 * m, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(std, np.clip(0.25 + 0.75 * s, 0.2, 0.9), rtol=1e-6)
    before = (mean.copy(), std.copy())
    kernels.refit_gaussian(actions, idx, E, w, 0.0, 0.25, lo, hi, mean, std)  # no finite elite
    np.testing.assert_array_equal(mean, before[0])
    np.testing.assert_array_equal(std, before[1])


@pytest.mark.parametrize("beta", [0.0, 0.8])
def test_sample_sequences_ar1_noise_has_unit_variance_and_lag_one_correlation_beta(beta):
    rng = np.random.default_rng(3)
    K, H, A, first = 20002, 8, 2, 1
    mean, std = np.full((H, A), 0.5), np.full((H, A), 2.0)
    noise = rng.standard_normal((K - first - 1, H, A), dtype=np.float32)
    actions = np.full((K, H, A), 9.0, dtype=np.float32)
    big = np.full(A, 1e9)
    kernels.sample_sequences(mean, std, noise, beta, -big, big, first, actions)
    assert np.all(actions[0] == 9.0)  # rows before `first` (prior samples) untouched
    np.testing.assert_array_equal(actions[first], mean)  # the mean itself is a sample
    eps = (actions[first + 1:].astype(float) - 0.5) / 2.0
    np.testing.assert_allclose(eps.var(axis=0), 1.0, atol=0.05)
    lag1 = np.mean(eps[:, 1:] * eps[:, :-1]) / np.mean(eps[:, 1:] ** 2)
    assert lag1 == pytest.approx(beta, abs=0.02)


def test_sample_sequences_clips_to_the_bounds():
    rng = np.random.default_rng(4)
    K, H, A = 500, 3, 2
    low, high = np.array([-1.0, 0.0]), np.array([1.0, 0.5])
    actions = np.empty((K, H, A), dtype=np.float32)
    noise = rng.standard_normal((K - 1, H, A), dtype=np.float32)
    kernels.sample_sequences(np.zeros((H, A)), np.full((H, A), 3.0), noise, 0.0, low, high, 0, actions)
    assert np.all(actions >= low.astype(np.float32)) and np.all(actions <= high.astype(np.float32))
    assert np.any(actions == low.astype(np.float32)) and np.any(actions == high.astype(np.float32))


def test_shift_plan_moves_rows_up_repeats_the_last_and_resets_std():
    mean = np.arange(8.0).reshape(4, 2)
    std = np.zeros((4, 2))
    kernels.shift_plan(mean, std, np.array([0.3, 0.4]))
    np.testing.assert_array_equal(mean, [[2, 3], [4, 5], [6, 7], [6, 7]])
    np.testing.assert_array_equal(std, [[0.3, 0.4]] * 4)
    kernels.reset_plan(mean, std, np.array([1.0, -1.0]), np.array([0.5, 0.6]))
    np.testing.assert_array_equal(mean, [[1.0, -1.0]] * 4)
    np.testing.assert_array_equal(std, [[0.5, 0.6]] * 4)


def test_penalties_match_numpy():
    rng = np.random.default_rng(5)
    K, H, A = 6, 4, 2
    actions = rng.standard_normal((K, H, A)).astype(np.float32)
    prev = rng.standard_normal(A)
    scores = np.zeros(K)
    kernels.subtract_smoothness(actions, prev, 1.0, 0.5, scores)
    full = np.concatenate([np.broadcast_to(prev, (K, 1, A)), actions.astype(float)], axis=1)
    np.testing.assert_allclose(scores, -0.5 * np.sum(np.diff(full, axis=1) ** 2, axis=(1, 2)), rtol=1e-6)
    dis = rng.random((K, H)).astype(np.float32)
    scores[:] = 0.0
    kernels.subtract_disagreement(dis, 2.0, scores)
    np.testing.assert_allclose(scores, -2.0 * dis.sum(axis=1), rtol=1e-6)
