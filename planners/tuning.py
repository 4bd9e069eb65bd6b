"""Choosing a planner config against the control loop's time budget: the pure logic of ``rtmpc tune``.

A tuning study evaluates planner configs on a task and records, per trial, the episode
return (higher is better) and the p99 plan time in ms (lower is better). This module
holds what does not depend on the optimiser:

- :class:`SearchSpace`: the ranges searched, and :func:`suggest_params` /
  :func:`planner_from_params`, which turn a trial's suggestions into a :class:`PlannerConfig`
  (the trial is anything with Optuna's ``suggest_int``/``suggest_float``/``suggest_categorical``);
- :func:`pareto_front`: the trials no other trial beats on both return and p99 plan time;
- :func:`deadline_limit_ms` and :func:`choose_best`: the highest-return trial whose p99
  plan time fits the plan budget times a safety factor.

Imports numpy and the config layer only (no optimiser, no torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol, Sequence

from rtmpc.configs import Config, ConfigError, param
from rtmpc.planners.base import CEMConfig, PlannerConfig
from rtmpc.planners.registry import names, with_kind

__all__ = ["SearchSpace", "TrialResult", "TrialLike", "suggest_params", "planner_from_params", "shrink_to_fit",
           "dominates", "pareto_front", "deadline_limit_ms", "fits_deadline", "choose_best", "KINDS"]

KINDS = names()  # the planners a study may search (planners.registry)


@dataclass(frozen=True)
class SearchSpace(Config):
    """Ranges of the planner options searched by ``rtmpc tune`` (inclusive)."""

    horizon_min: int = param(3, "shortest planning horizon H tried, model steps", ge=1, le=1000)
    horizon_max: int = param(30, "longest planning horizon H tried, model steps", ge=1, le=1000)
    samples_min: int = param(16, "fewest samples K tried (log scale)", ge=2, le=1_000_000)
    samples_max: int = param(1024, "most samples K tried (log scale)", ge=2, le=1_000_000)
    iterations_min: int = param(1, "fewest refinement iterations tried", ge=1, le=100)
    iterations_max: int = param(6, "most refinement iterations tried", ge=1, le=100)
    elite_frac_min: float = param(0.02, "smallest elite fraction E/K tried (log scale); E >= 2",
                                  gt=0.0, le=1.0)
    elite_frac_max: float = param(0.3, "largest elite fraction E/K tried (log scale)", gt=0.0, le=1.0)
    temperature_min: float = param(0.05, "MPPI: lowest temperature tried (log scale)", gt=0.0)
    temperature_max: float = param(2.0, "MPPI: highest temperature tried (log scale)", gt=0.0)
    init_std_min: float = param(0.1, "smallest initial sampling std tried (fraction of half the "
                                     "action range, log scale)", gt=0.0, le=10.0)
    init_std_max: float = param(1.0, "largest initial sampling std tried", gt=0.0, le=10.0)
    noise_beta_max: float = param(0.9, "largest noise correlation tried (from 0)", ge=0.0, lt=1.0)
    prior_frac_min: float = param(0.02, "models with a policy prior (latent): smallest share of the samples "
                                        "drawn from it (log scale); at least 1", gt=0.0, lt=1.0)
    prior_frac_max: float = param(0.5, "largest share of the samples drawn from the policy prior", gt=0.0, lt=1.0)

    def check(self) -> None:
        for name in ("horizon", "samples", "iterations", "elite_frac", "temperature", "init_std", "prior_frac"):
            lo, hi = getattr(self, f"{name}_min"), getattr(self, f"{name}_max")
            if lo > hi:
                raise ConfigError(f"{name}_min = {lo} is above {name}_max = {hi}: swap or widen them")

    def cap_horizon(self, cap: int) -> SearchSpace:
        """The same space with the horizon no longer than ``cap`` (the lower end follows if needed)."""
        cap = max(1, int(cap))
        return self.replace(horizon_max=min(self.horizon_max, cap), horizon_min=min(self.horizon_min, cap))


class TrialLike(Protocol):
    """What :func:`suggest_params` needs of a trial (``optuna.trial.Trial`` has it)."""

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


def suggest_params(trial: TrialLike, space: SearchSpace, kinds: Sequence[str], prior: bool = False
                   ) -> dict[str, Any]:
    """Ask ``trial`` for one point of ``space``; returns the params (names as Optuna stores them).

    ``kind`` is a categorical when ``kinds`` has more than one planner, else fixed. The
    temperature is asked only for MPPI (a conditional parameter), the share of samples from
    the policy prior only with ``prior`` (the model has one: a latent model).
    """
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if not kinds or bad:
        raise ConfigError(f"planner kinds {list(kinds)}: choose from {', '.join(KINDS)}")
    kind = trial.suggest_categorical("kind", list(kinds)) if len(kinds) > 1 else kinds[0]
    p: dict[str, Any] = {"kind": kind}
    p["horizon"] = trial.suggest_int("horizon", space.horizon_min, space.horizon_max)
    p["samples"] = trial.suggest_int("samples", space.samples_min, space.samples_max, log=True)
    p["iterations"] = trial.suggest_int("iterations", space.iterations_min, space.iterations_max)
    p["elite_frac"] = trial.suggest_float("elite_frac", space.elite_frac_min, space.elite_frac_max, log=True)
    p["init_std"] = trial.suggest_float("init_std", space.init_std_min, space.init_std_max, log=True)
    p["noise_beta"] = trial.suggest_float("noise_beta", 0.0, space.noise_beta_max)
    if kind == "mppi":
        p["temperature"] = trial.suggest_float("temperature", space.temperature_min, space.temperature_max,
                                               log=True)
    if prior:
        p["prior_frac"] = trial.suggest_float("prior_frac", space.prior_frac_min, space.prior_frac_max, log=True)
    return p


def planner_from_params(params: Mapping[str, Any], base: PlannerConfig = CEMConfig()) -> PlannerConfig:
    """The PlannerConfig of a trial's params, other fields from ``base``.

    ``elites = clip(round(elite_frac * samples), 2, samples)``; ``prior_samples =
    clip(round(prior_frac * samples), 1, samples - 1)`` (without ``prior_frac``, ``base``'s,
    lowered below ``samples`` if needed); ``min_std`` is lowered to ``init_std`` if above it;
    floats keep 3 significant digits. A param that is absent keeps ``base``'s value.
    """
    p = dict(params)
    kind = p.pop("kind", base.kind)
    samples = int(p.get("samples", base.samples))
    changes: dict[str, Any] = {}
    for name in ("horizon", "samples", "iterations"):
        if name in p:
            changes[name] = int(p[name])
    if "elite_frac" in p:
        changes["elites"] = int(min(samples, max(2, round(float(p["elite_frac"]) * samples))))
    elif base.elites > samples:
        changes["elites"] = samples
    if "prior_frac" in p:
        changes["prior_samples"] = int(min(samples - 1, max(1, round(float(p["prior_frac"]) * samples))))
    elif base.prior_samples >= samples:
        changes["prior_samples"] = samples - 1
    for name in ("init_std", "noise_beta", "temperature"):
        if name in p:
            changes[name] = float(f"{float(p[name]):.3g}")  # 3 significant digits: readable YAML
    changes["min_std"] = min(base.min_std, float(changes.get("init_std", base.init_std)))
    return with_kind(base, kind, **changes)


def shrink_to_fit(params: Mapping[str, Any], plan_ms: float, limit_ms: float, space: SearchSpace,
                  margin: float = 0.9) -> dict[str, Any] | None:
    """The same trial params with fewer iterations, then fewer samples, so that a plan that
    took ``plan_ms`` takes about ``margin * limit_ms`` (plan time taken as proportional to
    iterations x samples); None if it already fits or cannot shrink within ``space``.

    Used for the base config when it is too slow: its own planner made cheaper is the
    first thing a person would try, and a noisy search over every option may not find it.
    """
    if not (math.isfinite(plan_ms) and plan_ms > limit_ms > 0):
        return None
    factor = margin * limit_ms / plan_ms
    out = dict(params)
    iterations, samples = int(params["iterations"]), int(params["samples"])
    new_iterations = max(space.iterations_min, min(iterations, math.floor(iterations * factor)))
    left = factor * iterations / new_iterations  # what the samples must still give up
    new_samples = samples if left >= 1.0 else max(space.samples_min, math.floor(samples * left))
    if (new_iterations, new_samples) == (iterations, samples):
        return None
    out.update(iterations=new_iterations, samples=new_samples)
    return out


@dataclass(frozen=True)
class TrialResult:
    """One evaluated trial: its number, mean episode return and p99 plan time (ms)."""

    number: int
    return_mean: float
    plan_ms_p99: float
    params: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)  # anything else worth a column

    @property
    def finite(self) -> bool:
        return math.isfinite(self.return_mean) and math.isfinite(self.plan_ms_p99)


def dominates(a: TrialResult, b: TrialResult) -> bool:
    """``a`` is at least as good as ``b`` on both objectives and better on one."""
    return (a.return_mean >= b.return_mean and a.plan_ms_p99 <= b.plan_ms_p99
            and (a.return_mean > b.return_mean or a.plan_ms_p99 < b.plan_ms_p99))


def pareto_front(results: Iterable[TrialResult]) -> list[TrialResult]:
    """The non-dominated trials (maximise return, minimise p99 plan time), fastest first.

    Trials with a non-finite return or p99 are left out. Trials with equal values are all
    kept (neither dominates the other). One sweep in order of plan time: a trial is on
    the front when its return beats every faster trial's.
    """
    pts = sorted((r for r in results if r.finite), key=lambda r: (r.plan_ms_p99, -r.return_mean, r.number))
    front: list[TrialResult] = []
    best = -math.inf
    for r in pts:
        if r.return_mean > best:
            front.append(r)
            best = r.return_mean
        elif front and r.return_mean == front[-1].return_mean and r.plan_ms_p99 == front[-1].plan_ms_p99:
            front.append(r)  # a twin of the last front point
    return front


def deadline_limit_ms(budget_ms: float, safety: float) -> float:
    """The largest p99 plan time accepted: the loop's plan budget times ``safety`` (0 < safety <= 1)."""
    if not (math.isfinite(budget_ms) and budget_ms > 0.0):
        raise ConfigError(f"plan budget {budget_ms!r} ms must be a positive number")
    if not 0.0 < safety <= 1.0:
        raise ConfigError(f"safety factor {safety!r} must be in (0, 1]: the fraction of the plan budget "
                          f"a p99 plan time may use (0.8 keeps 20% for the real-time loop's overheads)")
    return budget_ms * safety


def fits_deadline(results: Iterable[TrialResult], budget_ms: float, safety: float) -> list[TrialResult]:
    """The finite trials whose p99 plan time is at most ``deadline_limit_ms(budget_ms, safety)``."""
    limit = deadline_limit_ms(budget_ms, safety)
    return [r for r in results if r.finite and r.plan_ms_p99 <= limit]


def choose_best(results: Iterable[TrialResult], budget_ms: float, safety: float) -> TrialResult | None:
    """The highest-return trial that fits the deadline (ties: faster, then earlier), or None.

    It is always on the Pareto front of ``results``.
    """
    ok = fits_deadline(results, budget_ms, safety)
    if not ok:
        return None
    return min(ok, key=lambda r: (-r.return_mean, r.plan_ms_p99, r.number))
