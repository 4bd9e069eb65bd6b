"""Sampling-based MPC planners over a RolloutModel: CEM and MPPI.

``make_planner(config, model, rng)`` builds the planner that ``config.kind`` names;
a trained actor (a Policy, not a RolloutModel) gets the :class:`PolicyRunner` whatever the
kind, so every model family reaches the robot through the same loop;
``plan(obs) -> action (A,)``, ``planned_actions() -> (H, A)``, ``reset()``.
Imports numpy and numba only, never torch.
"""

from __future__ import annotations

import numpy as np
from rtmpc.configs import ConfigError
from rtmpc.models.base import Policy, RolloutModel
from rtmpc.planners.base import Planner, PlannerConfig, PlanStats
from rtmpc.planners.cem import CEM
from rtmpc.planners.mppi import MPPI
from rtmpc.planners.policy import PolicyRunner

__all__ = ["PlannerConfig", "Planner", "PlanStats", "CEM", "MPPI", "PolicyRunner", "PLANNERS", "make_planner"]

PLANNERS: dict[str, type[Planner]] = {"cem": CEM, "mppi": MPPI}


def make_planner(config: PlannerConfig, model: RolloutModel | Policy,
                 rng: np.random.Generator | int | None = None) -> Planner:
    """The planner named by ``config.kind``, built over ``model`` with generator/seed ``rng``;
    for a Policy, its runner."""
    if isinstance(model, Policy):
        return PolicyRunner(model)
    try:
        cls = PLANNERS[config.kind]
    except KeyError:
        raise ConfigError(f"kind = {config.kind!r} is not a planner: choose one of "
                          f"{', '.join(PLANNERS)}") from None
    return cls(config, model, rng)
