"""Tabular Dyna-Q and Dyna-Q+ (Sutton & Barto, *Reinforcement Learning*, 2nd ed., section 8.2-8.3).

Each real step: epsilon-greedy action (ties among the greedy actions broken at random, which the
book's curves depend on), a one-step Q-learning update, the deterministic model records the last
``(next_state, reward)`` seen for ``(state, action)``, then ``planning_steps`` simulated Q-learning
updates, each from a random previously observed state and a random action previously taken in it
(the book's "Tabular Dyna-Q" box). ``planning_steps = 0`` is plain one-step tabular Q-learning.

Dyna-Q+ (``kappa > 0``, Figures 8.4 and 8.5): planning adds the bonus ``kappa * sqrt(tau)`` to the
model's reward, tau the number of real steps since ``(state, action)`` was last tried; and, as the
book's footnote says, actions never tried from a visited state may be planned too, modelled as
leading back to the same state with reward 0 (tau counted from the start of the run).

:func:`run_episodes` gives Figure 8.2's steps per episode, :func:`run_steps` Figures 8.4/8.5's
cumulative reward per time step on a :class:`rtmpc.sim.gridworld.ChangingMaze`. Plain Python lists
hold the tables: indexing them per step is faster than numpy scalars, and a run of the book's size
takes about a second, so no Numba.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rtmpc.configs import Config, param
from rtmpc.sim.gridworld import ChangingMaze, GridMaze

__all__ = ["TabularDynaQConfig", "DynaQAgent", "run_episodes", "run_steps", "plot_dyna_maze",
           "plot_cumulative_reward"]


@dataclass(frozen=True)
class TabularDynaQConfig(Config):
    """Tabular Dyna-Q / Dyna-Q+ (the defaults are Figure 8.2's: n = 5, epsilon = 0.1, alpha = 0.1, gamma = 0.95)."""

    planning_steps: int = param(5, "n: simulated Q-learning updates per real step (0: plain Q-learning)", ge=0)
    epsilon: float = param(0.1, "probability of a uniformly random action", ge=0.0, le=1.0)
    step_size: float = param(0.1, "alpha: Q-learning step size", gt=0.0, le=1.0)
    gamma: float = param(0.95, "discount", ge=0.0, le=1.0)
    kappa: float = param(0.0, "Dyna-Q+ exploration bonus kappa * sqrt(tau) in planning (0: plain Dyna-Q)",
                         ge=0.0)
    episodes: int = param(50, "episodes per run of run_episodes", ge=1)
    max_steps_per_episode: int = param(100_000, "an episode that has not reached the goal ends here", ge=1)
    seed: int = param(0, "seed of the random generator when none is passed", ge=0)


class DynaQAgent:
    """The Q table, the deterministic model and the Dyna-Q(+) updates for one run."""

    def __init__(self, n_states: int, n_actions: int, cfg: TabularDynaQConfig, rng: np.random.Generator):
        self.cfg, self.rng = cfg, rng
        self.n_actions = n_actions
        self._q = [[0.0] * n_actions for _ in range(n_states)]
        # The model: next state, reward, terminal flag and the real step (time) of the last try.
        self._next = [[s] * n_actions for s in range(n_states)]
        self._reward = [[0.0] * n_actions for _ in range(n_states)]
        self._done = [[False] * n_actions for _ in range(n_states)]
        self._last = [[0] * n_actions for _ in range(n_states)]
        self._states: list[int] = []  # previously observed states, in order of first visit
        self._actions: list[list[int]] = [[] for _ in range(n_states)]  # actions the planner may pick in s
        self.time = 0  # real steps taken

    @property
    def q(self) -> np.ndarray:
        """The Q table, ``(n_states, n_actions)`` (a copy)."""
        return np.array(self._q)

    def act(self, state: int) -> int:
        """Epsilon-greedy on Q, ties among the greedy actions broken uniformly at random."""
        u, v = self.rng.random(2)
        if u < self.cfg.epsilon:
            return int(v * self.n_actions)
        qs = self._q[state]
        best = max(qs)
        ties = [a for a in range(self.n_actions) if qs[a] == best]
        return ties[int(v * len(ties))]

    def greedy_action(self, state: int) -> int:
        """argmax Q, the first of ties (for a reproducible greedy path)."""
        qs = self._q[state]
        return qs.index(max(qs))

    def observe(self, s: int, a: int, r: float, s2: int, done: bool) -> None:
        """One real transition: direct Q-learning update, model update, then the planning updates."""
        cfg = self.cfg
        q, alpha, gamma = self._q, cfg.step_size, cfg.gamma
        self.time += 1
        target = r if done else r + gamma * max(q[s2])
        q[s][a] += alpha * (target - q[s][a])
        if not self._actions[s]:
            self._states.append(s)
            if cfg.kappa > 0:  # Dyna-Q+: untried actions are planned as "stay, reward 0"
                self._actions[s] = list(range(self.n_actions))
                for b in range(self.n_actions):
                    self._next[s][b] = s
        if a not in self._actions[s]:
            self._actions[s].append(a)
        self._next[s][a], self._reward[s][a], self._done[s][a], self._last[s][a] = s2, r, done, self.time
        self.plan(cfg.planning_steps)

    def plan(self, n: int) -> None:
        """``n`` Q-learning updates on model transitions from random observed (state, action) pairs."""
        if n <= 0:
            return
        q, alpha, gamma, kappa = self._q, self.cfg.step_size, self.cfg.gamma, self.cfg.kappa
        states, actions, time = self._states, self._actions, self.time
        u = self.rng.random((n, 2)).tolist()
        for us, ua in u:
            s = states[int(us * len(states))]
            acts = actions[s]
            a = acts[int(ua * len(acts))]
            r = self._reward[s][a]
            if kappa:
                r += kappa * math.sqrt(time - self._last[s][a])
            target = r if self._done[s][a] else r + gamma * max(q[self._next[s][a]])
            q[s][a] += alpha * (target - q[s][a])

    def run_episode(self, maze: GridMaze) -> int:
        """One episode from the start cell; the number of steps taken."""
        s, steps = maze.start_state, 0
        while steps < self.cfg.max_steps_per_episode:
            a = self.act(s)
            s2, r, done = maze.step(s, a)
            self.observe(s, a, r, s2, done)
            steps += 1
            if done:
                break
            s = s2
        return steps

    def greedy_path_length(self, maze: GridMaze, limit: int = 1000) -> int | None:
        """Steps the greedy policy takes from the start to the goal, None if it has not got there in ``limit``."""
        s = maze.start_state
        for steps in range(1, limit + 1):
            s, _, done = maze.step(s, self.greedy_action(s))
            if done:
                return steps
        return None


def _rng(cfg: TabularDynaQConfig, rng: np.random.Generator | int | None) -> np.random.Generator:
    return np.random.default_rng(cfg.seed if rng is None else rng)


def run_episodes(maze: GridMaze, cfg: TabularDynaQConfig, rng: np.random.Generator | int | None = None,
                 agent: DynaQAgent | None = None) -> np.ndarray:
    """Figure 8.2: ``cfg.episodes`` episodes of Dyna-Q on ``maze``; steps per episode, ``(episodes,)`` int."""
    agent = agent or DynaQAgent(maze.n_states, maze.n_actions, cfg, _rng(cfg, rng))
    return np.array([agent.run_episode(maze) for _ in range(cfg.episodes)], dtype=np.int64)


def run_steps(maze: ChangingMaze | GridMaze, cfg: TabularDynaQConfig, total_steps: int,
              rng: np.random.Generator | int | None = None, agent: DynaQAgent | None = None) -> np.ndarray:
    """Figures 8.4/8.5: ``total_steps`` real steps of Dyna-Q(+), episodes restarting at the start cell;
    the cumulative reward after each step, ``(total_steps,)`` float.

    A :class:`ChangingMaze` switches when the cumulative step count reaches ``switch_at``, even in
    mid-episode (an agent standing where a wall appears just steps out of it).
    """
    first = maze.at(0) if isinstance(maze, ChangingMaze) else maze
    agent = agent or DynaQAgent(first.n_states, first.n_actions, cfg, _rng(cfg, rng))
    cumulative = np.zeros(total_steps)
    total, s, ep_steps = 0.0, first.start_state, 0
    for t in range(total_steps):
        current = maze.at(t) if isinstance(maze, ChangingMaze) else maze
        a = agent.act(s)
        s2, r, done = current.step(s, a)
        agent.observe(s, a, r, s2, done)
        total += r
        cumulative[t] = total
        ep_steps += 1
        if done or ep_steps >= cfg.max_steps_per_episode:
            s, ep_steps = current.start_state, 0
        else:
            s = s2
    return cumulative


def _mean_curve(curve: np.ndarray) -> np.ndarray:
    curve = np.asarray(curve, dtype=float)
    return curve.mean(axis=0) if curve.ndim == 2 else curve


def plot_dyna_maze(results: dict[int, np.ndarray], path: str | Path) -> Path:
    """Figure 8.2: steps per episode for each number of planning steps n (``results[n]``: one run
    ``(episodes,)`` or several ``(runs, episodes)``, averaged); saved to ``path`` (atomically)."""
    from rtmpc.configs.plots import pyplot, save_png

    fig, ax = pyplot().subplots(figsize=(6, 4), dpi=100)
    for n in sorted(results):
        curve = _mean_curve(results[n])
        ax.plot(np.arange(1, len(curve) + 1), curve, label=f"{n} planning steps" + (" (direct RL only)" if n == 0
                                                                                     else ""))
    ax.set_xlabel("episodes")
    ax.set_ylabel("steps per episode")
    ax.set_title("Dyna Maze (Sutton & Barto Figure 8.2)")
    ax.legend()
    fig.tight_layout()
    return save_png(fig, path)


def plot_cumulative_reward(results: dict[str, np.ndarray], path: str | Path, *, switch_at: int | None = None,
                           title: str = "Changing maze (Sutton & Barto Figures 8.4 / 8.5)") -> Path:
    """Figures 8.4/8.5: cumulative reward per time step for each method (``results[name]``: one run
    or ``(runs, steps)``, averaged), a dotted line where the maze changes; saved to ``path``."""
    from rtmpc.configs.plots import pyplot, save_png

    fig, ax = pyplot().subplots(figsize=(6, 4), dpi=100)
    for name, curve in results.items():
        curve = _mean_curve(curve)
        ax.plot(np.arange(1, len(curve) + 1), curve, label=name)
    if switch_at is not None:
        ax.axvline(switch_at, color="gray", linestyle=":", label="maze changes")
    ax.set_xlabel("time steps")
    ax.set_ylabel("cumulative reward")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return save_png(fig, path)
