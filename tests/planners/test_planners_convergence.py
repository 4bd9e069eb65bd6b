"""CEM and MPPI find known optima of linear-quadratic toy systems (seeded, numpy only)."""

from __future__ import annotations

import numpy as np
import pytest
from planner_toys import LinearQuadratic, lqr_actions, point_mass, scalar_system
from rtmpc.planners import CEM, MPPI, make_planner, planner_config

KINDS = ["cem", "mppi"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("x0", [1.0, -0.6, 0.0])
def test_one_step_optimum_is_the_closed_form(kind, x0):
    """H = 1: return -((x0 + u)^2 + u^2) is maximal at u* = -x0 / 2; to within 1% of the range."""
    model = scalar_system()
    planner = make_planner(planner_config(kind=kind, horizon=1, samples=200, elites=20, iterations=8),
                           model, rng=0)
    action = planner.plan(np.array([x0]))
    assert action.shape == (1,)
    assert action[0] == pytest.approx(-x0 / 2, abs=0.02)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_first_action_matches_finite_horizon_lqr(kind, seed):
    """H = 10, point mass (20 decision variables): the first action is within 0.06 (1.5% of
    the range 4) of the Riccati solution and the plan's cost within 0.5% of the optimum."""
    model = point_mass()
    x0 = np.array([0.5, -0.3, 0.0, 0.2])
    optimum = lqr_actions(model, x0, 10)
    assert np.all(np.abs(optimum) < 2.0)  # the unconstrained optimum is feasible
    planner = make_planner(planner_config(kind=kind, horizon=10, samples=400, elites=40, iterations=16),
                           model, rng=seed)
    action = planner.plan(x0)
    np.testing.assert_allclose(action, optimum[0], atol=0.06)
    best = model.cost(x0, optimum)
    assert model.cost(x0, planner.planned_actions()) <= 1.005 * best


@pytest.mark.parametrize("kind", KINDS)
def test_correlated_noise_also_converges(kind):
    model = point_mass()
    x0 = np.array([0.5, -0.3, 0.0, 0.2])
    optimum = lqr_actions(model, x0, 10)
    planner = make_planner(planner_config(kind=kind, horizon=10, samples=400, iterations=16,
                                         noise_beta=0.5), model, rng=0)
    np.testing.assert_allclose(planner.plan(x0), optimum[0], atol=0.08)


@pytest.mark.parametrize("cls", [CEM, MPPI])
@pytest.mark.parametrize("x0, bound", [(6.0, -1.0), (-6.0, 1.0)])
def test_optimum_outside_the_bounds_gives_the_bound(cls, x0, bound):
    """u* = -x0 / 2 = -+3 lies outside [-1, 1]: the planner returns the nearer bound."""
    model = scalar_system()
    config = planner_config(kind=cls.kind, horizon=1, samples=200, elites=20, iterations=8)
    action = cls(config, model, rng=0).plan(np.array([x0]))
    assert -1.0 <= action[0] <= 1.0
    assert action[0] == pytest.approx(bound, abs=0.01)


@pytest.mark.parametrize("kind", KINDS)
def test_actions_stay_in_asymmetric_bounds_over_a_closed_loop(kind):
    """Bounds [-0.3, 0.1] x [0, 2] on the point mass; every returned action and plan row respects them."""
    base = point_mass()
    model = LinearQuadratic(base.A, base.B, base.Q, base.R, base.Qf, low=[-0.3, 0.0], high=[0.1, 2.0])
    planner = make_planner(planner_config(kind=kind, horizon=8, samples=100, iterations=3), model, rng=0)
    x = np.array([0.5, -0.3, 0.0, 0.2])
    low, high = model.dims.action_low, model.dims.action_high
    for _ in range(5):
        u = planner.plan(x)
        plan = planner.planned_actions()
        assert np.all(u >= low) and np.all(u <= high)
        assert np.all(plan >= low) and np.all(plan <= high)
        x = model.step(x, u)
