"""The simulation interface: a task spec and an environment with Gymnasium step semantics."""

from __future__ import annotations

import abc
import json
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

    ``reward_range`` bounds one agent step's reward; an infinite end means the task does not
    bound it (cost tasks: (-inf, 0]; Gymnasium tasks: (-inf, inf) unless the env declares one).

    ``n_actions``: 0 for continuous actions (shape (A,) within the bounds); n > 0 for a task
    with n discrete actions (a Gymnasium ``Discrete(n)`` space): then act_dim = 1, the bounds
    are [0] and [n - 1], and the env rounds the single entry to the nearest index and clips it
    to [0, n - 1], so a continuous planner's action is always a valid choice.
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
    n_actions: int = 0  # 0: continuous; n > 0: n discrete actions, the index as action entry 0

    def __post_init__(self):
        if self.n_actions < 0:
            raise TaskError(f"task {self.name}: n_actions = {self.n_actions} must be >= 0 (0 = continuous actions)")
        if self.n_actions and (self.act_dim != 1 or np.shape(self.action_low) != (1,)
                               or np.shape(self.action_high) != (1,) or self.action_low[0] != 0
                               or self.action_high[0] != self.n_actions - 1):
            raise TaskError(f"task {self.name}: a discrete task with n_actions = {self.n_actions} needs act_dim = 1 "
                            f"and bounds [0] and [{self.n_actions - 1}], got act_dim = {self.act_dim}, bounds "
                            f"{np.asarray(self.action_low).tolist()} and {np.asarray(self.action_high).tolist()}")

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

    def model_metadata(self) -> dict[str, str]:
        """What an exported model file records of its task (ONNX metadata, strings): name,
        period, action repeat, episode length and observation names, so that a robot computer
        needs only the model file (``rtmpc control --robot``), never the simulator."""
        return {"task": self.name, "control_period": repr(self.control_period),
                "action_repeat": str(self.action_repeat), "episode_steps": str(self.episode_steps),
                "obs_names": json.dumps(list(self.obs_names))}

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary; ``n_actions`` appears only for a discrete task."""
        d = {"name": self.name, "obs_dim": self.obs_dim, "act_dim": self.act_dim,
             "control_period": self.control_period, "rate_hz": self.rate_hz,
             "episode_steps": self.episode_steps, "action_repeat": self.action_repeat,
             "action_low": self.action_low.tolist(), "action_high": self.action_high.tolist()}
        if self.n_actions:
            d["n_actions"] = self.n_actions
        return d


class Env(abc.ABC):
    """A MuJoCo task with Gymnasium step semantics.

    ``reset(seed=)`` starts an episode; ``step(a)`` applies action ``a`` (shape (A,),
    clipped to the spec's bounds; rounded to an index where ``spec.n_actions`` > 0) for
    ``action_repeat`` control steps and returns
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
