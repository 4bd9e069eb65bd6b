"""Sampling-based MPC planners over a RolloutModel: CEM and MPPI, each with its own config.

``make_planner(config, model, rng)`` builds the planner that ``config.kind`` names
(:mod:`rtmpc.planners.registry`); a trained actor (a Policy, not a RolloutModel) gets the
:class:`PolicyRunner` whatever the kind, so every model family reaches the robot through
the same loop; ``plan(obs) -> action (A,)``, ``planned_actions() -> (H, A)``, ``reset()``.
Imports numpy and numba only, never torch.
"""

from __future__ import annotations

from rtmpc.planners.base import CEMConfig, MPPIConfig, Planner, PlannerConfig, PlanStats
from rtmpc.planners.cem import CEM
from rtmpc.planners.mppi import MPPI
from rtmpc.planners.policy import PolicyRunner
from rtmpc.planners.registry import PLANNERS, make_planner, planner_config, with_kind

__all__ = ["PlannerConfig", "CEMConfig", "MPPIConfig", "Planner", "PlanStats", "CEM", "MPPI", "PolicyRunner",
           "PLANNERS", "make_planner", "planner_config", "with_kind"]
