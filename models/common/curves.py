"""Learning curves every family's trainer plots from its metrics.csv."""

from __future__ import annotations

__all__ = ["plot_learning_curve"]


def plot_learning_curve(metrics_csv, png, title: str, panels: tuple[str, ...] = ()) -> None:
    """eval_return against env_steps, from metrics.csv, to a PNG (atomically); ``panels``: more
    metrics.csv columns, each in its own panel below against the same env steps (rows where the
    column is empty are left out)."""
    import csv

    from rtmpc.configs.plots import pyplot, save_png

    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    x = [int(r["env_steps"]) for r in rows]
    y = [float(r["eval_return"]) for r in rows]
    panels = tuple(p for p in panels if p in rows[0])
    fig, axes = pyplot().subplots(1 + len(panels), 1, figsize=(6, 3.6 + 1.8 * len(panels)), dpi=100, sharex=True,
                                  squeeze=False, height_ratios=[2] + [1] * len(panels))
    ax = axes[0, 0]
    ax.plot(x, y, "o-")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    for i, column in enumerate(panels, start=1):
        pts = [(xi, float(r[column])) for xi, r in zip(x, rows) if r[column] not in ("", None)]
        a = axes[i, 0]
        a.plot([p[0] for p in pts], [p[1] for p in pts], ".-", color="tab:gray")
        a.set_ylabel(column.replace("_", " "), fontsize=8)
        a.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("environment steps (action repeat counted)")
    fig.tight_layout()
    save_png(fig, png)
