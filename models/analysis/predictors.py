"""Predictors: a model rolled open-loop over windows; each model family supplies its own
(``registry.family(kind).predictor_class()``)."""

from __future__ import annotations

import abc
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from rtmpc.models.base import ModelError

from .collect import Windows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """One predicted step for N rows (None where the model does not predict the quantity).

    reward (N,): predicted reward of the step (None for a model whose file only gives
    whole-sequence scores); obs (N, O): predicted next observation
    (None for a latent model without a decoder); obs_spread (N, O): standard deviation of
    the ensemble members' predictions (disagreement); obs_var (N, O): total predicted
    variance; reward_spread, reward_var (N,): the same for the reward; value (N,): the
    model's value estimate of the state reached (latent models with a value head); score
    (N,): the model's own score of the k steps so far, as its planner sees it (discounted
    predicted rewards plus the discounted terminal value: latent models).
    """

    reward: np.ndarray | None = None
    obs: np.ndarray | None = None
    obs_spread: np.ndarray | None = None
    obs_var: np.ndarray | None = None
    reward_spread: np.ndarray | None = None
    reward_var: np.ndarray | None = None
    value: np.ndarray | None = None
    score: np.ndarray | None = None


class Predictor(abc.ABC):
    """A model rolled open-loop: ``begin(obs0 (N, O), states0 (N, S) | None)`` starts N
    rollouts, each ``step(act (N, A)) -> Prediction`` advances them one model step.

    Stateful rather than ``predict(obs, act)`` because what a model carries between steps
    is its own business: PETS carries one state per member, a latent model a latent
    vector (encoded once from obs0), the true simulator a physics state.
    """

    obs_dim: int
    act_dim: int
    gamma: float = 1.0  # discount per model step of the returns (the model file's, where it has one)

    @abc.abstractmethod
    def begin(self, obs0: np.ndarray, states0: np.ndarray | None = None) -> None:
        ...

    @abc.abstractmethod
    def step(self, act: np.ndarray) -> Prediction:
        ...


class SimPredictor(Predictor):
    """The true dynamics as a model: each row's physics state is restored, stepped with its
    action and saved again, on one environment (rows one after another).

    Needs the physics states (``begin(obs0, states0)``): an observation does not determine
    the state in general. Exact where ``env.get_state()`` holds all that the next step
    depends on (dm_control suite tasks); not for tasks that keep per-episode randomness in
    the model itself (point-target's target). An episode end returned by a step resets the
    env before the next row (Gymnasium semantics).
    """

    def __init__(self, env) -> None:
        self.env = env
        self.obs_dim, self.act_dim = env.spec.obs_dim, env.spec.act_dim
        self._states = np.zeros((0, 0))

    def begin(self, obs0: np.ndarray, states0: np.ndarray | None = None) -> None:
        if states0 is None:
            raise ModelError("the true-dynamics predictor needs the physics states of the windows")
        self._states = np.array(states0, np.float64)
        self.env.reset()

    def step(self, act: np.ndarray) -> Prediction:
        act = np.asarray(act, np.float64).reshape(-1, self.act_dim)
        n = act.shape[0]
        obs, rew = np.empty((n, self.obs_dim)), np.empty(n)
        for i in range(n):
            self.env.set_state(self._states[i])
            obs[i], rew[i], terminated, truncated, _ = self.env.step(act[i])
            self._states[i] = self.env.get_state()
            if terminated or truncated:
                self.env.reset()
        zeros = np.zeros_like(obs)
        return Prediction(reward=rew, obs=obs, obs_spread=zeros, obs_var=zeros)


class FunctionPredictor(Predictor):
    """``fn(obs (N, O), act (N, A)) -> (next_obs (N, O), reward (N,))`` as a deterministic
    model (no disagreement): a hand-written model, a toy system in tests."""

    def __init__(self, fn: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]], obs_dim: int,
                 act_dim: int) -> None:
        self.fn, self.obs_dim, self.act_dim = fn, obs_dim, act_dim
        self._obs = np.zeros((0, obs_dim))

    def begin(self, obs0: np.ndarray, states0: np.ndarray | None = None) -> None:
        self._obs = np.array(obs0, np.float64).reshape(-1, self.obs_dim)

    def step(self, act: np.ndarray) -> Prediction:
        nxt, rew = self.fn(self._obs, np.asarray(act, np.float64).reshape(-1, self.act_dim))
        self._obs = np.asarray(nxt, np.float64).reshape(self._obs.shape)
        return Prediction(reward=np.asarray(rew, np.float64).reshape(-1), obs=self._obs.copy())


def make_predictor(path: str | os.PathLike, **options: Any) -> Predictor:
    """The predictor of the model family stored in ``path`` (its family's ``predictor``,
    :mod:`rtmpc.models.registry`); options that are None are left to the predictor's defaults."""
    from rtmpc.models.runtime import family_of, read_metadata

    family = family_of(path, read_metadata(path))
    return family.predictor_class()(path, **{k: v for k, v in options.items() if v is not None})


@dataclass(frozen=True)
class Rollouts:
    """Open-loop predictions over windows: reward (N, H); obs, obs_spread, obs_var (N, H, O),
    reward_spread, reward_var, value, score (N, H); None where the predictor gave none."""

    reward: np.ndarray | None = None
    obs: np.ndarray | None = None
    obs_spread: np.ndarray | None = None
    obs_var: np.ndarray | None = None
    reward_spread: np.ndarray | None = None
    reward_var: np.ndarray | None = None
    value: np.ndarray | None = None
    score: np.ndarray | None = None

    def select(self, mask: np.ndarray) -> "Rollouts":
        return Rollouts(*(None if v is None else v[mask] for v in (
            self.reward, self.obs, self.obs_spread, self.obs_var, self.reward_spread, self.reward_var,
            self.value, self.score)))


def predict_windows(predictor: Predictor, windows: Windows, batch: int = 1024) -> Rollouts:
    """Roll ``predictor`` open-loop over every window, ``batch`` windows at a time."""
    fields = ("reward", "obs", "obs_spread", "obs_var", "reward_spread", "reward_var", "value", "score")
    chunks: dict[str, list] = {f: [] for f in fields}
    for lo in range(0, windows.n, batch):
        hi = min(lo + batch, windows.n)
        predictor.begin(windows.obs0[lo:hi], None if windows.states0 is None else windows.states0[lo:hi])
        steps = [predictor.step(windows.actions[lo:hi, k]) for k in range(windows.horizon)]
        for f in fields:
            values = [getattr(p, f) for p in steps]
            chunks[f].append(None if any(v is None for v in values) else np.stack(values, axis=1))
    out = {f: None if any(c is None for c in chunks[f]) else np.concatenate(chunks[f]) for f in fields}
    return Rollouts(**out)
