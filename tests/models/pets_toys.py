"""Toy systems and hand-built ensembles with known answers for the PETS tests."""

from __future__ import annotations

import numpy as np
import torch
from rtmpc.models.common.buffer import ReplayBuffer
from rtmpc.models.common.ensemble import ProbabilisticEnsemble
from rtmpc.models.common.ensemble_config import EnsembleConfig

SMALL = EnsembleConfig(members=5, hidden=32, layers=2)


def sine_step(x: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The known 1-D system: x' = x + 0.1 sin(3x) + 0.1 u (noise added by the caller)."""
    return x + 0.1 * np.sin(3.0 * x) + 0.1 * u


def sine_buffer(n: int, rng: np.random.Generator, noise: float = 0.01, span: float = 1.0) -> ReplayBuffer:
    """n transitions of the sine system with x, u ~ U(-span, span); reward -x'^2."""
    x = rng.uniform(-span, span, n)
    u = rng.uniform(-1.0, 1.0, n)
    x1 = sine_step(x, u) + noise * rng.standard_normal(n)
    buf = ReplayBuffer(1, 1, capacity=16)
    buf.add_batch(x[:, None], u[:, None], -x1**2, x1[:, None], np.zeros(n, bool), np.arange(n) // 100)
    return buf


def constant_ensemble(deltas: np.ndarray, rewards: np.ndarray, obs_dim: int = 2, act_dim: int = 1,
                      learned_reward: bool = True) -> ProbabilisticEnsemble:
    """Member e predicts delta_obs = deltas[e] (O,) and reward = rewards[e] whatever the
    input, with a negligible std (~3e-7): hidden weights and head weights are zero."""
    e = len(deltas)
    cfg = EnsembleConfig(members=e, hidden=4, layers=1, learned_reward=learned_reward)
    model = ProbabilisticEnsemble(obs_dim, act_dim, cfg, seed=0)
    out = model.out_dim
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        mean = np.asarray(deltas, np.float32).reshape(e, obs_dim)
        if learned_reward:
            mean = np.concatenate([mean, np.asarray(rewards, np.float32).reshape(e, 1)], axis=1)
        model.head.bias[:, 0, :out] = torch.from_numpy(mean)
        model.head.bias[:, 0, out:] = -40.0
        model.max_logvar.fill_(0.5)
        model.min_logvar.fill_(-30.0)
    return model.eval()
