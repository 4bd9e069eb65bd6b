"""Episode collection, shared by every family's trainer."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
from rtmpc.models.base import ModelError

from .buffer import ReplayBuffer

__all__ = ["collect_episode"]


def collect_episode(env, act: Callable[[np.ndarray], np.ndarray], buffer: ReplayBuffer | None, episode: int, seed: int,
                on_step: Callable[[], bool] | None = None) -> tuple[float, int, list[float]]:
    """One episode of ``act(obs) -> action`` in ``env``, each transition added to ``buffer``
    (None: kept nowhere, an evaluation) as episode ``episode``; returns (return, agent steps,
    act times in ms). ``on_step()`` after each step returns True to stop early (a step budget).

    A non-finite observation or reward from the task is a ModelError naming the episode and
    step, raised before that transition reaches the buffer (a trainer commits only whole
    episodes, so nothing of the episode is saved)."""
    obs, _ = env.reset(seed=seed)
    _check_finite(obs, 0.0, episode, 0, "reset")
    total, steps, times = 0.0, 0, []
    for _ in range(env.spec.episode_steps):
        t0 = time.perf_counter()
        a = act(obs)
        times.append(1e3 * (time.perf_counter() - t0))
        next_obs, reward, terminated, truncated, _ = env.step(a)
        _check_finite(next_obs, reward, episode, steps + 1, "step")
        if buffer is not None:
            buffer.add(obs, a, reward, next_obs, terminated, episode)
        total += reward
        steps += 1
        obs = next_obs
        stop = on_step() if on_step is not None else False
        if terminated or truncated or stop:
            break
    return total, steps, times


def _check_finite(obs, reward, episode: int, step: int, where: str) -> None:
    obs = np.asarray(obs)
    if math.isfinite(float(reward)) and np.all(np.isfinite(obs)):
        return
    what = f"reward {reward}" if not math.isfinite(float(reward)) else \
        f"observation entries {np.flatnonzero(~np.isfinite(obs.reshape(-1)))[:8].tolist()} = non-finite"
    label = f"episode {episode + 1}" if episode >= 0 else "an evaluation episode"
    raise ModelError(f"{label}, {where} {step}: the task returned a non-finite {what}; nothing of this "
                     f"episode was saved (check the task's reward and termination, then --resume)")
