"""A plain PyTorch sampling planner and GEMM timer: the baselines ``rtmpc bench planner``
measures rtmpc's planners against (torch allowed here; planners/ never imports it).

- :class:`TorchPlanner`: a plain batched PyTorch CEM / MPPI, written the way one would
  without thinking about speed: the same sampling, elites, weights and momentum as
  :class:`planners.trajectory.TrajectoryPlanner`, under ``torch.inference_mode``; each
  family's ``bench`` module subclasses it with its model's rollout, on the very weights
  the ONNX file was exported from.
- :func:`torch_gemm`: one ``[M, in] @ [in, out]`` fp32 product through torch (MKL here),
  timed for the FLOP bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["TorchPlanner", "torch_gemm"]


def torch_gemm(rows: int, n_in: int, n_out: int) -> Callable[[], object]:
    """One fp32 ``torch.mm`` ([rows, in] @ [in, out] into a reused output) per call, with
    torch's current thread count (MKL here)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(rows, n_in, generator=g), torch.randn(n_in, n_out, generator=g)
    out = torch.empty(rows, n_out)
    return lambda: torch.mm(a, b, out=out)


class TorchPlanner:
    """Plain batched PyTorch CEM or MPPI over a model's own torch graph; a family's subclass
    gives :meth:`rollout` (and :meth:`prior` where its model has a policy prior).

    kind: "cem" (uniform elite weights) or "mppi" (exponential weights scaled by the
    elites' spread, as planners.mppi); samples K, horizon H, iterations I, elites,
    temperature, alpha (momentum), init_std / min_std (fractions of half the action
    range), low / high (A,) bounds, particles P (a multiple of the members), gamma.
    ``plan(obs (O,)) -> action (A,)`` numpy; warm-started like the rtmpc planners.
    """

    prior_samples = 0  # sequences from a policy prior (LatentTorchPlanner)

    def __init__(self, ensemble, *, kind: str, samples: int, horizon: int,
                 iterations: int, elites: int, temperature: float, alpha: float, init_std: float,
                 min_std: float, low: np.ndarray, high: np.ndarray, particles: int = 1, gamma: float = 1.0,
                 seed: int = 0) -> None:
        if kind not in ("cem", "mppi"):
            raise ValueError(f"kind = {kind!r}: choose cem or mppi")
        members = getattr(ensemble, "members", 1)
        if particles % members:
            raise ValueError(f"particles = {particles} must be a multiple of members = {members}")
        self.model = ensemble.eval()
        self.kind, self.k, self.h, self.iterations = kind, samples, horizon, iterations
        self.n_elite = elites if elites > 0 else samples
        self.temperature, self.alpha, self.gamma = temperature, alpha, gamma
        self.low = torch.as_tensor(np.asarray(low, np.float32))
        self.high = torch.as_tensor(np.asarray(high, np.float32))
        half = 0.5 * (self.high - self.low)
        self.std_init, self.std_min = init_std * half, min_std * half
        self.pe = particles // members
        self.evaluations = 0  # model evaluations run (a subclass's rollout counts them)
        self.gen = torch.Generator().manual_seed(seed)
        self.mean = (0.5 * (self.low + self.high)).expand(horizon, -1).clone()

    def rollout(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """obs (O,), actions (K, H, A) -> discounted returns (K,)."""
        raise NotImplementedError

    def prior(self, obs: torch.Tensor) -> torch.Tensor:
        """Sequences (n, H, A) that join every iteration's samples (none here)."""
        return torch.empty(0, self.h, self.low.shape[0])

    @torch.inference_mode()
    def plan(self, obs: np.ndarray) -> np.ndarray:
        obs_t = torch.as_tensor(np.asarray(obs, np.float32))
        mean = torch.cat([self.mean[1:], self.mean[-1:]])  # warm start: shift by one step
        std = self.std_init.expand_as(mean).clone()
        prior = self.prior(obs_t)  # (n, H, A), drawn once per plan
        for _ in range(self.iterations):
            # Sample actions
            noise = torch.randn(self.k - 1 - len(prior), self.h, mean.shape[1], generator=self.gen)
            actions = torch.cat([prior, mean[None], mean + std * noise]).clamp(self.low, self.high)
            # Score sequences
            returns = self.rollout(obs_t, actions)
            returns = torch.where(torch.isfinite(returns), returns, -math.inf)
            # Update parameters
            scores, idx = torch.topk(returns, self.n_elite)
            if self.kind == "cem":
                w = torch.isfinite(scores).float()
            else:
                top, low = scores.max(), scores[torch.isfinite(scores)].min()
                spread = float(top - low)
                scale = 1.0 / (self.temperature * spread) if spread > 0 else 0.0
                w = torch.exp((scores - top) * scale)
            w = w / w.sum()
            elite = actions[idx]
            m = torch.einsum("i,iha->ha", w, elite)
            v = torch.einsum("i,iha->ha", w, (elite - m) ** 2)
            mean = self.alpha * mean + (1 - self.alpha) * m
            std = torch.minimum(torch.maximum(self.alpha * std + (1 - self.alpha) * v.sqrt(), self.std_min),
                                self.std_init)
        self.mean = mean
        return mean[0].clamp(self.low, self.high).numpy().astype(np.float64)
