"""Plots of an analysis report."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from rtmpc.configs.plots import pyplot, save_png

log = logging.getLogger(__name__)


# -- plots --------------------------------------------------------------------------------
def plot_errors(report: dict[str, Any], path: str | os.PathLike, title: str = "",
                planner_horizon: int | None = None) -> Path:
    """Error against k: the state error and the return error with their baselines (the score
    error for a latent model), and that error in units of the tolerance ``fraction * spread``
    per source with the suggested and the planner's horizons; a PNG, atomically."""
    plt = pyplot()
    k = np.arange(1, report["horizon"] + 1)
    has_state = "state_error_by_k" in report
    panels = 3 if has_state else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4), dpi=100, squeeze=False)
    if has_state:
        ax = axes[0, 0]
        ax.plot(k, report["state_error_by_k"], "o-", label="model (mean)")
        ax.plot(k, report["state_error_p90_by_k"], "--", color="C0", label="model (p90)")
        ax.plot(k, report["state_error_last_state_by_k"], "s-", ms=3, label="last state")
        ax.plot(k, report["state_error_const_velocity_by_k"], "^-", ms=3, label="constant velocity")
        ax.plot(k, report["state_error_linear_by_k"], ":", color="gray", label="k x one-step error")
        if "disagreement_by_k" in report:
            ax.plot(k, report["disagreement_by_k"], "-", color="C4", alpha=0.7, label="disagreement")
        ax.set_yscale("log")
        ax.set_xlabel("k (model steps open-loop)")
        ax.set_ylabel("state error (RMS over dims, in data std)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    # The return (a reward model) or the planner's score (a latent model) against k.
    what = "return" if "return_error_by_k" in report else "score"
    ax = axes[0, -2]
    ax.plot(k, report[f"{what}_error_by_k"], "o-", label="model (mean)")
    ax.plot(k, report[f"{what}_error_p90_by_k"], "--", color="C0", label="model (p90)")
    if what == "return":
        ax.plot(k, report["return_error_last_state_by_k"], "s-", ms=3, label="last reward")
        ax.plot(k, report["return_error_const_velocity_by_k"], "^-", ms=3, label="linear reward")
    ax.plot(k, report["fraction"] * np.asarray(report[f"{what}_spread_by_k"]), "k:",
            label=f"{report['fraction']:g} x spread of the true {what}")
    ax.set_xlabel("k (model steps open-loop)")
    ax.set_ylabel(f"|predicted - true| k-step {what}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    # That error in units of the tolerance, per source: the horizon ends where a curve crosses 1.
    ax = axes[0, -1]
    curves = {"all": report, **report.get("by_source", {})}
    for name, r in curves.items():
        if f"{what}_error_by_k" not in r:
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.asarray(r[f"{what}_error_by_k"]) / (report["fraction"] * np.asarray(r[f"{what}_spread_by_k"]))
        hz = r.get("suggested_horizon_pooled", r.get("suggested_horizon"))
        n = r["windows"] if what == "return" else r["value_windows"]
        ax.plot(k, ratio, "o-" if name == "all" else ".-", ms=4, label=f"{name} ({n} windows): horizon {hz}")
    ax.axhline(1.0, color="k", ls=":", label="tolerance")
    ax.axvline(report["suggested_horizon"], color="C3", alpha=0.6,
               label=f"suggested horizon {report['suggested_horizon']}")
    if planner_horizon:
        ax.axvline(planner_horizon, color="gray", ls="--", alpha=0.6, label=f"planner horizon {planner_horizon}")
    ax.set_yscale("log")
    ax.set_xlabel("k (model steps open-loop)")
    ax.set_ylabel(f"{what} error / ({report['fraction']:g} x spread of true {what})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)


def plot_calibration(report: dict[str, Any], path: str | os.PathLike, title: str = "") -> Path | None:
    """Reliability curves (RMS true error against RMS predicted spread, per quantile bin) for
    the disagreement and the predicted std; a PNG, atomically. None without them."""
    curves = [(key, label) for key, label in (("reliability_disagreement", "ensemble disagreement"),
                                               ("reliability_predicted_std", "predicted std"))
              if report.get(key, {}).get("pred_rms")]
    if not curves:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=100)
    lo, hi = np.inf, 0.0
    for key, label in curves:
        x, y = np.asarray(report[key]["pred_rms"]), np.asarray(report[key]["err_rms"])
        ax.plot(x, y, "o-", label=label)
        pos = np.r_[x, y][np.r_[x, y] > 0]
        if pos.size:
            lo, hi = min(lo, pos.min()), max(hi, pos.max())
    if hi > 0:
        ax.plot([lo, hi], [lo, hi], "k:", label="calibrated")
        ax.set_xscale("log")
        ax.set_yscale("log")
    rho = report.get("disagreement_error_spearman", float("nan"))
    rho_k = report.get("disagreement_error_spearman_within_k", float("nan"))
    ax.set_title(f"{title}\nSpearman(disagreement, error) = {rho:.2f} pooled, {rho_k:.2f} within k", fontsize=9)
    ax.set_xlabel("predicted spread (RMS over dims, in data std)")
    ax.set_ylabel("true error (RMS, in data std)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)
