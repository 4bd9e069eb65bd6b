"""Learning curves every family's trainer plots from its metrics.csv."""

from __future__ import annotations

__all__ = ["plot_learning_curve"]


def plot_learning_curve(metrics_csv, png, title: str) -> None:
    """eval_return against env_steps, from metrics.csv, to a PNG (atomically)."""
    import csv

    from rtmpc.configs.plots import pyplot, save_png

    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    x = [int(r["env_steps"]) for r in rows]
    y = [float(r["eval_return"]) for r in rows]
    fig, ax = pyplot().subplots(figsize=(6, 3.6), dpi=100)
    ax.plot(x, y, "o-")
    ax.set_xlabel("environment steps (action repeat counted)")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, png)
