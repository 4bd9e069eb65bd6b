"""Replay buffer of transitions, saved to and loaded from ``.npz`` atomically. No torch.

Each transition is ``(obs (O,), act (A,), reward, next_obs (O,), terminated, episode)``.
The arrays are preallocated and doubled when full, so adding is amortised O(1) and
never copies on every step. ``save`` writes a temporary file beside the target,
fsyncs it and renames it over the target: a killed run leaves the old file or the
new one, never a torn one.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
from rtmpc.configs.rundir import atomic_write
from rtmpc.models.base import ModelError

__all__ = ["ReplayBuffer"]

_FORMAT = 1
_FIELDS = ("obs", "act", "reward", "next_obs", "terminated", "episode")


class ReplayBuffer:
    """Transitions in growing numpy arrays.

    obs_dim: O, act_dim: A, capacity: rows allocated up front (doubled when full).
    The views :attr:`obs` (n, O), :attr:`act` (n, A), :attr:`reward` (n,),
    :attr:`next_obs` (n, O), :attr:`terminated` (n,) bool and :attr:`episode` (n,)
    int64 cover the n transitions stored so far; they are invalidated by the next
    ``add`` that grows the arrays.
    """

    def __init__(self, obs_dim: int, act_dim: int, capacity: int = 1024) -> None:
        if obs_dim < 1 or act_dim < 1:
            raise ValueError(f"obs_dim = {obs_dim} and act_dim = {act_dim} must both be >= 1")
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)
        capacity = max(int(capacity), 1)
        self._n = 0
        self._obs = np.empty((capacity, obs_dim), np.float32)
        self._act = np.empty((capacity, act_dim), np.float32)
        self._reward = np.empty(capacity, np.float32)
        self._next_obs = np.empty((capacity, obs_dim), np.float32)
        self._terminated = np.empty(capacity, np.bool_)
        self._episode = np.empty(capacity, np.int64)

    # -- size and views ---------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def capacity(self) -> int:
        return self._obs.shape[0]

    @property
    def obs(self) -> np.ndarray:
        return self._obs[: self._n]

    @property
    def act(self) -> np.ndarray:
        return self._act[: self._n]

    @property
    def reward(self) -> np.ndarray:
        return self._reward[: self._n]

    @property
    def next_obs(self) -> np.ndarray:
        return self._next_obs[: self._n]

    @property
    def terminated(self) -> np.ndarray:
        return self._terminated[: self._n]

    @property
    def episode(self) -> np.ndarray:
        return self._episode[: self._n]

    @property
    def num_episodes(self) -> int:
        """Number of distinct episode indices stored."""
        return int(np.unique(self.episode).size)

    # -- adding -----------------------------------------------------------------------
    def _reserve(self, n_more: int) -> None:
        need = self._n + n_more
        if need <= self.capacity:
            return
        cap = self.capacity
        while cap < need:
            cap *= 2
        for name in ("_obs", "_act", "_reward", "_next_obs", "_terminated", "_episode"):
            old = getattr(self, name)
            new = np.empty((cap,) + old.shape[1:], old.dtype)
            new[: self._n] = old[: self._n]
            setattr(self, name, new)

    def add(self, obs: np.ndarray, act: np.ndarray, reward: float, next_obs: np.ndarray,
            terminated: bool, episode: int) -> None:
        """Append one transition: obs (O,), act (A,), next_obs (O,)."""
        self._reserve(1)
        i = self._n
        self._obs[i] = self._check("obs", obs, self.obs_dim)
        self._act[i] = self._check("act", act, self.act_dim)
        self._next_obs[i] = self._check("next_obs", next_obs, self.obs_dim)
        self._reward[i] = reward
        self._terminated[i] = bool(terminated)
        self._episode[i] = int(episode)
        self._n += 1

    def add_batch(self, obs: np.ndarray, act: np.ndarray, reward: np.ndarray, next_obs: np.ndarray,
                  terminated: np.ndarray, episode: np.ndarray | int) -> None:
        """Append n transitions: obs (n, O), act (n, A), reward (n,), next_obs (n, O),
        terminated (n,), episode (n,) or one int for all."""
        obs = np.asarray(obs, np.float32).reshape(-1, self.obs_dim)
        n = obs.shape[0]
        act = np.asarray(act, np.float32).reshape(n, self.act_dim)
        next_obs = np.asarray(next_obs, np.float32).reshape(n, self.obs_dim)
        reward = np.asarray(reward, np.float32).reshape(n)
        terminated = np.asarray(terminated, np.bool_).reshape(n)
        episode = np.broadcast_to(np.asarray(episode, np.int64), (n,))
        self._reserve(n)
        s = slice(self._n, self._n + n)
        self._obs[s], self._act[s], self._reward[s] = obs, act, reward
        self._next_obs[s], self._terminated[s], self._episode[s] = next_obs, terminated, episode
        self._n += n

    @staticmethod
    def _check(name: str, x: np.ndarray, size: int) -> np.ndarray:
        x = np.asarray(x, np.float32).reshape(-1)
        if x.shape[0] != size:
            raise ModelError(f"{name} has {x.shape[0]} entries but the buffer stores {size}")
        return x

    # -- disk -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write every stored transition to ``path`` (.npz), atomically."""
        arrays = {name: getattr(self, name) for name in _FIELDS}
        meta = np.array([_FORMAT, self.obs_dim, self.act_dim], np.int64)
        return atomic_write(path, lambda f: np.savez(f, format=meta, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> ReplayBuffer:
        """Read a buffer written by :meth:`save`; a missing or damaged file is a ModelError."""
        p = Path(path)
        if not p.is_file():
            raise ModelError(f"replay buffer file {p} not found")
        try:
            with np.load(p, allow_pickle=False) as data:
                fmt, obs_dim, act_dim = (int(v) for v in data["format"])
                arrays = {name: data[name] for name in _FIELDS}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ModelError(f"replay buffer file {p} is damaged or not a buffer ({msg}): "
                             f"delete it or restore a backup") from None
        if fmt != _FORMAT:
            raise ModelError(f"replay buffer file {p} has format {fmt}, this rtmpc reads {_FORMAT}")
        n = arrays["obs"].shape[0]
        shapes_ok = (arrays["obs"].shape == (n, obs_dim) and arrays["next_obs"].shape == (n, obs_dim)
                     and arrays["act"].shape == (n, act_dim)
                     and all(arrays[k].shape == (n,) for k in ("reward", "terminated", "episode")))
        if not shapes_ok:
            raise ModelError(f"replay buffer file {p} has inconsistent array shapes: "
                             f"{ {k: v.shape for k, v in arrays.items()} }")
        buf = cls(obs_dim, act_dim, capacity=max(n, 1))
        buf.add_batch(**arrays)
        return buf

    def __repr__(self) -> str:
        return (f"ReplayBuffer({self._n} transitions, {self.num_episodes} episodes, "
                f"obs_dim={self.obs_dim}, act_dim={self.act_dim})")
