"""Numba kernels shared by CEM and MPPI. They see arrays only, never a config or a model.

Shapes: K sampled sequences, H horizon steps, A action entries, E elites (E <= K).
Every kernel writes into buffers its caller allocated once (no allocation inside), is
compiled ``nogil`` (the GIL is released while it runs) and cached on disk.

Conventions:
- ``mean``/``std`` are float64 (H, A) sampling distributions; ``actions`` is the float32
  (K, H, A) C-contiguous population handed to the model;
- ``scores`` is float64 (K,): higher is better, and a non-finite score is ``-inf``, never
  a harmless-looking number, so a diverged rollout can never win (see :func:`finalize_scores`);
- ``idx`` is int64 (K,): after :func:`select_elites` its first E entries index the elites;
- ``weights`` is float64 (E,): the weight of each elite in :func:`refit_gaussian`.
"""

from __future__ import annotations

import math

from numba import njit

__all__ = [
    "reset_plan",
    "shift_plan",
    "sample_sequences",
    "subtract_smoothness",
    "subtract_disagreement",
    "finalize_scores",
    "select_elites",
    "uniform_weights",
    "exponential_weights",
    "refit_gaussian",
]


@njit(nogil=True, cache=True)
def reset_plan(mean, std, mid, std_init):
    """Cold start: every row of mean (H, A) <- mid (A,), of std (H, A) <- std_init (A,)."""
    H, A = mean.shape
    for t in range(H):
        for a in range(A):
            mean[t, a] = mid[a]
            std[t, a] = std_init[a]


@njit(nogil=True, cache=True)
def shift_plan(mean, std, std_init):
    """Warm start: mean[t] <- mean[t + 1], the last row repeats; std (H, A) <- std_init (A,).

    The previous plan, one step on, is the best guess of the new one (receding horizon);
    its std is reset so that the new plan explores as much as a cold one.
    """
    H, A = mean.shape
    for t in range(H - 1):
        for a in range(A):
            mean[t, a] = mean[t + 1, a]
    for t in range(H):
        for a in range(A):
            std[t, a] = std_init[a]


@njit(nogil=True, cache=True)
def sample_sequences(mean, std, noise, beta, low, high, first, actions):
    """Fill actions[first:] (K x H x A, float32) around mean/std (H x A), clipped to [low, high].

    ``actions[first]`` is the mean itself (noise-free), so the current plan (the warm
    start) is always evaluated. ``actions[first + 1 + j] = clip(mean + std * eps_j)`` for
    each j < len(noise), where noise (J x H x A, float32) holds standard normals on entry
    and is turned in place into AR(1) noise along the horizon (Ornstein-Uhlenbeck-like,
    stationary unit variance)::

        eps_0 = w_0,    eps_t = beta * eps_{t-1} + sqrt(1 - beta^2) * w_t

    beta = 0 is white noise; beta -> 1 gives smoother sequences. Rows before ``first``
    (policy-prior samples) are left as they are.
    """
    J, H, A = noise.shape
    c = math.sqrt(1.0 - beta * beta)
    for t in range(H):
        for a in range(A):
            actions[first, t, a] = min(max(mean[t, a], low[a]), high[a])
    for j in range(J):
        k = first + 1 + j
        for t in range(H):
            for a in range(A):
                if t > 0:
                    noise[j, t, a] = beta * noise[j, t - 1, a] + c * noise[j, t, a]
                u = mean[t, a] + std[t, a] * noise[j, t, a]
                actions[k, t, a] = min(max(u, low[a]), high[a])


@njit(nogil=True, cache=True)
def subtract_smoothness(actions, prev_action, first_weight, cost, scores):
    """scores[k] -= cost * sum_t ||a_{k,t} - a_{k,t-1}||^2 over the (K x H x A) actions.

    The t = 0 term compares with prev_action (A,), the action sent last cycle, and counts
    ``first_weight`` times (0.0 when there is no previous action). Undiscounted.
    """
    K, H, A = actions.shape
    for k in range(K):
        total = 0.0
        for a in range(A):
            d = actions[k, 0, a] - prev_action[a]
            total += first_weight * d * d
        for t in range(1, H):
            for a in range(A):
                d = actions[k, t, a] - actions[k, t - 1, a]
                total += d * d
        scores[k] -= cost * total


@njit(nogil=True, cache=True)
def subtract_disagreement(disagreement, coef, scores):
    """scores[k] -= coef * sum_t disagreement[k, t], disagreement being (K, H) (PETS-style
    uncertainty penalty; undiscounted, as the model reports it)."""
    K, H = disagreement.shape
    for k in range(K):
        total = 0.0
        for t in range(H):
            total += disagreement[k, t]
        scores[k] -= coef * total


@njit(nogil=True, cache=True)
def finalize_scores(scores):
    """Non-finite scores (K,) (NaN, +inf, -inf) become -inf; returns how many there were.

    A diverged rollout is ranked last and counted, never patched to 0 (which would rank
    it above every honest negative return).
    """
    count = 0
    for k in range(scores.shape[0]):
        if not math.isfinite(scores[k]):
            scores[k] = -math.inf
            count += 1
    return count


@njit(nogil=True, cache=True)
def select_elites(scores, n_elite, idx):
    """Partial selection: afterwards idx[:n_elite] indexes the n_elite highest scores (K,).

    idx (K,) is work space. Quickselect with a median-of-three pivot and a three-way
    partition (ties, such as many -inf, stay linear): O(K) on average, no full sort; the
    elites are in no particular order. Deterministic for given scores.
    """
    K = scores.shape[0]
    for k in range(K):
        idx[k] = k
    if n_elite >= K:
        return
    lo = 0
    hi = K - 1
    while hi > lo:
        mid = (lo + hi) // 2
        x = scores[idx[lo]]
        y = scores[idx[mid]]
        z = scores[idx[hi]]
        pivot = max(min(x, y), min(max(x, y), z))  # median of three
        # three-way partition, descending: [lo, lt) > pivot, [lt, gt] == pivot, (gt, hi] < pivot
        lt = lo
        i = lo
        gt = hi
        while i <= gt:
            s = scores[idx[i]]
            if s > pivot:
                tmp = idx[lt]
                idx[lt] = idx[i]
                idx[i] = tmp
                lt += 1
                i += 1
            elif s < pivot:
                tmp = idx[gt]
                idx[gt] = idx[i]
                idx[i] = tmp
                gt -= 1
            else:
                i += 1
        if n_elite < lt:
            hi = lt - 1
        elif n_elite > gt + 1:
            lo = gt + 1
        else:
            return


@njit(nogil=True, cache=True)
def uniform_weights(scores, idx, n_elite, weights):
    """CEM weights: 1 for each elite idx[:n_elite] with a finite score, 0 for -inf ones.

    Returns the sum of the weights (E,), 0.0 when no elite is finite.
    """
    total = 0.0
    for i in range(n_elite):
        w = 1.0 if scores[idx[i]] > -math.inf else 0.0
        weights[i] = w
        total += w
    return total


@njit(nogil=True, cache=True)
def exponential_weights(scores, idx, n_elite, temperature, weights):
    """MPPI weights over the elites idx[:n_elite], with the temperature scaled by their spread::

        w_i = exp((s_i - s_max) / (temperature * (s_max - s_min)))

    s_max/s_min are the highest/lowest finite elite scores, so the worst elite weighs
    exp(-1 / temperature) of the best whatever the scale of the returns (the path-integral
    weights of Williams et al. 2017, over elites as in TD-MPC2, Hansen et al. 2024).
    -inf elites weigh 0; equal finite scores weigh the same. Returns the sum of the
    weights (E,), 0.0 when no elite is finite.
    """
    s_max = -math.inf
    s_min = math.inf
    for i in range(n_elite):
        s = scores[idx[i]]
        if s > -math.inf:
            s_max = max(s_max, s)
            s_min = min(s_min, s)
    if s_max == -math.inf:
        for i in range(n_elite):
            weights[i] = 0.0
        return 0.0
    spread = s_max - s_min
    scale = 1.0 / (temperature * spread) if spread > 0.0 and math.isfinite(spread) else 0.0
    total = 0.0
    for i in range(n_elite):
        s = scores[idx[i]]
        w = math.exp((s - s_max) * scale) if s > -math.inf else 0.0
        weights[i] = w
        total += w
    return total


@njit(nogil=True, cache=True)
def refit_gaussian(actions, idx, n_elite, weights, total, alpha, std_min, std_max, mean, std):
    """Refit mean/std (H x A) to the weighted elites of actions (K x H x A), with momentum.

    m, v = weighted mean and (biased) variance of actions[idx[:n_elite]] with weights (E,)
    summing to ``total``; then ``mean <- alpha * mean + (1 - alpha) * m`` and
    ``std <- clip(alpha * std + (1 - alpha) * sqrt(v), std_min, std_max)`` (A,) bounds.
    Does nothing when total <= 0 (no finite elite: the distribution is kept). The mean
    stays inside the action bounds (a convex combination of clipped actions).
    """
    if not total > 0.0:
        return
    K, H, A = actions.shape
    inv = 1.0 / total
    for t in range(H):
        for a in range(A):
            m = 0.0
            for i in range(n_elite):
                m += weights[i] * actions[idx[i], t, a]
            m *= inv
            v = 0.0
            for i in range(n_elite):
                d = actions[idx[i], t, a] - m
                v += weights[i] * d * d
            v *= inv
            mean[t, a] = alpha * mean[t, a] + (1.0 - alpha) * m
            s = alpha * std[t, a] + (1.0 - alpha) * math.sqrt(v)
            std[t, a] = min(max(s, std_min[a]), std_max[a])
