"""The planner interface and its typed config.

A planner is built once from a :class:`PlannerConfig`, a RolloutModel and a random
generator, allocates every buffer then, and afterwards only plans:
``plan(obs) -> action (A,)``, ``reset()`` at the start of an episode.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
from rtmpc.configs import Config, ConfigError, param

__all__ = ["PlannerConfig", "Planner", "PlanStats"]


@dataclass(frozen=True)
class PlannerConfig(Config):
    """Sampling-based MPC options. Fields marked CEM or MPPI apply to that planner only."""

    kind: str = param("cem", "which planner: cem (cross-entropy method) or mppi (path integral)",
                      choices=("cem", "mppi"))
    horizon: int = param(25, "planning horizon H in model steps", ge=1, le=1000)
    samples: int = param(400, "action sequences K evaluated per iteration", ge=2, le=1_000_000)
    iterations: int = param(4, "refinement iterations per plan", ge=1, le=100)
    elites: int = param(40, "CEM: sequences kept to refit the mean/std; MPPI: top sequences "
                            "weighted (0 = all)", ge=0)
    alpha: float = param(0.1, "momentum: weight of the old mean/std in each update", ge=0.0, lt=1.0)
    init_std: float = param(0.5, "initial sampling std, as a fraction of half the action range",
                            gt=0.0, le=10.0)
    min_std: float = param(0.05, "lower bound of the sampling std (fraction of half range)",
                           ge=0.0, le=10.0)
    temperature: float = param(0.5, "MPPI: temperature of the exponential weights, in units "
                                    "of the elites' return spread", gt=0.0)
    noise_beta: float = param(0.0, "temporal correlation of the sampling noise: 0 white, "
                                   "towards 1 smoother (AR(1) coefficient)", ge=0.0, lt=1.0)
    disagreement_penalty: float = param(0.0, "return penalty per unit of summed ensemble "
                                             "disagreement", ge=0.0)
    smoothness_cost: float = param(0.0, "return penalty per unit of squared action change",
                                   ge=0.0)
    prior_samples: int = param(0, "sequences drawn from the model's policy prior (TD-MPC)",
                               ge=0)
    warm_start: bool = param(True, "start each plan from the last plan shifted by one step")

    def check(self) -> None:
        if self.elites > self.samples:
            raise ConfigError(f"elites = {self.elites} is more than samples = {self.samples}: "
                              f"lower elites or raise samples")
        if self.kind == "cem" and self.elites < 2:
            raise ConfigError(f"elites = {self.elites} is too few for CEM: use at least 2")
        if self.prior_samples >= self.samples:
            raise ConfigError(f"prior_samples = {self.prior_samples} must be below "
                              f"samples = {self.samples}")
        if self.min_std > self.init_std:
            raise ConfigError(f"min_std = {self.min_std} is above init_std = {self.init_std}")


@dataclass
class PlanStats:
    """What the last plan found (read by telemetry; overwritten by each plan)."""

    predicted_return: float = float("nan")  # best sample score (penalties included) of the last iteration
    disagreement: float = float("nan")  # summed disagreement of the chosen sequence, if any
    nonfinite: int = 0  # rollouts scored -inf in the last plan
    nonfinite_total: int = 0  # since construction


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
