"""Data for the analysis: episodes collected in the simulator, cut into open-loop windows."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
from rtmpc.models.base import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trajectory:
    """One episode: obs (T+1, O), act (T, A), reward (T,), states (T+1, S) physics states
    or None, source: a label ("controller", "random") for per-source results, terminated:
    the task ended the episode (nothing follows), as opposed to a time limit or a cap."""

    obs: np.ndarray
    act: np.ndarray
    reward: np.ndarray
    states: np.ndarray | None = None
    source: str = ""
    terminated: bool = False

    def __post_init__(self) -> None:
        t = len(self.act)
        if self.obs.shape[0] != t + 1 or self.reward.shape != (t,) or (
                self.states is not None and self.states.shape[0] != t + 1):
            raise ValueError(f"trajectory shapes disagree: obs {self.obs.shape} (want T+1 rows), act "
                             f"{self.act.shape}, reward {self.reward.shape}, states "
                             f"{None if self.states is None else self.states.shape}")


def collect_trajectory(env, policy: Callable[[np.ndarray], np.ndarray], seed: int, steps: int = 0,
                       source: str = "") -> Trajectory:
    """Run ``policy(obs) -> action (A,)`` in ``env`` (a sim.Env) for one episode.

    steps: cap on steps (0 = the task's episode); the episode also ends when the task
    terminates or truncates. Physics states are kept (``env.get_state()``) before every step,
    where the task has them (None otherwise).
    """
    from rtmpc.sim.base import TaskError

    obs, _ = env.reset(seed=seed)
    cap = steps or env.spec.episode_steps
    try:
        first = env.get_state()
    except TaskError:  # a task without a physics state (a non-MuJoCo Gymnasium env): no states kept
        first = None
    o, a, r, s = [obs], [], [], [first]
    terminated = False
    for _ in range(cap):
        act = np.asarray(policy(obs), dtype=np.float64).reshape(-1)
        act = np.clip(act, env.spec.action_low, env.spec.action_high)
        obs, reward, terminated, truncated, _ = env.step(act)
        o.append(obs)
        a.append(act)
        r.append(reward)
        s.append(env.get_state() if first is not None else None)
        if terminated or truncated:
            break
    return Trajectory(np.asarray(o, np.float64), np.asarray(a, np.float64), np.asarray(r, np.float64),
                      np.asarray(s, np.float64) if first is not None else None, source, bool(terminated))


@dataclass(frozen=True)
class Windows:
    """N open-loop windows of H steps, cut from trajectories.

    obs0 (N, O): o_t; prev_obs (N, O): o_{t-1}; actions (N, H, A): a_t .. a_{t+H-1};
    true_obs (N, H, O): o_{t+1} .. o_{t+H}; true_reward (N, H): r_t .. r_{t+H-1};
    prev_reward (N, 2): r_{t-1}, r_{t-2}; states0 (N, S) physics states at t or None;
    source (N,) labels; true_value (N, H) or None: the discounted return-to-go from
    o_{t+k}, ``sum_{j>=0} gamma^j r_{t+k+j}`` up to the end of the episode; value_ok (N,)
    or None: the windows whose return-to-go is a fair target for a value estimate (from a
    source that follows the controller's policy, and either the episode terminated or what
    the time limit cut off weighs ``gamma^(T-t-H) <= VALUE_TAIL``).
    """

    obs0: np.ndarray
    prev_obs: np.ndarray
    actions: np.ndarray
    true_obs: np.ndarray
    true_reward: np.ndarray
    prev_reward: np.ndarray
    states0: np.ndarray | None
    source: np.ndarray
    true_value: np.ndarray | None = None
    value_ok: np.ndarray | None = None

    @property
    def n(self) -> int:
        return self.obs0.shape[0]

    @property
    def horizon(self) -> int:
        return self.actions.shape[1]

    def select(self, mask: np.ndarray) -> "Windows":
        """The windows where ``mask`` (N,) is true."""
        return Windows(*(None if v is None else v[mask] for v in (
            self.obs0, self.prev_obs, self.actions, self.true_obs, self.true_reward, self.prev_reward,
            self.states0, self.source, self.true_value, self.value_ok)))


VALUE_TAIL = 0.05
"""Largest weight ``gamma^(steps cut off)`` of the return a time limit removed from a value target."""


def make_windows(trajectories: list[Trajectory], horizon: int, stride: int = 1, gamma: float | None = None,
                 value_sources: tuple[str, ...] | None = None) -> Windows:
    """Every window of ``horizon`` steps starting at t = 2, 2 + stride, ... (t >= 2 so that the
    baselines have o_{t-1}, r_{t-1} and r_{t-2}); a ModelError if there is none. With
    ``gamma`` the windows carry the true discounted return-to-go (value targets), fair
    (``value_ok``) in the windows of ``value_sources`` (None: every source) whose episode
    terminated or went on long enough after the window (see :data:`VALUE_TAIL`)."""
    if horizon < 1 or stride < 1:
        raise ValueError(f"horizon = {horizon} and stride = {stride} must be >= 1")
    keys = ("obs0", "prev", "act", "obs", "rew", "prev_r", "states", "src", "value", "value_ok")
    parts: dict[str, list] = {k: [] for k in keys}
    with_states = all(tr.states is not None for tr in trajectories)
    for tr in trajectories:
        t_steps = len(tr.act)
        if gamma is not None:  # to_go[i] = sum_{j>=0} gamma^j r_{i+j}
            to_go = np.zeros(t_steps + 1)
            for i in range(t_steps - 1, -1, -1):
                to_go[i] = tr.reward[i] + gamma * to_go[i + 1]
        for t in range(2, t_steps - horizon + 1, stride):
            parts["obs0"].append(tr.obs[t])
            parts["prev"].append(tr.obs[t - 1])
            parts["act"].append(tr.act[t:t + horizon])
            parts["obs"].append(tr.obs[t + 1:t + horizon + 1])
            parts["rew"].append(tr.reward[t:t + horizon])
            parts["prev_r"].append(tr.reward[[t - 1, t - 2]])
            if with_states:
                parts["states"].append(tr.states[t])
            parts["src"].append(tr.source)
            if gamma is not None:
                parts["value"].append(to_go[t + 1:t + horizon + 1])
                fair_source = value_sources is None or tr.source in value_sources
                cut = gamma ** (t_steps - t - horizon) if gamma < 1.0 else 1.0
                parts["value_ok"].append(fair_source and (tr.terminated or cut <= VALUE_TAIL))
    if not parts["obs0"]:
        longest = max((len(tr.act) for tr in trajectories), default=0)
        raise ModelError(f"no window of {horizon} steps fits in the episodes (longest {longest} steps, and a "
                         f"window starts at step 2): lower --horizon or run longer episodes")
    return Windows(np.asarray(parts["obs0"]), np.asarray(parts["prev"]), np.asarray(parts["act"]),
                   np.asarray(parts["obs"]), np.asarray(parts["rew"]), np.asarray(parts["prev_r"]),
                   np.asarray(parts["states"]) if with_states else None, np.asarray(parts["src"]),
                   np.asarray(parts["value"]) if gamma is not None else None,
                   np.asarray(parts["value_ok"], bool) if gamma is not None else None)
