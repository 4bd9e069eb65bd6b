"""Known termination functions of Gymnasium's MuJoCo tasks, written from their observations.

MBPO's rollouts end where the task would end the episode (jannerm/mbpo ``static/``: one
function per Gym task). These are the same tests Gymnasium 1.x's ``*-v5`` environments apply
(``is_healthy`` with the default ranges, observations without the x/y position, the default),
read off the observation of the state reached: ``done(obs (N, O), act (N, A), next_obs (N, O))
-> (N,) bool``, the interface of :class:`.rollout.TerminationStep`. Hopper's range test on the
unclipped velocities is read from the observation's velocities, which Gymnasium clips to
[-10, 10]: it cannot trip there, as it almost never does in the environment. A test checks
each against the environment's own ``terminated`` on random-action episodes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["KNOWN", "known_termination", "KnownTermination"]


def _hopper(s: np.ndarray) -> np.ndarray:  # z = obs[0] > 0.7, |angle| = |obs[1]| < 0.2, the rest in (-100, 100)
    healthy = (s[:, 0] > 0.7) & (np.abs(s[:, 1]) < 0.2) & np.all(np.abs(s[:, 1:]) < 100.0, axis=1)
    return ~healthy


def _walker2d(s: np.ndarray) -> np.ndarray:  # 0.8 < z < 2.0, -1 < angle < 1
    return ~((s[:, 0] > 0.8) & (s[:, 0] < 2.0) & (s[:, 1] > -1.0) & (s[:, 1] < 1.0))


def _ant(s: np.ndarray) -> np.ndarray:  # 0.2 <= z <= 1.0, everything finite
    return ~(np.isfinite(s).all(axis=1) & (s[:, 0] >= 0.2) & (s[:, 0] <= 1.0))


def _humanoid(s: np.ndarray) -> np.ndarray:  # 1.0 < z < 2.0
    return ~((s[:, 0] > 1.0) & (s[:, 0] < 2.0))


def _inverted_pendulum(s: np.ndarray) -> np.ndarray:  # |pole angle| > 0.2 or anything not finite
    return ~np.isfinite(s).all(axis=1) | (np.abs(s[:, 1]) > 0.2)


KNOWN = {"gym:Hopper-v5": _hopper, "gym:Walker2d-v5": _walker2d, "gym:Ant-v5": _ant,
         "gym:Humanoid-v5": _humanoid, "gym:InvertedPendulum-v5": _inverted_pendulum}


class KnownTermination:
    """``done(obs, act, next_obs) -> (N,) bool`` by the task's known function; counts as
    :class:`.rollout.TerminationStep` does."""

    def __init__(self, task: str):
        self.task, self._fn = task, KNOWN[task]
        self.calls = self.ended = 0

    def done(self, obs: np.ndarray, act: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        out = self._fn(np.asarray(next_obs))
        self.calls += len(out)
        self.ended += int(out.sum())
        return out


def known_termination(task: str) -> KnownTermination | None:
    """The known termination of ``task`` (a ``gym:ID`` name), or None when rtmpc has none."""
    return KnownTermination(task) if task in KNOWN else None
