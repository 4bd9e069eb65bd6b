"""Episode collection, shared by every family's trainer."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from .buffer import ReplayBuffer

__all__ = ["collect_episode"]


def collect_episode(env, act: Callable[[np.ndarray], np.ndarray], buffer: ReplayBuffer | None, episode: int, seed: int,
                on_step: Callable[[], bool] | None = None) -> tuple[float, int, list[float]]:
    """One episode of ``act(obs) -> action`` in ``env``, each transition added to ``buffer``
    (None: kept nowhere, an evaluation) as episode ``episode``; returns (return, agent steps,
    act times in ms). ``on_step()`` after each step returns True to stop early (a step budget)."""
    obs, _ = env.reset(seed=seed)
    total, steps, times = 0.0, 0, []
    for _ in range(env.spec.episode_steps):
        t0 = time.perf_counter()
        a = act(obs)
        times.append(1e3 * (time.perf_counter() - t0))
        next_obs, reward, terminated, truncated, _ = env.step(a)
        if buffer is not None:
            buffer.add(obs, a, reward, next_obs, terminated, episode)
        total += reward
        steps += 1
        obs = next_obs
        stop = on_step() if on_step is not None else False
        if terminated or truncated or stop:
            break
    return total, steps, times
