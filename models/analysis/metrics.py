"""Metrics of an open-loop rollout against the truth, as functions of k = 1..H; the report as JSON."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from rtmpc.models.base import ModelError

from .collect import VALUE_TAIL, Windows
from .predictors import Predictor, Rollouts, predict_windows

log = logging.getLogger(__name__)

ANALYSIS_FILE = "analysis.json"
"""Name of the report in a run directory; ``suggested_horizon`` in it bounds a tuner's horizon."""


# -- metrics over arrays -----------------------------------------------------------------
def normalised_error(pred: np.ndarray, true: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """RMS over the last axis of ``(pred - true) / scale``: (..., O), (..., O), (O,) -> (...)."""
    return np.sqrt(np.mean(np.square((pred - true) / scale), axis=-1))


def last_state_baseline(obs0: np.ndarray, horizon: int) -> np.ndarray:
    """o_t held for k = 1..H: (N, O) -> (N, H, O)."""
    return np.repeat(obs0[:, None, :], horizon, axis=1)


def constant_velocity_baseline(obs0: np.ndarray, prev_obs: np.ndarray, horizon: int) -> np.ndarray:
    """o_t + k (o_t - o_{t-1}) for k = 1..H: (N, O), (N, O) -> (N, H, O)."""
    k = np.arange(1, horizon + 1)[None, :, None]
    return obs0[:, None, :] + k * (obs0 - prev_obs)[:, None, :]


def discounted_cumsum(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """R_k = sum_{j<k} gamma^j r_j for k = 1..H: (N, H) -> (N, H)."""
    return np.cumsum(rewards * gamma ** np.arange(rewards.shape[1]), axis=1)


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties given their average rank (scipy's ``method='average'``)."""
    x = np.asarray(x).reshape(-1)
    order = np.argsort(x, kind="mergesort")
    inv = np.empty_like(order)
    inv[order] = np.arange(x.size)
    xs = x[order]
    new = np.r_[True, xs[1:] != xs[:-1]]
    dense = np.cumsum(new)[inv]  # 1-based group of each element
    bounds = np.r_[np.nonzero(new)[0], x.size]  # group g spans sorted positions bounds[g-1] .. bounds[g]-1
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation of two equally long 1-D arrays (Pearson's on average
    ranks); NaN when fewer than 3 finite pairs or either is constant."""
    x, y = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"spearman needs arrays of one length, got {x.size} and {y.size}")
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")
    rx, ry = rankdata(x[ok]), rankdata(y[ok])
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry / denom) if denom > 0 else float("nan")


def reliability_curve(pred_std: np.ndarray, err: np.ndarray, bins: int = 10) -> dict[str, list]:
    """Reliability of a predicted spread: pairs sorted into ``bins`` quantile bins of
    ``pred_std``; per bin the RMS predicted spread, the RMS true error and the count.

    A calibrated Gaussian prediction has ``E[err^2] = pred_std^2``: its points lie on the
    diagonal; points above it are over-confident. Inputs: any shape, flattened.
    """
    p, e = np.asarray(pred_std, np.float64).reshape(-1), np.asarray(err, np.float64).reshape(-1)
    ok = np.isfinite(p) & np.isfinite(e)
    p, e = p[ok], e[ok]
    if p.size == 0:
        return {"pred_rms": [], "err_rms": [], "count": []}
    order = np.argsort(p, kind="mergesort")
    groups = [g for g in np.array_split(order, min(bins, p.size)) if g.size]
    return {"pred_rms": [float(np.sqrt(np.mean(p[g] ** 2))) for g in groups],
            "err_rms": [float(np.sqrt(np.mean(e[g] ** 2))) for g in groups],
            "count": [int(g.size) for g in groups]}


def supported_horizon(err_by_k: np.ndarray, spread_by_k: np.ndarray, fraction: float) -> int:
    """Largest k (0..H) with ``err_j <= fraction * spread_j`` for every j <= k: (H,), (H,) -> int.

    0 means the model's one-step prediction already fails the test.
    """
    bad = ~(np.asarray(err_by_k) <= fraction * np.asarray(spread_by_k))
    return int(np.argmax(bad)) if bad.any() else int(len(bad))


def linear_drift_horizon(one_step_err: float, spread_by_k: np.ndarray, fraction: float) -> int:
    """The MBPO-style k*: the horizon :func:`supported_horizon` would give if the return error
    grew only through a linearly growing state-distribution error (Janner et al. 2019, lemma
    B.2: TV distance after k steps <= k eps), i.e. ``err_k = one_step_err * k (k + 1) / 2``."""
    k = np.arange(1, len(spread_by_k) + 1)
    return supported_horizon(one_step_err * k * (k + 1) / 2.0, spread_by_k, fraction)


def _stats(x: np.ndarray, q: float = 90.0) -> tuple[list[float], list[float]]:
    """Mean and q-th percentile over axis 0 of an (N, H) array, as lists."""
    return np.mean(x, axis=0).tolist(), np.percentile(x, q, axis=0).tolist()


def _rms_norm(v: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """RMS over the last axis of v / scale: (..., O) -> (...)."""
    return np.sqrt(np.mean(np.square(v / scale), axis=-1))


def _core(windows: Windows, pred: Rollouts, scale: np.ndarray | None, gamma: float, fraction: float,
          bins: int) -> dict[str, Any]:
    """The metrics of one set of windows (see :func:`analyze` for the keys)."""
    h = windows.horizon
    out: dict[str, Any] = {"windows": int(windows.n)}
    # State error against the baselines.
    if pred.obs is not None:
        err = normalised_error(pred.obs, windows.true_obs, scale)  # (N, H)
        out["state_error_by_k"], out["state_error_p90_by_k"] = _stats(err)
        out["state_rmse_by_dim"] = np.sqrt(np.mean((pred.obs - windows.true_obs) ** 2, axis=0)).T.tolist()
        out["state_error_by_dim"] = np.sqrt(np.mean(((pred.obs - windows.true_obs) / scale) ** 2, axis=0)).T.tolist()
        last = normalised_error(last_state_baseline(windows.obs0, h), windows.true_obs, scale)
        cv = normalised_error(constant_velocity_baseline(windows.obs0, windows.prev_obs, h), windows.true_obs,
                              scale)
        out["state_error_last_state_by_k"] = np.mean(last, axis=0).tolist()
        out["state_error_const_velocity_by_k"] = np.mean(cv, axis=0).tolist()
        out["state_error_linear_by_k"] = (out["state_error_by_k"][0] * np.arange(1, h + 1)).tolist()
    # Reward and return error against the baselines.
    r_true = windows.true_reward
    ret_true = discounted_cumsum(r_true, gamma)
    if pred.reward is not None:
        r_last = np.repeat(windows.prev_reward[:, :1], h, axis=1)
        r_cv = r_last + np.arange(1, h + 1) * (windows.prev_reward[:, :1] - windows.prev_reward[:, 1:])
        out["reward_error_by_k"], out["reward_error_p90_by_k"] = _stats(np.abs(pred.reward - r_true))
        ret_pred = discounted_cumsum(pred.reward, gamma)
        ret_err = np.abs(ret_pred - ret_true)
        out["return_error_by_k"], out["return_error_p90_by_k"] = _stats(ret_err)
        out["return_error_last_state_by_k"] = np.mean(np.abs(discounted_cumsum(r_last, gamma) - ret_true),
                                                      0).tolist()
        out["return_error_const_velocity_by_k"] = np.mean(np.abs(discounted_cumsum(r_cv, gamma) - ret_true),
                                                          0).tolist()
        out["return_spread_by_k"] = np.std(ret_true, axis=0).tolist()
        out["return_rank_spearman_by_k"] = [spearman(ret_pred[:, k], ret_true[:, k]) for k in range(h)]
        out["suggested_horizon"] = supported_horizon(np.mean(ret_err, 0), np.std(ret_true, 0), fraction)
        out["horizon_limited"] = out["suggested_horizon"] == h
        out["mbpo_k_star"] = linear_drift_horizon(float(np.mean(ret_err[:, 0])), np.std(ret_true, 0), fraction)
    # Value and score against the real return-to-go, on the windows where that is a fair target.
    if windows.true_value is not None and (pred.value is not None or pred.score is not None):
        ok = windows.value_ok
        out["value_windows"] = int(ok.sum())
        if ok.any() and pred.value is not None:
            out["value_error_by_k"], out["value_error_p90_by_k"] = _stats(np.abs(pred.value - windows.true_value)[ok])
        if ok.any() and pred.score is not None:
            true_score = (ret_true + gamma ** np.arange(1, h + 1) * windows.true_value)[ok]
            score_err = np.abs(pred.score[ok] - true_score)
            out["score_error_by_k"], out["score_error_p90_by_k"] = _stats(score_err)
            out["score_spread_by_k"] = np.std(true_score, axis=0).tolist()
            out["score_rank_spearman_by_k"] = [spearman(pred.score[ok][:, k], true_score[:, k]) for k in range(h)]
            if pred.reward is None:  # the planner's whole objective is all such a model offers
                out["suggested_horizon"] = supported_horizon(np.mean(score_err, 0), np.std(true_score, 0), fraction)
                out["horizon_limited"] = out["suggested_horizon"] == h
    # Calibration: disagreement and predicted std against the true state error.
    if pred.obs is not None and pred.obs_spread is not None:
        dis = _rms_norm(pred.obs_spread, scale)  # (N, H)
        out["disagreement_by_k"] = np.mean(dis, axis=0).tolist()
        out["disagreement_error_spearman"] = spearman(dis, err)
        per_k = [spearman(dis[:, k], err[:, k]) for k in range(h)]
        out["disagreement_error_spearman_by_k"] = per_k
        out["disagreement_error_spearman_within_k"] = _nanmean(per_k)
        out["reliability_disagreement"] = reliability_curve(dis, err, bins)
        if pred.obs_var is not None:
            std = _rms_norm(np.sqrt(pred.obs_var), scale)  # (N, H)
            out["predicted_std_by_k"] = np.mean(std, axis=0).tolist()
            out["variance_error_spearman"] = spearman(std, err)
            out["reliability_predicted_std"] = reliability_curve(std, err, bins)
            with np.errstate(invalid="ignore", divide="ignore"):  # an exact model: 0 / 0 -> NaN
                ratio = np.sqrt(np.mean(err**2, 0)) / np.sqrt(np.mean(std**2, 0))
            out["error_to_std_ratio_by_k"] = ratio.tolist()
    if pred.reward_spread is not None and pred.reward is not None:
        out["reward_disagreement_error_spearman"] = spearman(pred.reward_spread, np.abs(pred.reward - r_true))
    return out


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def analyze(predictor: Predictor, windows: Windows, *, gamma: float = 1.0, fraction: float = 0.5,
            scale: np.ndarray | None = None, bins: int = 10, rollouts: Rollouts | None = None) -> dict[str, Any]:
    """Roll ``predictor`` over ``windows`` and measure it; returns a JSON-ready dict.

    gamma: discount of the k-step return; fraction: the return error, as a fraction of the
    true return's spread, up to which a horizon is supported; scale (O,): per-dimension
    normaliser of the state error (default: the data's standard deviation per dimension,
    1 where a dimension is constant); bins: reliability-curve bins; rollouts: predictions
    already made (skips the rollout).

    Keys, each a list over k = 1..H where it ends in ``_by_k``: ``state_error_by_k``,
    ``state_error_p90_by_k``, ``state_error_last_state_by_k``,
    ``state_error_const_velocity_by_k``, ``state_error_linear_by_k`` (k times the one-step
    error), ``state_rmse_by_dim`` / ``state_error_by_dim`` (O lists of H; raw / normalised),
    ``reward_error_by_k`` (+ ``_p90``), ``return_error_by_k`` (+ ``_p90``, ``_last_state``,
    ``_const_velocity``), ``return_spread_by_k``, ``return_rank_spearman_by_k``,
    ``disagreement_by_k``, ``disagreement_error_spearman`` (pooled over windows and k),
    ``disagreement_error_spearman_by_k`` and ``_within_k`` (their mean),
    ``predicted_std_by_k``, ``variance_error_spearman``, ``error_to_std_ratio_by_k``,
    ``reliability_disagreement`` / ``reliability_predicted_std`` ({pred_rms, err_rms,
    count}), ``value_error_by_k`` (+ ``_p90``; a model with a value head, windows made with
    gamma), ``score_error_by_k`` (+ ``_p90``), ``score_spread_by_k``, ``score_rank_spearman_by_k``
    (a model that gives the planner's score: against the true k-step return plus the
    discounted true return-to-go; both on the ``value_ok`` windows, ``value_windows`` of them;
    the score decides the horizon of a model without rewards), ``suggested_horizon``,
    ``horizon_limited`` (true when it is H: never exceeded),
    ``mbpo_k_star``, ``windows``, ``horizon``, ``fraction``, ``gamma``, ``scale``, ``by_source``
    (the same per trajectory source). With several sources, ``suggested_horizon`` and
    ``mbpo_k_star`` are the smallest over the sources (each judged against its own return
    spread) and the pooled values are kept as ``..._pooled``. State keys are absent for a
    model that predicts no observation; NaN is written as null by :func:`to_json`.
    """
    if not 0.0 < fraction:
        raise ValueError(f"fraction = {fraction} must be > 0")
    pred = rollouts if rollouts is not None else predict_windows(predictor, windows)
    if scale is None:
        data = np.concatenate([windows.obs0, windows.true_obs.reshape(-1, windows.obs0.shape[1])])
        sd = data.std(axis=0)
        scale = np.where(sd > 1e-8 * (1.0 + np.abs(data).max(axis=0)), sd, 1.0)
    report = {"horizon": int(windows.horizon), "fraction": float(fraction), "gamma": float(gamma),
              "scale": np.asarray(scale, np.float64).tolist()}
    report.update(_core(windows, pred, scale, gamma, fraction, bins))
    sources = [s for s in dict.fromkeys(windows.source.tolist()) if s]
    if len(sources) > 1:
        by = {s: _core(windows.select(windows.source == s), pred.select(windows.source == s), scale, gamma,
                       fraction, bins) for s in sources}
        report["by_source"] = by
        # Conservative: the model must pass on every source (the controller's own trajectories
        # and random actions), each judged against its own spread of returns.
        for key in ("suggested_horizon", "mbpo_k_star"):
            values = [b[key] for b in by.values() if key in b]
            if key in report and values:
                report[f"{key}_pooled"] = report[key]
                report[key] = min(values)
        report["horizon_limited"] = report.get("suggested_horizon") == windows.horizon
    if "suggested_horizon" not in report:
        raise ModelError(f"no horizon can be suggested: the model predicts no reward and none of the "
                         f"{windows.n} windows has a fair value target (it needs controller episodes that "
                         f"run at least {windows.horizon} + log({VALUE_TAIL}) / log(gamma = {gamma:g}) steps)")
    return report


def to_json(report: dict[str, Any], **kwargs: Any) -> str:
    """``json.dumps`` with non-finite floats written as null (strict JSON)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(report), allow_nan=False, **kwargs)


def read_suggested_horizon(run_dir: str | os.PathLike) -> int | None:
    """``suggested_horizon`` from RUN_DIR/analysis.json (written by ``rtmpc analyze``), or None
    when the run has not been analysed. A tuner uses it as the upper bound of its horizon."""
    path = Path(run_dir) / ANALYSIS_FILE
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get("suggested_horizon")
    return None if value is None else int(value)
