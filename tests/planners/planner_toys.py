"""Seeded toy RolloutModels with known answers, in numpy only (vectorised over K)."""

from __future__ import annotations

import numpy as np
from rtmpc.models.base import ModelDims, RolloutModel


class LinearQuadratic(RolloutModel):
    """x_{t+1} = A x_t + B u_t; return = -(sum_{t<H} x_t'Q x_t + u_t'R u_t + x_H'Qf x_H).

    ``rollout(obs0 (n,), actions (K, H, m)) -> (K,)``. Counts its calls in ``calls``.
    """

    def __init__(self, A, B, Q, R, Qf, low, high):
        self.A, self.B = np.atleast_2d(A).astype(float), np.atleast_2d(B).astype(float)
        self.Q, self.R, self.Qf = (np.atleast_2d(M).astype(float) for M in (Q, R, Qf))
        n, m = self.B.shape
        self.dims = ModelDims(obs_dim=n, act_dim=m, action_low=np.asarray(low, np.float32).reshape(m),
                              action_high=np.asarray(high, np.float32).reshape(m))
        self.calls = 0

    def rollout(self, obs0: np.ndarray, actions: np.ndarray) -> np.ndarray:
        assert actions.dtype == np.float32 and actions.flags.c_contiguous and actions.ndim == 3
        self.calls += 1
        K, H, _ = actions.shape
        x = np.repeat(np.asarray(obs0, float)[None], K, axis=0)
        cost = np.zeros(K)
        for t in range(H):
            u = actions[:, t].astype(float)
            cost += np.einsum("ki,ij,kj->k", x, self.Q, x) + np.einsum("ki,ij,kj->k", u, self.R, u)
            x = x @ self.A.T + u @ self.B.T
        cost += np.einsum("ki,ij,kj->k", x, self.Qf, x)
        return -cost

    def step(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        return self.A @ x + self.B @ u

    def cost(self, x0: np.ndarray, plan: np.ndarray) -> float:
        """Cost of one plan (H, m) from x0 (lower is better)."""
        return float(-self.rollout(x0, np.ascontiguousarray(plan[None], dtype=np.float32))[0])


def lqr_actions(model: LinearQuadratic, x0: np.ndarray, horizon: int) -> np.ndarray:
    """The unconstrained optimal sequence (H, m) from x0, by the finite-horizon Riccati recursion."""
    A, B, Q, R = model.A, model.B, model.Q, model.R
    P = model.Qf
    gains = []
    for _ in range(horizon):
        K = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
        P = Q + A.T @ P @ (A - B @ K)
        gains.append(K)
    gains.reverse()
    x, us = np.asarray(x0, float), []
    for K in gains:
        u = -K @ x
        us.append(u)
        x = A @ x + B @ u
    return np.array(us)


def scalar_system(low=-1.0, high=1.0) -> LinearQuadratic:
    """x' = x + u, cost (x')^2 + u^2 at H = 1: u* = clip(-x0 / 2, low, high)."""
    return LinearQuadratic(A=1.0, B=1.0, Q=0.0, R=1.0, Qf=1.0, low=[low], high=[high])


def point_mass(dt: float = 0.1, bound: float = 2.0) -> LinearQuadratic:
    """A 2-D point mass (state: position (2), velocity (2); action: force (2))."""
    A = np.eye(4)
    A[0, 2] = A[1, 3] = dt
    B = np.zeros((4, 2))
    B[0, 0] = B[1, 1] = 0.5 * dt * dt
    B[2, 0] = B[3, 1] = dt
    Q = np.diag([1.0, 1.0, 0.1, 0.1])
    return LinearQuadratic(A, B, Q, R=0.1 * np.eye(2), Qf=10 * Q, low=[-bound] * 2, high=[bound] * 2)


class NaNAbove(LinearQuadratic):
    """The scalar system, but the return is NaN whenever u_0 > threshold."""

    def __init__(self, threshold: float):
        src = scalar_system()
        super().__init__(src.A, src.B, src.Q, src.R, src.Qf, [-1.0], [1.0])
        self.threshold = threshold

    def rollout(self, obs0, actions):
        out = super().rollout(obs0, actions)
        out[actions[:, 0, 0] > self.threshold] = np.nan
        return out
