"""One episode of the control loop on one page: what the robot did and whether the loop kept time.

:func:`plot_episode` draws the telemetry rows (:class:`controller.telemetry.Telemetry`
columns) against the cycle's scheduled time, in four panels sharing that axis:

1. observations, one line per entry (labelled with the task's names when given);
2. actions sent (after the safety filter), the action bounds, and the cycles whose action
   was a fallback (late plan) or the safe action;
3. reward per cycle and the return so far;
4. plan time per cycle against the plan budget, misses marked.

Written after the run (never on the loop's hot path), atomically, by ``rtmpc control``
beside each episode's ``telemetry.npz``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from rtmpc.configs.plots import pyplot, save_png
from rtmpc.controller.telemetry import FALLBACK, SAFE

__all__ = ["plot_episode"]

_MAX_LABELLED = 10  # observation entries named in the legend; the rest are drawn unlabelled


def plot_episode(records: Mapping[str, np.ndarray], path: str | os.PathLike, *, title: str = "",
                 obs_names: Sequence[str] = (), action_low=None, action_high=None,
                 budget_s: float | None = None) -> Path:
    """Plot telemetry ``records`` (column name -> array, as ``Telemetry.records()`` or a
    saved ``telemetry.npz``) to the PNG ``path``; returns the path. ``budget_s``: the
    plan budget per cycle (drawn on the plan-time panel)."""
    time = np.asarray(records["scheduled"], dtype=float)
    if time.size == 0:
        raise ValueError("no telemetry rows to plot: the loop ran no cycle")
    time = time - time[0]
    obs = np.asarray(records["obs"], dtype=float).reshape(time.size, -1)
    action = np.asarray(records["action"], dtype=float).reshape(time.size, -1)
    source = np.asarray(records["source"])
    reward = np.asarray(records["reward"], dtype=float)
    plan_ms = 1e3 * np.asarray(records["plan_s"], dtype=float)
    missed = np.asarray(records["missed"], dtype=bool)

    plt = pyplot()
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), dpi=100, sharex=True,
                             gridspec_kw={"height_ratios": [3, 2, 1.5, 1.5]})
    ax = axes[0]
    for i in range(obs.shape[1]):
        label = (obs_names[i] if i < len(obs_names) else f"obs[{i}]") if i < _MAX_LABELLED else None
        ax.plot(time, obs[:, i], lw=1, label=label)
    ax.set_ylabel("observation")
    if obs.shape[1]:
        ax.legend(fontsize=7, ncol=min(5, obs.shape[1]), loc="upper right")

    ax = axes[1]
    for j in range(action.shape[1]):
        ax.plot(time, action[:, j], lw=1, label=f"action[{j}] sent" if action.shape[1] > 1 else "action sent")
    bounds = [np.ravel(b) for b in (action_low, action_high) if b is not None]
    for v in np.unique(np.concatenate(bounds)) if bounds else ():
        ax.axhline(v, color="k", lw=0.8, ls=":")
    for kind, marker, color, name in ((FALLBACK, "x", "C1", "fallback"), (SAFE, "v", "C3", "safe action")):
        rows = source == kind
        if rows.any():
            ax.plot(time[rows], np.nan_to_num(action[rows, 0]), marker, color=color, ms=4, ls="none",
                    label=f"{name} ({int(rows.sum())})")
    ax.set_ylabel("action")
    ax.legend(fontsize=7, loc="upper right")

    ax = axes[2]
    ax.plot(time, reward, lw=1, color="C2")
    ax.set_ylabel("reward", color="C2")
    twin = ax.twinx()
    twin.plot(time, np.cumsum(reward), lw=1, color="k")
    twin.set_ylabel("return so far")

    ax = axes[3]
    ax.plot(time, plan_ms, lw=0.8, color="C0", label="plan time")
    if budget_s is not None and np.isfinite(budget_s):
        ax.axhline(1e3 * budget_s, color="C3", lw=1, ls="--", label=f"budget {1e3 * budget_s:.1f} ms")
    if missed.any():
        ax.plot(time[missed], np.nan_to_num(plan_ms[missed]), ".", color="C3", ms=4,
                label=f"missed ({int(missed.sum())} of {missed.size})")
    ax.set_ylabel("plan ms")
    ax.set_xlabel("time (s, scheduled)")
    ax.legend(fontsize=7, loc="upper right")
    for ax in axes:
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)
