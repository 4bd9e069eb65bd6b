"""Cross-entropy method (CEM) over action sequences.

The cross-entropy method of Rubinstein (1999), as used for model-based control by PETS
(Chua et al. 2018, "Deep Reinforcement Learning in a Handful of Trials using Probabilistic
Dynamics Models"): each iteration samples K sequences (K x H x A) from a diagonal Gaussian,
keeps the E best by predicted return, and refits the Gaussian (H x A) to them with
momentum ``alpha`` and a floor ``min_std``. Sampling, scoring and warm start live in
:class:`planners.trajectory.TrajectoryPlanner`.
"""

from __future__ import annotations

from rtmpc.planners import kernels
from rtmpc.planners.base import CEMConfig
from rtmpc.planners.trajectory import TrajectoryPlanner

__all__ = ["CEM"]


class CEM(TrajectoryPlanner):
    """CEM planner: ``CEM(config, model, rng)`` with a :class:`CEMConfig`.

    Elites (``config.elites`` E >= 2) weigh the same; elites scored -inf (diverged
    rollouts) weigh 0. ``plan`` returns row 0 of the final mean.
    """

    kind = "cem"
    config_class = CEMConfig

    def _weigh_elites(self) -> float:
        kernels.select_elites(self._scores, self._n_elite, self._idx)
        return kernels.uniform_weights(self._scores, self._idx, self._n_elite, self._weights)
