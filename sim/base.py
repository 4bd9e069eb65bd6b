"""The simulation interface: a task spec and an environment with Gymnasium step semantics."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TaskSpec", "Env", "TaskError"]


class TaskError(ValueError):
    """A task name, MJCF file or task cost is wrong; the message says what exists."""


@dataclass(frozen=True)
class TaskSpec:
    """What a controller and a model need to know about a task.

    All sizes count the agent's steps, i.e. after action repeat: one step applies one
    action for ``action_repeat`` physics control steps and lasts ``control_period`` s.
    """

    name: str
    obs_dim: int
    act_dim: int
    action_low: np.ndarray  # (A,)
    action_high: np.ndarray  # (A,)
    control_period: float  # seconds per agent step (action repeat included)
    episode_steps: int  # agent steps per episode
    action_repeat: int = 1
    obs_names: tuple[str, ...] = ()  # one label per observation entry, in order
    reward_range: tuple[float, float] = (0.0, 1.0)  # per agent step

    @property
    def rate_hz(self) -> float:
        return 1.0 / self.control_period

    @property
    def safe_action(self) -> np.ndarray:
        """The action a robot falls back to: zero where zero is allowed, else the middle."""
        zero = np.zeros(self.act_dim)
        mid = 0.5 * (self.action_low + self.action_high)
        inside = (self.action_low <= 0) & (self.action_high >= 0)
        return np.where(inside, zero, mid)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "obs_dim": self.obs_dim, "act_dim": self.act_dim,
                "control_period": self.control_period, "rate_hz": self.rate_hz,
                "episode_steps": self.episode_steps, "action_repeat": self.action_repeat,
                "action_low": self.action_low.tolist(), "action_high": self.action_high.tolist()}


class Env(abc.ABC):
    """A MuJoCo task with Gymnasium step semantics.

    ``reset(seed=)`` starts an episode; ``step(a)`` applies action ``a`` (shape (A,),
    clipped to the spec's bounds) for ``action_repeat`` control steps and returns
    ``(obs, reward, terminated, truncated, info)``; reward is summed over the repeat.
    ``terminated`` is true only where the task really ends (a fall); ``truncated`` at
    the episode's step limit.
    """

    spec: TaskSpec

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]:
        ...

    @abc.abstractmethod
    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        ...

    @abc.abstractmethod
    def render(self, width: int = 320, height: int = 240) -> np.ndarray:
        """An RGB frame (height, width, 3) uint8 of the current state, rendered offscreen."""

    @abc.abstractmethod
    def get_state(self) -> np.ndarray:
        """The full physics state (to restore with :meth:`set_state`)."""

    @abc.abstractmethod
    def set_state(self, state: np.ndarray) -> np.ndarray:
        """Restore a physics state; returns the observation there."""

    @property
    @abc.abstractmethod
    def physics_timestep(self) -> float:
        """Seconds per physics step (for wall-clock simulation)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most envs hold nothing to free
        """Free rendering contexts and the like."""
