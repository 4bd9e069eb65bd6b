"""The planner interface and its typed configs.

A planner is built once from its config, a RolloutModel and a random generator,
allocates every buffer then, and afterwards only plans: ``plan(obs) -> action (A,)``,
``reset()`` at the start of an episode.

Configs: :class:`PlannerConfig` holds what every sampling planner shares; each planner
has its own subclass with its own fields and checks (:class:`CEMConfig`,
:class:`MPPIConfig`). A mapping loaded into a ``PlannerConfig`` field (a run config's
``planner:`` section) builds the subclass its ``kind`` names, through
:mod:`rtmpc.planners.registry`.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from rtmpc.configs import Config, ConfigError, param

__all__ = ["PlannerConfig", "CEMConfig", "MPPIConfig", "Planner", "PlanStats"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannerConfig(Config):
    """What every sampling-based planner shares. Build a planner's own config
    (:class:`CEMConfig`, :class:`MPPIConfig`, or ``planners.registry.planner_config(kind, ...)``);
    this base class is the type of a run config's ``planner`` section."""

    kind: str = param("cem", "which planner (rtmpc.planners.registry): cem (cross-entropy method) "
                             "or mppi (path integral)")
    horizon: int = param(25, "planning horizon H in model steps", ge=1, le=1000)
    samples: int = param(400, "action sequences K evaluated per iteration", ge=2, le=1_000_000)
    iterations: int = param(4, "refinement iterations per plan", ge=1, le=100)
    elites: int = param(40, "top sequences the mean/std are refitted to (MPPI: 0 = all)", ge=0)
    alpha: float = param(0.1, "momentum: weight of the old mean/std in each update", ge=0.0, lt=1.0)
    init_std: float = param(0.5, "initial sampling std, as a fraction of half the action range",
                            gt=0.0, le=10.0)
    min_std: float = param(0.05, "lower bound of the sampling std (fraction of half range)",
                           ge=0.0, le=10.0)
    noise_beta: float = param(0.0, "temporal correlation of the sampling noise: 0 white, "
                                   "towards 1 smoother (AR(1) coefficient)", ge=0.0, lt=1.0)
    disagreement_penalty: float = param(0.0, "return penalty per unit of summed ensemble "
                                             "disagreement", ge=0.0)
    smoothness_cost: float = param(0.0, "return penalty per unit of squared action change",
                                   ge=0.0)
    prior_samples: int = param(0, "sequences drawn from the model's policy prior (TD-MPC)",
                               ge=0)
    warm_start: bool = param(True, "start each plan from the last plan shifted by one step")

    @classmethod
    def tagged(cls, data: Mapping[str, Any], where: str) -> tuple[type, dict[str, Any]]:
        """The planner config class ``data["kind"]`` names (default: ``cls``'s own kind), and
        ``data`` without the keys only another planner's config has (each one a warning:
        configs saved before planners had their own configs carry MPPI's temperature under
        CEM)."""
        from rtmpc.planners import registry

        data = dict(data)
        default = cls.__dataclass_fields__["kind"].default
        kind = data.get("kind", default)
        target = registry.config_class(kind, where=f"{where}kind")
        if not issubclass(target, cls):
            raise ConfigError(f"{where}kind = {kind!r} but this is a {cls.__name__}: set kind: "
                              f"{default} or use {target.__name__}")
        own = {f.name for f in dataclasses.fields(target)}
        for key in sorted(set(data) - own):
            owners = [k for k in registry.names() if key in registry.config_class(k).field_names()]
            if owners:
                logger.warning("%s%s applies to %s only; the %s planner ignores it (remove it from the config)",
                               where, key, " and ".join(owners), kind)
                del data[key]
        return target, data

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def check(self) -> None:
        if type(self) is PlannerConfig:
            raise ConfigError("PlannerConfig is the shared part of every planner's config: build "
                              "CEMConfig, MPPIConfig or planners.registry.planner_config(kind, ...)")
        if self.elites > self.samples:
            raise ConfigError(f"elites = {self.elites} is more than samples = {self.samples}: "
                              f"lower elites or raise samples")
        if self.prior_samples >= self.samples:
            raise ConfigError(f"prior_samples = {self.prior_samples} must be below "
                              f"samples = {self.samples}")
        if self.min_std > self.init_std:
            raise ConfigError(f"min_std = {self.min_std} is above init_std = {self.init_std}")


@dataclass(frozen=True)
class CEMConfig(PlannerConfig):
    """The cross-entropy method (:class:`rtmpc.planners.cem.CEM`): the elites weigh the same."""

    kind: str = param("cem", "which planner: cem", choices=("cem",))

    def check(self) -> None:
        super().check()
        if self.elites < 2:
            raise ConfigError(f"elites = {self.elites} is too few for CEM: use at least 2")


@dataclass(frozen=True)
class MPPIConfig(PlannerConfig):
    """Model predictive path integral control (:class:`rtmpc.planners.mppi.MPPI`): the elites
    weigh exponentially in their return; ``elites: 0`` weighs every sample."""

    kind: str = param("mppi", "which planner: mppi", choices=("mppi",))
    temperature: float = param(0.5, "temperature of the exponential weights, in units of the "
                                    "elites' return spread", gt=0.0)


@dataclass
class PlanStats:
    """What the last plan found (read by telemetry; overwritten by each plan)."""

    predicted_return: float = float("nan")  # best sample score (penalties included) of the last iteration
    disagreement: float = float("nan")  # summed disagreement of the chosen sequence, if any
    nonfinite: int = 0  # rollouts scored -inf in the last plan
    nonfinite_total: int = 0  # since construction
    no_plan: bool = False  # the last plan found no finite prediction: its action and plan are NaN


class Planner(abc.ABC):
    """Receding-horizon planner over a RolloutModel.

    ``plan(obs) -> action (A,)`` returns a fresh array inside the action bounds.
    ``planned_actions() -> (H, A)`` is the current plan (row 0 is the action just
    returned, row 1 the next one: the fallback when the next plan is late).
    ``plan(obs, first_action)`` (first_action (A,), H >= 2) plans for a controller that
    commits actions one period ahead: ``first_action`` is already committed for the
    current period, so row 0 of every sampled sequence (and of the plan) is fixed to it
    (clipped to the bounds), and the action returned is row 1, the one for the next
    period; ``planned_actions()`` is then (first_action, returned action, ...).
    ``reset()`` forgets the warm start (new episode). Not thread-safe: one caller.
    """

    stats: PlanStats

    @abc.abstractmethod
    def plan(self, obs: np.ndarray, first_action: np.ndarray | None = None) -> np.ndarray:
        ...

    @abc.abstractmethod
    def planned_actions(self) -> np.ndarray:
        ...

    @abc.abstractmethod
    def reset(self) -> None:
        ...
