"""``rtmpc train`` for tabular Dyna-Q: the textbook's maze experiments as a run.

Dyna Maze (Figure 8.2): ``runs`` seeded runs of each agent in ``compare`` (planning steps
n; the configured agent's n is added) for ``agent.episodes`` episodes; metrics.csv has a row
per episode with the mean steps of every n and, for the configured agent, its cumulative
mean steps (``env_steps``) and its discounted return ``gamma ** (steps - 1)`` (``eval_return``:
reward 1 at the goal, 0 elsewhere); ``dyna_maze.png`` is Figure 8.2.

Blocking and shortcut mazes (Figures 8.4 and 8.5): Dyna-Q (kappa 0) and Dyna-Q+ (the
configured kappa, or ``plus_kappa`` if that is 0) for ``steps`` real steps; metrics.csv has
a row every 100 steps with both methods' mean cumulative reward (``eval_return``: the
configured agent's), ``changing_maze.png`` is the figure.

The run is short (seconds), so it commits once, at the end (:mod:`rtmpc.models.common.commit`).
"""

from __future__ import annotations

import logging

import numpy as np
from rtmpc.configs.rundir import RunDir, write_csv
from rtmpc.models.common.commit import Manifest
from rtmpc.models.common.curves import plot_learning_curve
from rtmpc.sim.gridworld import blocking_maze, dyna_maze, shortcut_maze

from .config import MazeRunConfig
from .tabular import plot_cumulative_reward, plot_dyna_maze, run_episodes, run_steps

__all__ = ["train_maze"]

log = logging.getLogger(__name__)
BOOK_STEPS = {"blocking": 3000, "shortcut": 6000}


def _seeds(seed: int, runs: int) -> list[int]:
    return [seed * 1000 + i for i in range(runs)]


def train_maze(run: RunDir, cfg: MazeRunConfig, seed: int = 0) -> list[dict]:
    run.make()
    commits = Manifest(run)
    commits.reset()
    agent = cfg.agent
    if cfg.maze == "dyna":
        ns = sorted({*cfg.compare, agent.planning_steps})
        steps = {n: np.stack([run_episodes(dyna_maze(), agent.replace(planning_steps=n), s)
                              for s in _seeds(seed, cfg.runs)]) for n in ns}
        mine = steps[agent.planning_steps].mean(axis=0)
        cumulative = np.cumsum(mine)
        rows = [{"episode": i + 1, "env_steps": int(round(cumulative[i])),
                 "eval_return": round(float(np.mean(agent.gamma ** (steps[agent.planning_steps][:, i] - 1))), 5),
                 **{f"steps_n{n}": round(float(steps[n][:, i].mean()), 2) for n in ns}}
                for i in range(agent.episodes)]
        figure = plot_dyna_maze(steps, run.file("dyna_maze.png"))
        log.info("dyna maze, %d runs: mean steps in episode %d: %s", cfg.runs, min(3, agent.episodes),
                 ", ".join(f"n={n} {steps[n][:, min(3, agent.episodes) - 1].mean():.1f}" for n in ns))
    else:
        maze = blocking_maze() if cfg.maze == "blocking" else shortcut_maze()
        total = cfg.steps or BOOK_STEPS[cfg.maze]
        kappa = agent.kappa or cfg.plus_kappa
        methods = {"Dyna-Q": agent.replace(kappa=0.0), "Dyna-Q+": agent.replace(kappa=kappa)}
        curves = {name: np.stack([run_steps(maze, a, total, s) for s in _seeds(seed, cfg.runs)])
                  for name, a in methods.items()}
        mine = "Dyna-Q+" if agent.kappa > 0 else "Dyna-Q"
        rows = [{"env_steps": t, "eval_return": round(float(curves[mine][:, t - 1].mean()), 3),
                 **{f"cumulative_reward_{name}": round(float(c[:, t - 1].mean()), 3) for name, c in curves.items()}}
                for t in range(100, total + 1, 100)]
        figure = plot_cumulative_reward(curves, run.file("changing_maze.png"), switch_at=maze.switch_at,
                                        title=f"{cfg.maze} maze, {cfg.runs} runs (Sutton & Barto Figure "
                                              f"{'8.4' if cfg.maze == 'blocking' else '8.5'})")
    metrics = write_csv(commits.stage("metrics", "metrics.csv", 1), rows)
    commits.commit(1, {"metrics": metrics}, {"maze": cfg.maze, "runs": cfg.runs, "seed": seed})
    write_csv(run.metrics, rows)
    plot_learning_curve(run.metrics, run.file("learning_curve.png"), f"tabular Dyna-Q, {cfg.maze} maze")
    print(f"{cfg.maze} maze: figure {figure}")
    return rows
