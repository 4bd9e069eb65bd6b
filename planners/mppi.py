"""Model predictive path integral control (MPPI) over action sequences.

MPPI (Williams et al. 2017, "Information Theoretic MPC for Model-Based Reinforcement
Learning") averages the sampled sequences (K x H x A) with exponential weights of their
returns. As in TD-MPC2 (Hansen et al. 2024), the average runs over the top E sequences
only (``config.elites``; 0 = all K) and both the mean and the std (H x A) are refitted,
with momentum ``alpha`` and a floor ``min_std``.

Temperature: the weights are ``exp((s - s_max) / (temperature * (s_max - s_min)))`` over
the elites' finite scores s, i.e. ``config.temperature`` is in units of the elites' return
spread: the worst elite weighs ``exp(-1 / temperature)`` of the best (0.5 -> e^-2),
whatever the scale of the model's returns. (TD-MPC2 writes ``exp(temperature * (s -
s_max))`` on raw returns, so its temperature is an inverse one in return units.)
Sampling, scoring and warm start live in :class:`planners.trajectory.TrajectoryPlanner`.
"""

from __future__ import annotations

from rtmpc.planners import kernels
from rtmpc.planners.base import MPPIConfig
from rtmpc.planners.trajectory import TrajectoryPlanner

__all__ = ["MPPI"]


class MPPI(TrajectoryPlanner):
    """MPPI planner: ``MPPI(config, model, rng)`` with an :class:`MPPIConfig`.

    With ``config.prior_samples`` n > 0 (TD-MPC models), n sequences from
    ``model.prior_actions`` (drawn once per plan, as in TD-MPC2) are the first n
    samples of every iteration.
    ``plan`` returns row 0 of the final (weighted) mean.
    """

    kind = "mppi"
    config_class = MPPIConfig

    def __init__(self, config: MPPIConfig, model, rng=None):
        self._temperature = float(getattr(config, "temperature", 0.0))  # checked by the base
        super().__init__(config, model, rng)

    def _weigh_elites(self) -> float:
        kernels.select_elites(self._scores, self._n_elite, self._idx)
        return kernels.exponential_weights(self._scores, self._idx, self._n_elite,
                                           self._temperature, self._weights)
