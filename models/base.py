"""The seam between models and planners: a :class:`RolloutModel`.

Imports numpy only: planners and the deployed controller depend on this module and
never on torch.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ModelDims", "RolloutModel", "ModelError", "meta_value"]


class ModelError(ValueError):
    """A model file or its inputs are wrong; the message says what and how to fix it."""


def meta_value(meta: dict[str, str], key: str, parse: Callable[[str], Any], source: str) -> Any:
    """``parse(meta[key])`` from a model file's metadata; a missing or unparsable value is a
    one-line ModelError naming the file (``source``) and the key."""
    if key not in meta:
        raise ModelError(f"model file {source} lacks metadata key {key!r}: export it again")
    try:
        return parse(meta[key])
    except (ValueError, TypeError) as err:
        raise ModelError(f"model file {source} has a bad {key!r} in its metadata ({err})") from None


@dataclass(frozen=True)
class ModelDims:
    """Sizes and bounds a planner needs, read from the model file.

    obs_dim: O, act_dim: A, latent_dim: Z (0 for a model that plans in observation
    space), action_low/high: (A,) bounds, gamma: discount per model step.
    """

    obs_dim: int
    act_dim: int
    action_low: np.ndarray
    action_high: np.ndarray
    latent_dim: int = 0
    gamma: float = 1.0
    kind: str = "pets"
    meta: dict = field(default_factory=dict, compare=False)


class RolloutModel(abc.ABC):
    """Predicts the return of K action sequences from one observation.

    ``rollout(obs0 (O,), actions (K, H, A)) -> returns (K,)``: discounted predicted
    return of each sequence, terminal value included where the model has one.
    Non-finite predictions are returned as they are (the planner scores them -inf).
    The returned array, and :attr:`disagreement`, belong to the model and are
    overwritten by the next call: copy what you keep.
    """

    dims: ModelDims

    @abc.abstractmethod
    def rollout(self, obs0: np.ndarray, actions: np.ndarray) -> np.ndarray:
        ...

    @property
    def disagreement(self) -> np.ndarray | None:
        """(K, H) per-step ensemble disagreement of the last rollout, or None."""
        return None

    @property
    def has_prior(self) -> bool:
        return False

    def prior_actions(self, obs0: np.ndarray, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        """(n, H, A) action sequences from the model's policy prior (TD-MPC models)."""
        raise NotImplementedError(f"{type(self).__name__} has no policy prior")

    def check_obs(self, obs0: np.ndarray) -> np.ndarray:
        """obs0 as a float32 (O,) array, or a ModelError saying what is wrong."""
        obs = np.asarray(obs0, dtype=np.float32).reshape(-1)
        if obs.shape[0] != self.dims.obs_dim:
            raise ModelError(f"observation has {obs.shape[0]} entries but the model expects "
                             f"{self.dims.obs_dim}: was it trained on another task?")
        if not np.all(np.isfinite(obs)):
            raise ModelError(f"observation is not finite: {obs.tolist()}")
        return obs
