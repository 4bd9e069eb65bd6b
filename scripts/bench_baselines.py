"""PyTorch baselines for ``rtmpc bench planner`` (torch allowed here; planners/ never imports it).

- :class:`TorchPlanner`: a plain batched PyTorch CEM / MPPI, written the way one would
  without thinking about speed: the same sampling, elites, weights and momentum as
  :class:`planners.trajectory.TrajectoryPlanner`, the rollout through the ensemble's own
  ``predict`` (batched ``baddbmm`` over ``[E, M, .]``), TSinf with P particles per
  candidate, under ``torch.inference_mode``.
- :class:`PytorchMPPI`: pytorch_mppi's ``MPPI`` (Williams et al. 2017) when installed,
  with ``rollout_samples = P`` and the same ensemble as its dynamics; I iterations are I
  ``command`` calls, the nominal sequence shifted on the first only.
- :func:`torch_gemm`: one ``[M, in] @ [in, out]`` fp32 product through torch (MKL here),
  timed for the FLOP bound.

All three see the very weights the ONNX file was exported from.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from rtmpc.models.pets.ensemble import ProbabilisticEnsemble

__all__ = ["TorchPlanner", "LatentTorchPlanner", "PytorchMPPI", "pytorch_mppi_available", "torch_gemm"]


def torch_gemm(rows: int, n_in: int, n_out: int) -> Callable[[], object]:
    """One fp32 ``torch.mm`` ([rows, in] @ [in, out] into a reused output) per call, with
    torch's current thread count (MKL here)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(rows, n_in, generator=g), torch.randn(n_in, n_out, generator=g)
    out = torch.empty(rows, n_out)
    return lambda: torch.mm(a, b, out=out)


class TorchPlanner:
    """Plain batched PyTorch CEM or MPPI over a PETS ensemble (TSinf, P particles).

    kind: "cem" (uniform elite weights) or "mppi" (exponential weights scaled by the
    elites' spread, as planners.mppi); samples K, horizon H, iterations I, elites,
    temperature, alpha (momentum), init_std / min_std (fractions of half the action
    range), low / high (A,) bounds, particles P (a multiple of the members), gamma.
    ``plan(obs (O,)) -> action (A,)`` numpy; warm-started like the rtmpc planners.
    """

    prior_samples = 0  # sequences from a policy prior (LatentTorchPlanner)

    def __init__(self, ensemble: ProbabilisticEnsemble, *, kind: str, samples: int, horizon: int,
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
        self.gen = torch.Generator().manual_seed(seed)
        self.mean = (0.5 * (self.low + self.high)).expand(horizon, -1).clone()

    def rollout(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """obs (O,), actions (K, H, A) -> discounted returns (K,), TSinf over [E, K*pe, O]."""
        e, (k, h, _) = self.model.members, actions.shape
        state = obs.expand(e, k * self.pe, -1)
        acts = actions.repeat_interleave(self.pe, dim=0)
        ret = torch.zeros(e, k * self.pe)
        for t in range(h):
            dm, dlv, rm, _ = self.model.predict(state, acts[:, t].expand(e, -1, -1))
            state = state + dm + torch.exp(0.5 * dlv) * torch.randn(dm.shape, generator=self.gen)
            ret += self.gamma**t * rm
        return ret.view(e, k, self.pe).mean(dim=(0, 2))

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


class LatentTorchPlanner(TorchPlanner):
    """The same plain PyTorch planner over a TD-MPC-style latent model, as TD-MPC2 plans:
    ``prior_samples`` policy-prior trajectories drawn once per plan join every iteration's
    samples; a candidate's score is its discounted latent rewards plus the discounted
    terminal value (mean of a random pair of Q heads at the prior's action), computed by
    the model's own eager graph (:func:`models.tdmpc.model.make_graph`, the graph the ONNX file
    was exported from)."""

    def __init__(self, model, *, gamma: float, prior_samples: int, **kw) -> None:
        from rtmpc.models.tdmpc.model import make_graph

        super().__init__(model, **kw)
        self.graph = make_graph(model, gamma).eval()
        self.prior_samples = int(prior_samples)
        self.num_q = model.cfg.num_q
        self.no_prior = torch.zeros(0, kw["horizon"], model.act_dim)

    def _pair(self) -> torch.Tensor:
        i, j = torch.randperm(self.num_q, generator=self.gen)[:2]
        return torch.stack([i, j])

    def prior(self, obs: torch.Tensor) -> torch.Tensor:
        n, a = self.prior_samples, self.low.shape[0]
        if n == 0:
            return torch.empty(0, self.h, a)
        eps = torch.randn(n, self.h, a, generator=self.gen)
        return self.graph(obs[None], torch.zeros(0, self.h, a), torch.zeros(0, a), self._pair(), eps)[1]

    def rollout(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        k, _, a = actions.shape
        eps = torch.randn(k, a, generator=self.gen)
        return self.graph(obs[None], actions, eps, self._pair(), self.no_prior)[0]


def pytorch_mppi_available() -> bool:
    try:
        import pytorch_mppi  # noqa: F401
    except ImportError:
        return False
    return True


class PytorchMPPI:
    """pytorch_mppi's MPPI over the ensemble: K samples, H steps, rollout_samples = P.

    The state it carries is (obs, reward) (O + 1 entries): the dynamics write the
    predicted reward into the last entry and the running cost reads it back (cost =
    -reward). Rollout sample m of candidate k (row m * K + k) runs on member m mod E,
    with TSinf sampling as in :class:`TorchPlanner`.
    """

    def __init__(self, ensemble: ProbabilisticEnsemble, *, samples: int, horizon: int, iterations: int,
                 init_std: float, low: np.ndarray, high: np.ndarray, particles: int, temperature: float = 1.0,
                 seed: int = 0) -> None:
        from pytorch_mppi import MPPI

        self.model = ensemble.eval()
        self.iterations = iterations
        e, o = ensemble.members, ensemble.obs_dim
        self.o, self.k, self.p = o, samples, particles
        low_t = torch.as_tensor(np.asarray(low, np.float32))
        high_t = torch.as_tensor(np.asarray(high, np.float32))
        sigma = torch.diag((init_std * 0.5 * (high_t - low_t)) ** 2)
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # pytorch_mppi draws its noise from the global generator
        c = particles // e

        def dynamics(state: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            n = state.shape[0]
            kk = n // particles
            # rows m * K + k, m = j * E + member -> [E, c * K, .]
            s = state[:, :o].reshape(c, e, kk, o).transpose(0, 1).reshape(e, c * kk, o)
            a = u.reshape(c, e, kk, -1).transpose(0, 1).reshape(e, c * kk, -1)
            dm, dlv, rm, _ = self.model.predict(s, a)
            nxt = s + dm + torch.exp(0.5 * dlv) * torch.randn(dm.shape, generator=gen)
            out = torch.cat([nxt, rm.unsqueeze(-1)], dim=-1)
            return out.reshape(e, c, kk, o + 1).transpose(0, 1).reshape(n, o + 1)

        def running_cost(state: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            return -state[:, -1]

        self.mppi = MPPI(dynamics, running_cost, o + 1, sigma, num_samples=samples, horizon=horizon,
                         lambda_=temperature, u_min=low_t, u_max=high_t, rollout_samples=particles)

    @torch.inference_mode()
    def plan(self, obs: np.ndarray) -> np.ndarray:
        state = torch.cat([torch.as_tensor(np.asarray(obs, np.float32)), torch.zeros(1)])
        action = None
        for i in range(self.iterations):
            action = self.mppi.command(state, shift_nominal_trajectory=(i == 0))
        return action.numpy().astype(np.float64)
