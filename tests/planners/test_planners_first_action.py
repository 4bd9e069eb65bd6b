"""plan(obs, first_action): row 0 committed, the action returned is the next one (delay compensation)."""

from __future__ import annotations

import numpy as np
import pytest
from planner_toys import LinearQuadratic, lqr_actions, point_mass
from rtmpc.planners import make_planner, planner_config

KINDS = ["cem", "mppi"]
X0 = np.array([0.5, -0.3, 0.0, 0.2])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("u0", [[0.3, -0.5], [-1.2, 0.8]])
def test_second_action_matches_lqr_given_the_fixed_first(kind, seed, u0):
    """H = 10, point mass. With u_0 fixed, the rest of the problem is the (H - 1)-step LQR
    problem from x_1 = A x_0 + B u_0, so the returned action is its first action (to within
    0.06, 1.5% of the range 4, as for the free problem) and the plan's cost is within 0.5%
    of the best cost given u_0. Measured (seeds 0-3, both planners): error 0.002-0.024,
    cost ratio 1.00005-1.00015."""
    model, H = point_mass(), 10
    u0 = np.array(u0)
    rest = lqr_actions(model, model.step(X0, u0), H - 1)
    assert np.all(np.abs(rest) < 2.0)  # the unconstrained optimum is feasible
    planner = make_planner(planner_config(kind=kind, horizon=H, samples=400, elites=40, iterations=16),
                           model, rng=seed)
    action = planner.plan(X0, first_action=u0)
    plan = planner.planned_actions()
    np.testing.assert_array_equal(plan[0], u0)
    np.testing.assert_array_equal(plan[1], action)
    np.testing.assert_allclose(action, rest[0], atol=0.06)
    best = model.cost(X0, np.vstack([u0, rest]))
    assert model.cost(X0, plan) <= 1.005 * best
    # not the free optimum: fixing u_0 changes the answer
    assert np.abs(rest[0] - lqr_actions(model, X0, H)[1]).max() > 0.05  # 0.54, 0.11


class _Spy(LinearQuadratic):
    """The point mass with a policy prior (far from u_0) that keeps every population it scores."""

    def __init__(self):
        src = point_mass()
        super().__init__(src.A, src.B, src.Q, src.R, src.Qf, [-2.0] * 2, [2.0] * 2)
        self.seen = []

    @property
    def has_prior(self):
        return True

    def prior_actions(self, obs0, n, horizon, rng):
        return np.full((n, horizon, 2), 1.5)

    def rollout(self, obs0, actions):
        self.seen.append(actions.copy())
        return super().rollout(obs0, actions)


@pytest.mark.parametrize("kind", KINDS)
def test_every_sampled_sequence_starts_with_the_fixed_action(kind):
    model = _Spy()
    u0 = np.array([0.25, -0.75])
    config = planner_config(kind=kind, horizon=6, samples=50, elites=5, iterations=3, prior_samples=5)
    planner = make_planner(config, model, rng=0)
    planner.plan(X0)  # a free plan first: the warm start of the next one does not start at u0
    model.seen.clear()
    planner.plan(X0, first_action=u0)
    assert len(model.seen) == 3
    for population in model.seen:
        assert np.all(population[:, 0, :] == u0.astype(np.float32))
        assert np.ptp(population[:, 1, :], axis=0).min() > 0.1  # row 1 is still searched
    # a later free plan samples row 0 again
    model.seen.clear()
    planner.plan(X0)
    assert np.ptp(model.seen[0][:, 0, :], axis=0).min() > 0.1


@pytest.mark.parametrize("kind", KINDS)
def test_bounds_hold_with_a_fixed_first_action(kind):
    """Bounds [-0.3, 0.1] x [0, 2]: a first action outside them is clipped; every returned
    action and plan row stays inside over a closed loop that commits one step ahead."""
    base = point_mass()
    model = LinearQuadratic(base.A, base.B, base.Q, base.R, base.Qf, low=[-0.3, 0.0], high=[0.1, 2.0])
    planner = make_planner(planner_config(kind=kind, horizon=8, samples=100, iterations=3), model, rng=0)
    low, high = model.dims.action_low, model.dims.action_high
    x, committed = X0.copy(), np.array([5.0, -1.0])  # out of bounds: clipped to (0.1, 0.0)
    for _ in range(6):
        u = planner.plan(x, first_action=committed)
        plan = planner.planned_actions()
        expected_first = np.clip(committed, low, high)
        np.testing.assert_array_equal(plan[0], expected_first)
        assert np.all(u >= low) and np.all(u <= high)
        assert np.all(plan >= low) and np.all(plan <= high)
        x = model.step(x, expected_first)
        committed = u


def test_first_action_is_checked():
    planner = make_planner(planner_config(kind="cem", horizon=4, samples=20, elites=4), point_mass(), rng=0)
    with pytest.raises(ValueError, match=r"first_action has shape \(3,\), expected \(2,\)"):
        planner.plan(X0, first_action=np.zeros(3))
    with pytest.raises(ValueError, match="must be finite"):
        planner.plan(X0, first_action=np.array([0.0, np.nan]))
    short = make_planner(planner_config(kind="cem", horizon=1, samples=20, elites=4), point_mass(), rng=0)
    with pytest.raises(ValueError, match="needs horizon >= 2"):
        short.plan(X0, first_action=np.zeros(2))
