"""The trajectory layer shared by CEM and MPPI: shapes, buffers, warm start, scoring, stats.

A :class:`TrajectoryPlanner` keeps a Gaussian over action sequences, mean and std of
shape H x A, and refines it for ``iterations`` rounds per plan. Each round:

1. sample K x H x A sequences: the policy-prior ones (if any; drawn once per plan, before
   the first round, and kept for every round, as TD-MPC2 does), the mean itself, then
   mean + std * noise (AR(1) along the horizon), clipped to the action bounds;
2. score them: ``model.rollout`` returns (K,), minus the optional disagreement and
   smoothness penalties; non-finite scores become -inf and are counted;
3. refit mean/std to the weighted elites; the subclass chooses the weights
   (:class:`planners.cem.CEM`: uniform; :class:`planners.mppi.MPPI`: exponential).

``plan`` returns row 0 of the final mean (not the best single sample: the mean
averages out the luck of one draw), or NaN (A,) when no rollout of the plan had a finite
score (the model is broken for this observation: the controller sends the safe action);
the mean, shifted by one step, warm-starts the next
plan. ``plan(obs, first_action)`` fixes row 0 of every sampled sequence (and of the
mean) to ``first_action``, the action already committed for the current period, and
returns row 1, the action for the next one (delay compensation for a controller that
commits actions one period ahead: :class:`controller.config.LoopConfig` ``commit``).
All options are resolved and all buffers allocated in the constructor, and the
kernels are compiled there too, so the first ``plan`` call pays no JIT latency.
"""

from __future__ import annotations

import abc
import logging

import numpy as np
from rtmpc.configs import ConfigError
from rtmpc.models.base import ModelError, RolloutModel
from rtmpc.planners import kernels
from rtmpc.planners.base import Planner, PlannerConfig, PlanStats

__all__ = ["TrajectoryPlanner"]

logger = logging.getLogger(__name__)


def _action_bounds(model: RolloutModel) -> tuple[np.ndarray, np.ndarray]:
    """The model's (A,) action bounds as float64, or a ModelError naming what is wrong."""
    dims = model.dims
    act_dim = int(dims.act_dim)
    if act_dim < 1:
        raise ModelError(f"model act_dim = {act_dim}: a planner needs at least one action entry")
    low = np.asarray(dims.action_low, dtype=np.float64).reshape(-1)
    high = np.asarray(dims.action_high, dtype=np.float64).reshape(-1)
    if low.shape != (act_dim,) or high.shape != (act_dim,):
        raise ModelError(f"model action bounds have {low.size} and {high.size} entries but "
                         f"act_dim = {act_dim}: the model metadata is inconsistent")
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ModelError(f"action bounds must be finite for sampling-based planning, got "
                         f"low = {low.tolist()}, high = {high.tolist()}: set them in the task spec")
    if not np.all(low < high):
        bad = int(np.argmax(~(low < high)))
        raise ModelError(f"action bound {bad}: low = {low[bad]:g} is not below high = {high[bad]:g}")
    return low, high


class TrajectoryPlanner(Planner):
    """Sampling-based planner over K x H x A action sequences; see the module docstring.

    Built as ``Planner(config, model, rng)``: ``config`` the class's ``config_class``
    (a :class:`PlannerConfig` subclass), ``model`` a RolloutModel (act_dim and action bounds are
    read from ``model.dims``), ``rng`` a numpy Generator, an int seed or None. The same
    seed and the same observations give the same actions.

    Subclasses set ``kind`` and ``config_class`` and implement :meth:`_weigh_elites`.
    """

    kind: str = ""
    config_class: type[PlannerConfig] = PlannerConfig

    def __init__(self, config: PlannerConfig, model: RolloutModel,
                 rng: np.random.Generator | int | None = None):
        if not isinstance(config, PlannerConfig):
            raise TypeError(f"config should be a PlannerConfig, got {type(config).__name__}")
        if config.kind != self.kind or not isinstance(config, self.config_class):
            raise ConfigError(f"kind = {config.kind!r} but this is a {type(self).__name__} planner: "
                              f"set kind: {self.kind} or build it with planners.make_planner")
        if not isinstance(model, RolloutModel):
            raise TypeError(f"model should be a models.base.RolloutModel, got {type(model).__name__}")
        low, high = _action_bounds(model)
        if config.prior_samples > 0 and not model.has_prior:
            raise ConfigError(f"prior_samples = {config.prior_samples} but the model "
                              f"({type(model).__name__}, kind {model.dims.kind!r}) has no policy "
                              f"prior: set prior_samples: 0")
        if config.disagreement_penalty > 0 and type(model).disagreement is RolloutModel.disagreement:
            raise ConfigError(f"disagreement_penalty = {config.disagreement_penalty:g} but the model "
                              f"({type(model).__name__}) reports no disagreement: set "
                              f"disagreement_penalty: 0 or plan over an ensemble model")

        self.config = config
        self.model = model
        self.rng = np.random.default_rng(rng)
        self.stats = PlanStats()

        # Resolved options
        K, H, A = config.samples, config.horizon, low.shape[0]
        self._shape = (K, H, A)
        self._iterations = config.iterations
        self._n_elite = config.elites if config.elites > 0 else K
        self._n_prior = config.prior_samples
        self._alpha = float(config.alpha)
        self._beta = float(config.noise_beta)
        self._smoothness = float(config.smoothness_cost)
        self._dis_coef = float(config.disagreement_penalty)
        self._has_disagreement = type(model).disagreement is not RolloutModel.disagreement
        self._begin = self._shift_plan if config.warm_start else self._reset_plan
        half = 0.5 * (high - low)
        self._low, self._high = low, high
        self._mid = 0.5 * (low + high)
        self._std_init = config.init_std * half
        self._std_min = config.min_std * half

        # Buffers, allocated once
        self._actions = np.zeros((K, H, A), dtype=np.float32)
        self._noise = np.zeros((K - self._n_prior - 1, H, A), dtype=np.float32)
        self._scores = np.zeros(K, dtype=np.float64)
        self._idx = np.zeros(K, dtype=np.int64)
        self._weights = np.zeros(self._n_elite, dtype=np.float64)
        self._mean = np.zeros((H, A), dtype=np.float64)
        self._std = np.zeros((H, A), dtype=np.float64)
        self._prev_action = np.zeros(A, dtype=np.float64)
        self._first = np.zeros(A, dtype=np.float64)  # plan(obs, first_action): the fixed row 0
        self._first32 = np.zeros(A, dtype=np.float32)
        self._first_weight = 0.0  # 1.0 once an action was returned (smoothness at t = 0)
        self._has_plan = False
        self._failed = False  # the last plan found no finite rollout
        self._best = 0

        self._compile()
        self.reset()
        logger.debug("%s planner: K=%d H=%d A=%d elites=%d iterations=%d", self.kind, K, H, A,
                     self._n_elite, self._iterations)

    # ----------------------------------------------------------------- public API
    def plan(self, obs: np.ndarray, first_action: np.ndarray | None = None) -> np.ndarray:
        """The action (A,) float64 to apply now, inside the bounds: row 0 of the final mean.

        With ``first_action`` (A,) (clipped to the bounds; needs H >= 2): row 0 of every
        sampled sequence and of the mean is that action, and the action returned is row 1
        of the final mean, the one to apply one step later.
        """
        obs = self.model.check_obs(obs)
        fixed = first_action is not None
        if fixed:
            self._fix_first(first_action)
        self._begin()
        nonfinite = 0
        dis = None
        self._draw_prior(obs)
        for _ in range(self._iterations):
            # Sample actions
            self._sample()
            if fixed:
                self._actions[:, 0, :] = self._first32
            # Score sequences
            returns = self.model.rollout(obs, self._actions)
            if self._has_disagreement:
                dis = self.model.disagreement
            nonfinite += self._score(returns, dis)
            # Update parameters
            n = self._weigh_elites()
            kernels.refit_gaussian(self._actions, self._idx, self._n_elite, self._weights, n,
                                   self._alpha, self._std_min, self._std_init, self._mean, self._std)
        if nonfinite == self._shape[0] * self._iterations:
            # The model predicted nothing finite for this observation: no plan. The warm start
            # is dropped, and the action and the plan are NaN, which the controller's safety
            # filter answers with the safe action (a nonfinite_model event).
            self._record(nonfinite, dis)
            self.reset()
            self._failed = self.stats.no_plan = True
            return np.full(self._shape[2], np.nan)
        self._failed = self.stats.no_plan = False
        self._has_plan = True
        if fixed:
            self._mean[0] = self._first
        action = np.clip(self._mean[1 if fixed else 0], self._low, self._high)
        self._prev_action[:] = action
        self._first_weight = 1.0
        self._record(nonfinite, dis)
        return action

    def planned_actions(self) -> np.ndarray:
        """A copy of the current plan (H, A): row 0 is the action last returned, row 1 the
        fallback for the next cycle (after ``plan(obs, first_action)``: row 0 is
        ``first_action``, row 1 the action returned). Before the first plan (or after
        reset): the middle of the bounds. After a plan whose rollouts were all non-finite:
        NaN."""
        if self._failed:
            return np.full_like(self._mean, np.nan)
        return self._mean.copy()

    def reset(self) -> None:
        """Forget the warm start and the previous action (start of an episode)."""
        kernels.reset_plan(self._mean, self._std, self._mid, self._std_init)
        self._prev_action[:] = 0.0
        self._first_weight = 0.0
        self._has_plan = False

    # ----------------------------------------------------------------- subclass hook
    @abc.abstractmethod
    def _weigh_elites(self) -> float:
        """Select the elites from self._scores (K,) into self._idx[:E], write their weights
        into self._weights (E,) and return the weights' sum (0.0: keep the distribution)."""

    # ----------------------------------------------------------------- steps
    def _reset_plan(self) -> None:
        kernels.reset_plan(self._mean, self._std, self._mid, self._std_init)

    def _shift_plan(self) -> None:
        if self._has_plan:
            kernels.shift_plan(self._mean, self._std, self._std_init)
        else:
            kernels.reset_plan(self._mean, self._std, self._mid, self._std_init)

    def _fix_first(self, first_action: np.ndarray) -> None:
        """self._first (A,) <- first_action clipped to the bounds, after checking it."""
        first = np.asarray(first_action, dtype=np.float64)
        if first.shape != self._first.shape:
            raise ValueError(f"first_action has shape {first.shape}, expected {self._first.shape}")
        if self._shape[1] < 2:
            raise ValueError(f"first_action needs horizon >= 2 (the action returned is row 1 of "
                             f"the plan), got horizon = {self._shape[1]}")
        if not np.all(np.isfinite(first)):
            raise ValueError(f"first_action must be finite, got {first.tolist()}")
        np.clip(first, self._low, self._high, out=self._first)
        self._first32[:] = self._first

    def _draw_prior(self, obs: np.ndarray) -> None:
        """self._actions[:n] <- n sequences from the model's policy prior (n = prior_samples;
        once per plan: the rounds only resample the rest)."""
        n = self._n_prior
        if n:
            prior = self.model.prior_actions(obs, n, self._shape[1], self.rng)
            if np.shape(prior) != (n,) + self._shape[1:]:
                raise ModelError(f"prior_actions returned shape {np.shape(prior)}, expected "
                                 f"{(n,) + self._shape[1:]}")
            np.clip(prior, self._low, self._high, out=self._actions[:n])

    def _sample(self) -> None:
        """Fill self._actions[n:] (K x H x A): the mean, then noisy samples (the n prior
        sequences are left as they are)."""
        n = self._n_prior
        self.rng.standard_normal(out=self._noise, dtype=np.float32)
        kernels.sample_sequences(self._mean, self._std, self._noise, self._beta, self._low,
                                 self._high, n, self._actions)

    def _score(self, returns: np.ndarray, dis: np.ndarray | None) -> int:
        """self._scores (K,) <- returns minus penalties, non-finite -> -inf; returns their count."""
        K, H, _ = self._shape
        if np.shape(returns) != (K,):
            raise ModelError(f"model.rollout returned shape {np.shape(returns)}, expected ({K},)")
        self._scores[:] = returns
        if self._smoothness > 0.0:
            kernels.subtract_smoothness(self._actions, self._prev_action, self._first_weight,
                                        self._smoothness, self._scores)
        if self._dis_coef > 0.0:
            if dis is None or np.shape(dis) != (K, H):
                raise ModelError(f"disagreement_penalty needs model.disagreement of shape ({K}, {H}), "
                                 f"got {None if dis is None else np.shape(dis)}")
            kernels.subtract_disagreement(dis, self._dis_coef, self._scores)
        nonfinite = kernels.finalize_scores(self._scores)
        self._best = int(np.argmax(self._scores))
        return nonfinite

    def _record(self, nonfinite: int, dis: np.ndarray | None) -> None:
        """Fill self.stats from the last iteration (best sample's score and disagreement)."""
        stats = self.stats
        stats.predicted_return = float(self._scores[self._best])
        stats.disagreement = (float(np.sum(dis[self._best]))
                              if dis is not None and np.ndim(dis) == 2 else float("nan"))
        stats.nonfinite = nonfinite
        stats.nonfinite_total += nonfinite

    def _compile(self) -> None:
        """Run every kernel once on the real buffers (no-op inputs) so that numba compiles
        (or loads from its cache) now, not in the first control cycle."""
        kernels.reset_plan(self._mean, self._std, self._mid, self._std_init)
        kernels.shift_plan(self._mean, self._std, self._std_init)
        kernels.sample_sequences(self._mean, self._std, self._noise, self._beta, self._low,
                                 self._high, self._n_prior, self._actions)
        kernels.subtract_smoothness(self._actions, self._prev_action, 0.0, 0.0, self._scores)
        for dtype in (np.float32, np.float64):
            kernels.subtract_disagreement(np.zeros((1, 1), dtype=dtype), 0.0, self._scores[:1])
        self._scores[:] = 0.0
        kernels.finalize_scores(self._scores)
        self._weigh_elites()
        kernels.refit_gaussian(self._actions, self._idx, self._n_elite, self._weights, 0.0,
                               self._alpha, self._std_min, self._std_init, self._mean, self._std)
