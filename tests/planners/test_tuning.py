"""rtmpc tune's pure logic: Pareto front, deadline filter, best choice, search space -> PlannerConfig."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rtmpc.configs import ConfigError
from rtmpc.planners import planner_config
from rtmpc.planners.tuning import (
    SearchSpace,
    TrialResult,
    choose_best,
    deadline_limit_ms,
    dominates,
    fits_deadline,
    pareto_front,
    planner_from_params,
    shrink_to_fit,
    suggest_params,
)

# (number, return, p99 ms): a fixed set of fake trials with a known front.
FAKE = [
    (0, 100.0, 5.0),   # front: fastest
    (1, 90.0, 6.0),    # dominated by 0 (slower and worse)
    (2, 300.0, 20.0),  # front
    (3, 300.0, 25.0),  # dominated by 2 (same return, slower)
    (4, 250.0, 20.0),  # dominated by 2 (same time, worse)
    (5, 500.0, 57.6),  # front, exactly at the limit of budget 72 x 0.8
    (6, 520.0, 57.7),  # front, just over the limit
    (7, 800.0, 300.0),  # front, far over
    (8, 700.0, 400.0),  # dominated by 7
    (9, float("nan"), 1.0),  # diverged: never on the front
    (10, 1e9, float("inf")),  # no plan time: never on the front
]
FRONT = [0, 2, 5, 6, 7]


def _results(rows=FAKE):
    return [TrialResult(n, r, p) for n, r, p in rows]


def _brute_front(results):
    ok = [r for r in results if r.finite]
    return sorted((r.number for r in ok if not any(dominates(o, r) for o in ok)))


def test_pareto_front_of_the_fixed_trials():
    front = pareto_front(_results())
    assert [r.number for r in front] == FRONT
    assert [r.plan_ms_p99 for r in front] == sorted(r.plan_ms_p99 for r in front)  # fastest first
    assert sorted(r.number for r in front) == _brute_front(_results())


def test_pareto_front_keeps_twins_and_handles_empty_input():
    twins = _results([(0, 1.0, 1.0), (1, 1.0, 1.0), (2, 0.5, 2.0)])
    assert [r.number for r in pareto_front(twins)] == [0, 1]
    assert pareto_front([]) == []
    assert pareto_front(_results([(0, float("nan"), 1.0)])) == []


@pytest.mark.parametrize("seed", range(20))
def test_pareto_front_matches_the_definition_on_random_trials(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    # Coarse values so that ties on either objective happen often.
    rows = [(i, float(rng.integers(0, 8)), float(rng.integers(1, 8))) for i in range(n)]
    results = _results(rows)
    front = pareto_front(results)
    assert sorted(r.number for r in front) == _brute_front(results)
    best = choose_best(results, budget_ms=5.0, safety=1.0)
    if best is not None:
        assert best.number in {r.number for r in front}


def test_deadline_filter_uses_budget_times_safety_inclusively():
    # 12.5 Hz: period 80 ms, default margin 10% -> budget 72 ms; x 0.8 -> 57.6 ms.
    assert deadline_limit_ms(72.0, 0.8) == pytest.approx(57.6)
    fits = fits_deadline(_results(), budget_ms=72.0, safety=0.8)
    assert sorted(r.number for r in fits) == [0, 1, 2, 3, 4, 5]  # 57.6 fits, 57.7 does not; NaN/inf never
    assert sorted(r.number for r in fits_deadline(_results(), 72.0, 1.0)) == [0, 1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("budget, safety", [(72.0, 0.0), (72.0, 1.2), (72.0, -0.5), (0.0, 0.8),
                                            (float("nan"), 0.8)])
def test_deadline_filter_rejects_bad_budget_or_safety(budget, safety):
    with pytest.raises(ConfigError):
        deadline_limit_ms(budget, safety)


def test_choose_best_is_the_highest_return_that_fits():
    best = choose_best(_results(), budget_ms=72.0, safety=0.8)
    assert best is not None and best.number == 5
    assert choose_best(_results(), budget_ms=72.0, safety=1.0).number == 6
    assert choose_best(_results(), budget_ms=1000.0, safety=0.8).number == 7  # NaN and inf ignored
    assert choose_best(_results(), budget_ms=4.0, safety=0.8) is None  # nothing is that fast


def test_choose_best_breaks_ties_by_plan_time_then_trial_number():
    rows = [(0, 10.0, 3.0), (1, 10.0, 2.0), (2, 10.0, 2.0), (3, 5.0, 1.0)]
    assert choose_best(_results(rows), budget_ms=10.0, safety=1.0).number == 1


# ------------------------------------------------------------------ search space
class FakeTrial:
    """Optuna's suggest API over a fixed position in each range: 0 low, 1 high, 0.5 middle."""

    def __init__(self, where: float = 0.5, kind: str | None = None):
        self.where, self.kind, self.asked = where, kind, {}

    def suggest_int(self, name, low, high, *, log=False):
        v = int(round(low + self.where * (high - low)))
        self.asked[name] = (low, high, log)
        return v

    def suggest_float(self, name, low, high, *, log=False):
        self.asked[name] = (low, high, log)
        return low + self.where * (high - low)

    def suggest_categorical(self, name, choices):
        self.asked[name] = tuple(choices)
        return self.kind if self.kind in choices else choices[0]


@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("kinds, kind", [(("cem",), None), (("mppi",), None), (("cem", "mppi"), "mppi"),
                                         (("cem", "mppi"), "cem")])
def test_every_point_of_the_space_is_a_valid_planner_config(where, kinds, kind):
    space = SearchSpace()
    trial = FakeTrial(where, kind)
    params = suggest_params(trial, space, kinds)
    cfg = planner_from_params(params, planner_config())
    assert cfg.kind == (kind or kinds[0])
    assert ("kind" in trial.asked) == (len(kinds) > 1)
    assert ("temperature" in trial.asked) == (cfg.kind == "mppi")  # conditional
    assert space.horizon_min <= cfg.horizon <= space.horizon_max
    assert space.samples_min <= cfg.samples <= space.samples_max
    assert 2 <= cfg.elites <= cfg.samples
    assert cfg.min_std <= cfg.init_std
    assert trial.asked["samples"][2] is True  # samples on a log scale


def test_planner_from_params_keeps_the_base_fields_not_searched():
    base = planner_config(disagreement_penalty=2.0, smoothness_cost=0.1, alpha=0.2, min_std=0.3, init_std=0.5)
    cfg = planner_from_params({"kind": "mppi", "horizon": 7, "samples": 100, "iterations": 2, "elite_frac": 0.1,
                               "init_std": 0.2, "noise_beta": 0.5, "temperature": 0.123456}, base)
    assert (cfg.kind, cfg.horizon, cfg.samples, cfg.iterations, cfg.elites) == ("mppi", 7, 100, 2, 10)
    assert (cfg.disagreement_penalty, cfg.smoothness_cost, cfg.alpha) == (2.0, 0.1, 0.2)
    assert cfg.min_std == 0.2  # lowered to init_std
    assert cfg.temperature == 0.123  # 3 significant digits
    assert planner_from_params({"samples": 8, "elite_frac": 0.01}, base).elites == 2  # at least 2
    assert planner_from_params({"samples": 10}, planner_config(elites=40)).elites == 10  # clipped to samples


def test_search_space_checks_its_ranges_and_caps_the_horizon():
    with pytest.raises(ConfigError, match="horizon_min = 40 is above horizon_max = 30"):
        SearchSpace(horizon_min=40)
    with pytest.raises(ConfigError, match="samples_min"):
        SearchSpace(samples_min=2000, samples_max=100)
    space = SearchSpace(horizon_min=5, horizon_max=30)
    assert (space.cap_horizon(12).horizon_min, space.cap_horizon(12).horizon_max) == (5, 12)
    assert (space.cap_horizon(3).horizon_min, space.cap_horizon(3).horizon_max) == (3, 3)
    assert space.cap_horizon(100).horizon_max == 30  # a cap never widens the space
    with pytest.raises(ConfigError, match="planner kinds"):
        suggest_params(FakeTrial(), space, ("ilqr",))


def test_trial_result_finite():
    assert TrialResult(0, 1.0, 1.0).finite
    assert not TrialResult(0, -math.inf, 1.0).finite and not TrialResult(0, 1.0, math.nan).finite


@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
def test_a_policy_prior_share_is_searched_and_always_leaves_planned_samples(where):
    # a latent model's base: 24 of 512 samples from the policy prior (TD-MPC2)
    base = planner_config(kind="mppi", samples=512, elites=64, prior_samples=24)
    space = SearchSpace(samples_min=2, samples_max=1024)
    trial = FakeTrial(where)
    cfg = planner_from_params(suggest_params(trial, space, ("mppi",), prior=True), base)
    assert trial.asked["prior_frac"] == (space.prior_frac_min, space.prior_frac_max, True)
    assert 1 <= cfg.prior_samples <= cfg.samples - 1
    plain = FakeTrial(where)
    assert "prior_frac" not in suggest_params(plain, space, ("mppi",)) and "prior_frac" not in plain.asked
    assert "prior_frac" not in suggest_params(FakeTrial(), space, ("cem",))
    assert planner_from_params({"samples": 100, "prior_frac": 0.25}, base).prior_samples == 25


def test_fewer_samples_than_the_base_prior_still_make_a_valid_config():
    base = planner_config(kind="mppi", samples=512, elites=64, prior_samples=24)
    cfg = planner_from_params({"samples": 16}, base)
    assert (cfg.samples, cfg.prior_samples, cfg.elites) == (16, 15, 16)
    with pytest.raises(ConfigError, match="prior_frac_min"):
        SearchSpace(prior_frac_min=0.6, prior_frac_max=0.5)


def test_shrink_to_fit_cuts_iterations_first_then_samples():
    space = SearchSpace()
    base = {"kind": "mppi", "horizon": 3, "samples": 512, "iterations": 6, "elite_frac": 0.125}
    # 57 ms against 31.5: x 0.497 (0.9 margin) -> 2 of 6 iterations already give x 0.33
    assert shrink_to_fit(base, 57.0, 31.5, space) == {**base, "iterations": 2}
    # one iteration left: the samples take the rest (100 ms -> 45 ms: x 0.45)
    assert shrink_to_fit({**base, "iterations": 1}, 100.0, 50.0, space)["samples"] == 230
    # x 0.6: 4 -> 2 iterations (x 0.5) is enough, the samples stay
    assert shrink_to_fit({**base, "iterations": 4}, 75.0, 50.0, space) == {**base, "iterations": 2}
    # x 0.45: 2 -> 1 iteration is x 0.5, the samples give up the rest (x 0.9)
    assert shrink_to_fit({**base, "iterations": 2}, 100.0, 50.0, space) == {**base, "iterations": 1, "samples": 460}
    assert shrink_to_fit(base, 30.0, 31.5, space) is None  # fits already
    assert shrink_to_fit({**base, "iterations": 1, "samples": 16}, 100.0, 50.0, space) is None  # nothing to cut
    assert shrink_to_fit(base, math.nan, 31.5, space) is None
