"""The planners: a planner's name (a config's ``kind``) -> its class and its config class.

``make_planner(config, model, rng)`` builds the planner ``config`` names, and
``planner_config(kind, **fields)`` its config; a trained actor (a Policy, not a
RolloutModel) gets the :class:`PolicyRunner` whatever the kind, so every model family
reaches the robot through the same loop. Adding a planner is a class with a
``config_class`` and a line here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from rtmpc.configs import ConfigError
from rtmpc.models.base import Policy, RolloutModel
from rtmpc.planners.base import Planner, PlannerConfig
from rtmpc.planners.cem import CEM
from rtmpc.planners.mppi import MPPI
from rtmpc.planners.policy import PolicyRunner

__all__ = ["PLANNERS", "names", "config_class", "planner_config", "with_kind", "make_planner"]

PLANNERS: dict[str, type[Planner]] = {"cem": CEM, "mppi": MPPI}


def names() -> tuple[str, ...]:
    return tuple(PLANNERS)


def config_class(kind: str, where: str = "kind") -> type[PlannerConfig]:
    """The config class of planner ``kind`` (a ConfigError naming the planners if none)."""
    try:
        return PLANNERS[kind].config_class
    except (KeyError, TypeError):
        raise ConfigError(f"{where} = {kind!r} is not a planner: choose one of {', '.join(PLANNERS)}") from None


def planner_config(kind: str = "cem", **fields: Any) -> PlannerConfig:
    """Planner ``kind``'s config with ``fields`` (the others at their defaults)."""
    return config_class(kind)(**fields)


def with_kind(config: PlannerConfig, kind: str, **changes: Any) -> PlannerConfig:
    """``config`` as planner ``kind``'s config with ``changes``: the shared fields carry over,
    the old planner's own ones are dropped and the new one's take their defaults."""
    if kind == config.kind:
        return config.replace(**changes)
    shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(PlannerConfig) if f.name != "kind"}
    return planner_config(kind, **{**shared, **changes})


def make_planner(config: PlannerConfig, model: RolloutModel | Policy,
                 rng: np.random.Generator | int | None = None) -> Planner:
    """The planner named by ``config.kind``, built over ``model`` with generator/seed ``rng``;
    for a Policy, its runner."""
    if isinstance(model, Policy):
        return PolicyRunner(model)
    if not isinstance(config, PlannerConfig):
        raise TypeError(f"config should be a PlannerConfig, got {type(config).__name__}")
    return PLANNERS[config.kind](config, model, rng)
