"""The policy runner: a trained actor (:class:`~rtmpc.models.base.Policy`) behind the planner
interface, so an actor reaches the robot through the same loop as CEM and MPPI.

``plan(obs) -> action (A,)`` runs the actor once and carries its recurrent state to the next
call; ``reset()`` starts the state over. ``planned_actions()`` is (2, A): row 0 the action for
this period, row 1 the fallback for the next one (the same action held: an actor has no plan
further ahead). With ``plan(obs, first_action)`` (the loop's ``commit: next``), row 0 is the
committed action and the actor's action on ``obs`` is row 1, sent next period. A discrete
actor's index is sent as it is (the task rounds it).
"""

from __future__ import annotations

import numpy as np
from rtmpc.models.base import Policy

from .base import Planner, PlanStats

__all__ = ["PolicyRunner"]


class PolicyRunner(Planner):
    """Runs ``policy`` as a planner; actions clipped to the policy's bounds."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.stats = PlanStats()
        self._low, self._high = policy.dims.action_low, policy.dims.action_high
        self._plan = np.zeros((2, policy.dims.act_dim))
        self._state = policy.initial_state()

    def plan(self, obs: np.ndarray, first_action: np.ndarray | None = None) -> np.ndarray:
        action, self._state = self.policy.act(obs, self._state)
        plan = self._plan
        np.clip(action, self._low, self._high, out=plan[1])
        if first_action is None:
            plan[0] = plan[1]
        else:
            np.clip(first_action, self._low, self._high, out=plan[0])
        self.stats.no_plan = not np.all(np.isfinite(action))  # a broken actor: the controller sends the safe action
        if self.stats.no_plan:
            self.stats.nonfinite += 1
            self.stats.nonfinite_total += 1
            plan[1:] = np.nan
        return plan[1].copy()

    def planned_actions(self) -> np.ndarray:
        return self._plan

    def reset(self) -> None:
        self._state = self.policy.initial_state()
        self._plan.fill(0.0)
        self.stats.nonfinite = 0
