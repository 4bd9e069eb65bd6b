"""The TD-MPC-style latent world model, its losses and its update step (PyTorch).

TD-MPC2: Hansen, Su, Wang, "TD-MPC2: Scalable, Robust World Models for Continuous
Control", ICLR 2024 (TD-MPC: Hansen, Wang, Su, ICML 2022). The model is five verbs over a
latent state z (Z entries), with actions normalised to [-1, 1]:

- ``encode(obs (.., O)) -> z (.., Z)``
- ``next(z, a (.., A)) -> z'``: latent dynamics
- ``reward(z, a) -> r (..)``: two-hot discrete regression over ``num_bins`` bins in
  symlog space (``reward_logits`` gives the logits)
- ``Q(z, a) -> (num_q, ..)``: an ensemble of Q heads; TD targets use the *target*
  ensemble (Polyak average, rate ``tau``) and the min of a random pair of heads; the
  planner's terminal value and the policy loss use the mean of a random pair
- ``pi(z, eps) -> (action, mean, log_std, log_prob)``: a tanh-squashed Gaussian policy
  prior, reparameterised with the standard normal ``eps``

Every hidden layer is Linear -> LayerNorm -> activation (TD-MPC2's ``NormedLinear``; TD-MPC2
uses Mish, the default here is SiLU: the same smooth shape, but torch's CPU Mish is about
15x slower forward and backward, and ONNX Runtime has no fast Softplus). The latent
is normalised by SimNorm (``latent_norm: simnorm``, the default): the encoder's and the
dynamics' output layers are Linear -> LayerNorm -> SimNorm, which splits z into groups of
``simnorm_dim`` entries and makes each group a softmax (a point on a simplex). SimNorm
bounds z (every entry in [0, 1], every group summing to 1) however far the dynamics are
rolled out, and biases it towards sparse codes; TD-MPC2 (sec. 3.2 and its ablation,
Fig. 9) found that this, more than the LayerNorms, is what keeps the multi-step
consistency loss and the bootstrapped Q targets from diverging. ``latent_norm:
layernorm`` keeps only the LayerNorm, for that ablation.

Losses of one update (TD-MPC2 eq. 3-4) on B sub-trajectories of H steps, step t weighed
by ``rho^t`` and each loss averaged over t:

- consistency: ``|| next(z_t, a_t) - sg(encode(o_{t+1})) ||^2`` (mean over Z and B), with
  z_0 = encode(o_0) and z_t the model's own rollout;
- reward: soft cross-entropy of ``reward_logits(z_t, a_t)`` against two-hot(r_t);
- value: soft cross-entropy of every Q head at (z_t, a_t) against the TD target
  ``r_t + gamma (1 - terminated_t) min_pair Qtarget(z'_t, pi(z'_t))``, z'_t = encode(o_{t+1});
- termination (episodic models): binary cross-entropy of ``termination_logit(z_{t+1})``;
- policy (separate optimiser, on the detached rollout): ``-(Q_avg(z_t, pi(z_t)) / S +
  entropy_coef * A * H_gauss)``, where S is a running 5-95 % percentile range of Q (at
  least 1) and H_gauss the pre-squash Gaussian entropy sample (TD-MPC2's "scaled entropy").

Shapes: O observation, A action, Z latent, B batch, H horizon, Q heads, N rows.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from rtmpc.configs import from_dict, to_dict
from rtmpc.configs.rundir import atomic_write
from rtmpc.models.base import ModelError
from rtmpc.models.tdmpc.config import LatentModelConfig, LatentTrainConfig
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["LatentWorldModel", "LatentGraph", "LatentLearner", "Mish", "MishExp", "SimNorm", "NormedLinear",
           "EnsembleMLP", "symlog", "symexp", "two_hot", "two_hot_inv", "soft_ce", "save_latent", "load_latent",
           "load_latent_learner", "latent_discount", "make_graph"]

_CKPT_FORMAT = 1


# -- building blocks (all scriptable: the export scripts them into one ONNX graph) --------
class Mish(nn.Module):
    """Mish, ``x tanh(softplus(x))`` (Misra 2019), torch's fused kernel (training)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.mish(x)


class MishExp(nn.Module):
    """Mish in exp form for ONNX: ``x n / (n + 2)``, ``n = e^x (e^x + 2)``.

    The same function (``tanh(log(1 + e^x)) = n / (n + 2)``); ONNX Runtime's Softplus is
    about 20x slower than its Exp on CPU, so the export swaps :class:`Mish` for this.
    The exponent is clamped at 20, where the ratio is 1 in float32.
    """

    def forward(self, x: Tensor) -> Tensor:
        e = torch.exp(torch.clamp(x, max=20.0))
        n = e * (e + 2.0)
        return x * n / (n + 2.0)


class SimNorm(nn.Module):
    """Simplicial normalisation (Lavoie et al. 2022; TD-MPC2 sec. 3.2): the last axis, of
    ``size`` entries, is cut into groups of ``dim`` entries and each group goes through a
    softmax."""

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        if size % dim:
            raise ModelError(f"SimNorm: size {size} is not a multiple of the group size {dim}")
        self.dim, self.size, self.groups = int(dim), int(size), int(size) // int(dim)

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():  # the exported graph: x is (N, Z), N >= 1; constant shapes
            return F.softmax(x.reshape([-1, self.groups, self.dim]), dim=-1).reshape([-1, self.size])
        return F.softmax(x.unflatten(-1, (self.groups, self.dim)), dim=-1).flatten(-2)


class NormedLinear(nn.Module):
    """Linear -> (dropout) -> LayerNorm -> activation (TD-MPC2's ``NormedLinear``)."""

    def __init__(self, n_in: int, n_out: int, act: nn.Module, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.norm = nn.LayerNorm(n_out)
        self.act = act
        self.dropout = float(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(x)
        if self.dropout > 0.0:
            x = F.dropout(x, self.dropout, self.training)
        return self.act(self.norm(x))


_ACTIVATIONS = {"silu": nn.SiLU, "mish": Mish, "elu": nn.ELU, "relu": nn.ReLU}


def activation(name: str) -> nn.Module:
    """The hidden activation module named ``name`` (models.tdmpc.config.ACTIVATIONS)."""
    if name not in _ACTIVATIONS:
        raise ModelError(f"activation {name!r} is not known: choose one of {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def mlp(n_in: int, hidden: list[int], n_out: int, out_act: nn.Module | None = None, act: str = "silu"
        ) -> nn.Sequential:
    """Hidden NormedLinear(act) layers, then NormedLinear(out_act), or a plain Linear when
    ``out_act`` is None (TD-MPC2's ``mlp``)."""
    dims = [n_in, *hidden]
    layers: list[nn.Module] = [NormedLinear(dims[i], dims[i + 1], activation(act)) for i in range(len(hidden))]
    layers.append(NormedLinear(dims[-1], n_out, out_act) if out_act is not None else nn.Linear(dims[-1], n_out))
    return nn.Sequential(*layers)


class EnsembleMLP(nn.Module):
    """``num`` MLPs with two hidden NormedLinear(act) layers, run in one batched matmul.

    ``forward(x (.., in), idx=None, detach=False) -> (num or len(idx), .., out)``: ``idx``
    (int64) picks heads; ``detach`` uses the weights without gradient (the policy loss).
    Dropout follows the first layer, in training mode only.
    """

    def __init__(self, num: int, n_in: int, hidden: int, n_out: int, dropout: float = 0.0, act: str = "silu"
                 ) -> None:
        super().__init__()
        self.num, self.n_in, self.hidden, self.n_out = int(num), int(n_in), int(hidden), int(n_out)
        self.dropout = float(dropout)
        self.w0 = nn.Parameter(torch.empty(num, n_in, hidden))
        self.b0 = nn.Parameter(torch.zeros(num, 1, hidden))
        self.g0 = nn.Parameter(torch.ones(num, 1, hidden))
        self.c0 = nn.Parameter(torch.zeros(num, 1, hidden))
        self.w1 = nn.Parameter(torch.empty(num, hidden, hidden))
        self.b1 = nn.Parameter(torch.zeros(num, 1, hidden))
        self.g1 = nn.Parameter(torch.ones(num, 1, hidden))
        self.c1 = nn.Parameter(torch.zeros(num, 1, hidden))
        self.w2 = nn.Parameter(torch.zeros(num, hidden, n_out))  # zero output layer, as TD-MPC2
        self.b2 = nn.Parameter(torch.zeros(num, 1, n_out))
        self.act = activation(act)

    def _params(self, idx: Optional[Tensor], detach: bool) -> list[Tensor]:
        ps = [self.w0, self.b0, self.g0, self.c0, self.w1, self.b1, self.g1, self.c1, self.w2, self.b2]
        if idx is not None:
            ps = [p.index_select(0, idx) for p in ps]
        if detach:
            ps = [p.detach() for p in ps]
        return ps

    def forward(self, x: Tensor, idx: Optional[Tensor] = None, detach: bool = False) -> Tensor:
        w0, b0, g0, c0, w1, b1, g1, c1, w2, b2 = self._params(idx, detach)
        x2 = x if torch.jit.is_scripting() else x.reshape(-1, self.n_in)  # the exported graph passes (N, in)
        h = torch.matmul(x2, w0) + b0  # (heads, N, hidden)
        if self.dropout > 0.0:
            h = F.dropout(h, self.dropout, self.training)
        h = self.act(F.layer_norm(h, [self.hidden]) * g0 + c0)
        h = self.act(F.layer_norm(torch.matmul(h, w1) + b1, [self.hidden]) * g1 + c1)
        out = torch.matmul(h, w2) + b2
        if torch.jit.is_scripting():  # the exported graph: x is (N, in)
            return out
        return self._unflatten(out, x)

    @torch.jit.unused
    def _unflatten(self, out: Tensor, x: Tensor) -> Tensor:
        """(heads, N, out) -> (heads, .., out) for x (.., in)."""
        return out.reshape(out.shape[0], *x.shape[:-1], self.n_out)


# -- discrete regression and the policy (free functions, scriptable) ---------------------
def symlog(x: Tensor) -> Tensor:
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: Tensor) -> Tensor:
    return torch.sign(x) * (torch.exp(torch.abs(x)) - 1.0)


def two_hot(x: Tensor, vmin: float, vmax: float, num_bins: int) -> Tensor:
    """Scalars (..) -> soft two-hot targets (.., bins) over symlog(x) in [vmin, vmax]."""
    width = (vmax - vmin) / (num_bins - 1)
    pos = (torch.clamp(symlog(x), vmin, vmax) - vmin) / width
    lo = torch.clamp(torch.floor(pos), 0, num_bins - 1)
    frac = (pos - lo).unsqueeze(-1)
    lo_i = lo.long().unsqueeze(-1)
    hi_i = torch.clamp(lo_i + 1, max=num_bins - 1)
    out = torch.zeros(x.shape + (num_bins,), dtype=x.dtype, device=x.device)
    out.scatter_add_(-1, lo_i, 1.0 - frac)
    out.scatter_add_(-1, hi_i, frac)  # at vmax: lo = hi = last bin, frac = 0
    return out


def two_hot_inv(logits: Tensor, bins: Tensor) -> Tensor:
    """Logits (.., bins) -> scalars (..): symexp of the softmax-weighted bin centres."""
    # (.., bins) @ (bins, 1): ONNX Runtime's MatMul with a 1-D operand is ~10x slower than this
    return symexp(torch.matmul(F.softmax(logits, dim=-1), bins.unsqueeze(-1)).squeeze(-1))


def soft_ce(logits: Tensor, target: Tensor, vmin: float, vmax: float) -> Tensor:
    """Cross-entropy (..) of logits (.., bins) against two-hot(target (..))."""
    return -(two_hot(target, vmin, vmax, logits.shape[-1]) * F.log_softmax(logits, dim=-1)).sum(-1)


def squashed_gaussian(head: Tensor, eps: Tensor, log_std_min: Tensor,
                      log_std_dif: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Policy head output (.., 2A) and noise eps (.., A) -> (action, mean, log_std, log_prob).

    ``log_std = min + dif (tanh(x) + 1) / 2`` (soft bounds), ``action = tanh(mu + eps std)``,
    ``mean = tanh(mu)``, ``log_prob`` the pre-squash Gaussian log-density of eps (..)
    (TD-MPC2's entropy term uses it; the squash correction is not included).
    """
    mu, raw = head.chunk(2, dim=-1)
    log_std = log_std_min + 0.5 * log_std_dif * (torch.tanh(raw) + 1.0)
    log_prob = (-0.5 * eps * eps - log_std - 0.9189385332046727).sum(-1)  # 0.5 log(2 pi)
    action = torch.tanh(mu + eps * torch.exp(log_std))
    return action, torch.tanh(mu), log_std, log_prob


def _init_weights(module: nn.Module, generator: torch.Generator | None) -> None:
    """TD-MPC2's init: Linear weights truncated normal (std 0.02), biases 0."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04, generator=generator)
                nn.init.zeros_(m.bias)
            elif isinstance(m, EnsembleMLP):
                for w in (m.w0, m.w1):
                    nn.init.trunc_normal_(w, std=0.02, a=-0.04, b=0.04, generator=generator)


# -- the world model ---------------------------------------------------------------------
class LatentWorldModel(nn.Module):
    """Encoder, latent dynamics, reward, Q ensemble (+ target) and policy prior.

    ``LatentWorldModel(obs_dim, act_dim, cfg, action_low, action_high, seed)``; the raw
    action bounds (A,) are kept to map actions to and from [-1, 1]. See the module
    docstring for the verbs; all take normalised actions.
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: LatentModelConfig, action_low, action_high,
                 seed: int | None = None) -> None:
        super().__init__()
        low = torch.as_tensor(np.asarray(action_low, np.float32).reshape(-1))
        high = torch.as_tensor(np.asarray(action_high, np.float32).reshape(-1))
        if low.shape != (act_dim,) or high.shape != (act_dim,) or not bool(torch.all(low < high)):
            raise ModelError(f"action bounds must be two ({act_dim},) arrays with low < high, got "
                             f"{low.tolist()} and {high.tolist()}")
        if not (bool(torch.all(torch.isfinite(low))) and bool(torch.all(torch.isfinite(high)))):
            raise ModelError(f"action bounds must be finite, got {low.tolist()} and {high.tolist()}")
        self.obs_dim, self.act_dim, self.latent_dim, self.cfg = int(obs_dim), int(act_dim), cfg.latent_dim, cfg
        z, h, a = cfg.latent_dim, cfg.hidden, act_dim

        def latent_out() -> nn.Module:
            return SimNorm(cfg.simnorm_dim, z) if cfg.latent_norm == "simnorm" else nn.Identity()

        act = cfg.activation
        self.encoder = mlp(obs_dim, [cfg.enc_hidden] * (cfg.enc_layers - 1), z, latent_out(), act)
        self.dynamics = mlp(z + a, [h, h], z, latent_out(), act)
        self.reward_head = mlp(z + a, [h, h], cfg.num_bins, None, act)
        self.pi_head = mlp(z, [h, h], 2 * a, None, act)
        self.qs = EnsembleMLP(cfg.num_q, z + a, h, cfg.num_bins, cfg.dropout, act)
        self.termination_head = mlp(z, [h, h], 1, None, act) if cfg.episodic else None
        generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        _init_weights(self, generator)
        with torch.no_grad():
            self.reward_head[-1].weight.zero_()  # zero reward and Q outputs at the start (TD-MPC2)
        self.target_qs = copy.deepcopy(self.qs).requires_grad_(False)
        self.register_buffer("bins", torch.linspace(cfg.vmin, cfg.vmax, cfg.num_bins))
        self.register_buffer("act_mid", 0.5 * (low + high))
        self.register_buffer("act_half", 0.5 * (high - low))
        self.register_buffer("log_std_min", torch.tensor(float(cfg.log_std_min)))
        self.register_buffer("log_std_dif", torch.tensor(float(cfg.log_std_max - cfg.log_std_min)))

    # The verbs ----------------------------------------------------------------------
    def encode(self, obs: Tensor) -> Tensor:
        return self.encoder(obs)

    def next(self, z: Tensor, a: Tensor) -> Tensor:
        return self.dynamics(torch.cat([z, a], dim=-1))

    def reward_logits(self, z: Tensor, a: Tensor) -> Tensor:
        return self.reward_head(torch.cat([z, a], dim=-1))

    def reward(self, z: Tensor, a: Tensor) -> Tensor:
        return two_hot_inv(self.reward_logits(z, a), self.bins)

    def pi(self, z: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return squashed_gaussian(self.pi_head(z), eps, self.log_std_min, self.log_std_dif)

    def q_logits(self, z: Tensor, a: Tensor, idx: Optional[Tensor] = None, target: bool = False,
                 detach: bool = False) -> Tensor:
        za = torch.cat([z, a], dim=-1)
        if target:
            return self.target_qs(za, idx, False)
        return self.qs(za, idx, detach)

    def Q(self, z: Tensor, a: Tensor, idx: Optional[Tensor] = None, target: bool = False,  # noqa: N802
          detach: bool = False) -> Tensor:
        """Q values (heads, ..) of the heads ``idx`` (all when None)."""
        return two_hot_inv(self.q_logits(z, a, idx, target, detach), self.bins)

    def termination_logit(self, z: Tensor) -> Tensor:
        if self.termination_head is None:
            raise ModelError("this model is not episodic: it has no termination head")
        return self.termination_head(z).squeeze(-1)

    # Actions ------------------------------------------------------------------------
    def normalize_action(self, a: Tensor) -> Tensor:
        return (a - self.act_mid) / self.act_half

    def denormalize_action(self, a: Tensor) -> Tensor:
        return self.act_mid + self.act_half * a

    @torch.no_grad()
    def soft_update_target(self, tau: float) -> None:
        """target <- target + tau (online - target) (Polyak averaging)."""
        torch._foreach_lerp_(list(self.target_qs.parameters()), list(self.qs.parameters()), tau)

    def num_params(self) -> int:
        """Trainable parameters (the target ensemble not counted)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


class LatentGraph(nn.Module):
    """What the ONNX file computes: K candidate rollouts, or n policy-prior trajectories.

    ``forward(obs (1, O), actions (K, H, A), pi_eps (K, A), q_idx (2,) int64,
    prior_eps (n, H', A)) -> (returns (K,), prior_actions (n, H', A), z0 (1, Z))``

    Exactly one of K and n is non-zero: n = 0 scores the candidates (prior_actions comes
    back empty), K = 0 samples prior trajectories (returns comes back empty). One graph
    thus serves both calls and computes only the part asked for (ONNX Runtime runs every
    node outside an ``If`` whatever outputs are requested).

    - returns: ``sum_t gamma^t c_t r_t + gamma^H c_H Q_avg(z_H, pi(z_H, pi_eps))`` with z_0 =
      encode(obs), z_{t+1} = next(z_t, a_t), ``Q_avg`` the mean of heads ``q_idx`` and c_t
      = 1 until the termination head predicts an end (episodic models; else always 1)
      (TD-MPC2's ``_estimate_value``);
    - prior_actions: ``a_t = pi(z_t, prior_eps_t)``, ``z_{t+1} = next(z_t, a_t)`` from z_0;
    - actions in and out are raw (the task's units).
    """

    def __init__(self, model: LatentWorldModel, gamma: float) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("gamma", torch.tensor(float(gamma)))

    def _discount(self, weight: Tensor, z: Tensor) -> Tensor:
        """(N,) weight of the next step's reward after reaching z: gamma times the current one
        (the episodic graph also zeroes it where the episode has ended)."""
        return weight * self.gamma

    def _returns(self, z0: Tensor, actions: Tensor, pi_eps: Tensor, q_idx: Tensor) -> Tensor:
        m = self.model
        k = actions.shape[0]
        z = z0.expand(k, z0.shape[1])
        acts = (actions - m.act_mid) / m.act_half
        ret = torch.zeros(k, dtype=z.dtype)
        weight = torch.ones(k, dtype=z.dtype)
        for t in range(actions.shape[1]):
            za = torch.cat([z, acts[:, t]], dim=-1)  # one input for both heads
            ret = ret + weight * two_hot_inv(m.reward_head(za), m.bins)
            z = m.dynamics(za)
            weight = self._discount(weight, z)
        # Terminal value: Q of the policy prior's action, mean of the chosen pair of heads
        a_pi = m.pi(z, pi_eps)[0]
        return ret + weight * m.Q(z, a_pi, q_idx).mean(0)

    def _prior(self, z0: Tensor, prior_eps: Tensor) -> Tensor:
        m = self.model
        zp = z0.expand(prior_eps.shape[0], z0.shape[1])
        prior = []
        for t in range(prior_eps.shape[1]):
            a = m.pi(zp, prior_eps[:, t])[0]
            prior.append(a)
            zp = m.next(zp, a)
        return m.act_mid + m.act_half * torch.stack(prior, dim=1)

    def forward(self, obs: Tensor, actions: Tensor, pi_eps: Tensor, q_idx: Tensor,
                prior_eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z0 = self.model.encode(obs)
        if prior_eps.shape[0] > 0:
            prior_actions = self._prior(z0, prior_eps)
            returns = torch.zeros(actions.shape[0], dtype=z0.dtype)
        else:
            returns = self._returns(z0, actions, pi_eps, q_idx)
            prior_actions = torch.zeros([0, prior_eps.shape[1], prior_eps.shape[2]], dtype=z0.dtype)
        return returns, prior_actions, z0


class EpisodicLatentGraph(LatentGraph):
    """:class:`LatentGraph` for an episodic model: rollouts stop at predicted terminations."""

    def _discount(self, weight: Tensor, z: Tensor) -> Tensor:
        return weight * self.gamma * (self.model.termination_head(z).squeeze(-1) <= 0.0).to(z.dtype)


def make_graph(model: LatentWorldModel, gamma: float) -> LatentGraph:
    """The :class:`LatentGraph` (episodic or not) of ``model`` with discount ``gamma``."""
    cls = EpisodicLatentGraph if model.termination_head is not None else LatentGraph
    return cls(model, gamma)


# -- the update --------------------------------------------------------------------------
class RunningScale:
    """TD-MPC2's Q scale: Polyak average (rate tau) of the 5-95 % percentile range, >= 1."""

    def __init__(self, tau: float) -> None:
        self.tau = float(tau)
        self.value = torch.ones(())

    def update(self, x: Tensor) -> None:
        q = torch.quantile(x.detach().reshape(-1), torch.tensor([0.05, 0.95], dtype=x.dtype))
        self.value.lerp_(torch.clamp(q[1] - q[0], min=1.0), self.tau)


class LatentLearner:
    """One TD-MPC2 update per :meth:`update` call (see the module docstring for the losses).

    Two Adam optimisers: the world model (encoder at ``lr * enc_lr_scale``) and the policy
    prior (eps 1e-5). ``seed`` seeds the generator of the policy noise and head pairs;
    dropout draws from torch's global generator (seed it with ``torch.manual_seed``).
    """

    def __init__(self, model: LatentWorldModel, cfg: LatentTrainConfig, discount: float, seed: int = 0) -> None:
        if not 0.0 < discount < 1.0:
            raise ModelError(f"discount = {discount} must be in (0, 1)")
        self.model, self.cfg, self.discount = model, cfg, float(discount)
        enc = list(model.encoder.parameters())
        rest = [p for mod in (model.dynamics, model.reward_head, model.qs) for p in mod.parameters()]
        if model.termination_head is not None:
            rest += list(model.termination_head.parameters())
        self.optim = torch.optim.Adam([{"params": enc, "lr": cfg.lr * cfg.enc_lr_scale}, {"params": rest}],
                                      lr=cfg.lr, fused=True)
        self.pi_optim = torch.optim.Adam(model.pi_head.parameters(), lr=cfg.lr, eps=1e-5, fused=True)
        self.scale = RunningScale(cfg.tau)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.updates = 0

    def _pair(self) -> Tensor:
        return torch.randperm(self.model.cfg.num_q, generator=self.generator)[:2]

    def _eps(self, like: Tensor) -> Tensor:
        return torch.randn(like.shape[:-1] + (self.model.act_dim,), generator=self.generator)

    @torch.no_grad()
    def td_target(self, next_z: Tensor, reward: Tensor, terminated: Tensor) -> Tensor:
        """``r + gamma (1 - terminated) min(Qtarget_i, Qtarget_j)(z', pi(z'))`` (..), the pair
        (i, j) drawn at random, Q from the *target* ensemble."""
        a = self.model.pi(next_z, self._eps(next_z))[0]
        q = self.model.Q(next_z, a, self._pair(), target=True).min(0).values
        return reward + self.discount * (1.0 - terminated) * q

    def update(self, obs: Tensor, act: Tensor, reward: Tensor, terminated: Tensor) -> dict[str, float]:
        """One update on obs (H+1, B, O), normalised act (H, B, A), reward (H, B), terminated
        (H, B) float; returns the losses and norms as floats."""
        m, cfg = self.model, self.cfg
        h = act.shape[0]
        if obs.shape[0] != h + 1 or reward.shape[0] != h or terminated.shape[0] != h:
            raise ModelError(f"batch shapes obs {tuple(obs.shape)}, act {tuple(act.shape)}, reward "
                             f"{tuple(reward.shape)}: expected H+1, H, H steps")
        rho = cfg.rho ** torch.arange(h, dtype=torch.float32)
        with torch.no_grad():
            next_z = m.encode(obs[1:])
            td = self.td_target(next_z, reward, terminated)

        m.train()
        # Latent rollout
        z = m.encode(obs[0])
        zs = [z]
        consistency = obs.new_zeros(())
        for t in range(h):
            z = m.next(z, act[t])
            consistency = consistency + rho[t] * F.mse_loss(z, next_z[t])
            zs.append(z)
        zs_all = torch.stack(zs)  # (H+1, B, Z)
        # Predictions
        reward_ce = soft_ce(m.reward_logits(zs_all[:-1], act), reward, m.cfg.vmin, m.cfg.vmax)  # (H, B)
        q_ce = soft_ce(m.q_logits(zs_all[:-1], act), td.unsqueeze(0), m.cfg.vmin, m.cfg.vmax)  # (Q, H, B)
        reward_loss = (reward_ce.mean(1) * rho).sum() / h
        value_loss = (q_ce.mean((0, 2)) * rho).sum() / h
        consistency = consistency / h
        total = cfg.consistency_coef * consistency + cfg.reward_coef * reward_loss + cfg.value_coef * value_loss
        term_loss = torch.zeros(())
        if m.termination_head is not None:
            term_loss = F.binary_cross_entropy_with_logits(m.termination_logit(zs_all[1:]), terminated)
            total = total + cfg.termination_coef * term_loss
        # Update the model
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for g in self.optim.param_groups for p in g["params"]], cfg.grad_clip_norm)
        self.optim.step()
        self.optim.zero_grad(set_to_none=True)

        # Update the policy prior
        pi_loss, entropy = self._update_pi(zs_all.detach())
        # Update the target Q ensemble
        m.soft_update_target(cfg.tau)
        m.eval()
        self.updates += 1
        return {"consistency_loss": consistency.item(), "reward_loss": reward_loss.item(),
                "value_loss": value_loss.item(), "termination_loss": term_loss.item(), "total_loss": total.item(),
                "grad_norm": grad_norm.item(), "pi_loss": pi_loss, "pi_entropy": entropy,
                "pi_scale": self.scale.value.item()}

    def _update_pi(self, zs: Tensor) -> tuple[float, float]:
        m, cfg = self.model, self.cfg
        a, _, _, log_prob = m.pi(zs, self._eps(zs))
        q = m.Q(zs, a, self._pair(), detach=True).mean(0)  # (H+1, B)
        self.scale.update(q[0])
        q = q / self.scale.value
        entropy = -log_prob * m.act_dim  # TD-MPC2's scaled entropy
        rho = cfg.rho ** torch.arange(zs.shape[0], dtype=torch.float32)
        loss = (-(cfg.entropy_coef * entropy + q).mean(1) * rho).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.pi_head.parameters(), cfg.grad_clip_norm)
        self.pi_optim.step()
        self.pi_optim.zero_grad(set_to_none=True)
        return loss.item(), -log_prob.mean().item()

    # Saving -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"optim": self.optim.state_dict(), "pi_optim": self.pi_optim.state_dict(),
                "scale": self.scale.value.clone(), "generator": self.generator.get_state(),
                "updates": self.updates, "discount": self.discount, "train_cfg": to_dict(self.cfg)}

    def load_state_dict(self, state: dict) -> None:
        self.optim.load_state_dict(state["optim"])
        self.pi_optim.load_state_dict(state["pi_optim"])
        self.scale.value = state["scale"].clone()
        self.generator.set_state(state["generator"])
        self.updates = int(state["updates"])


def save_latent(model: LatentWorldModel, path: str | os.PathLike, learner: LatentLearner | None = None,
                extra: dict | None = None) -> Path:
    """Checkpoint the model (and the learner's optimisers, scale and counters) atomically."""
    blob = {"format": _CKPT_FORMAT, "kind": "latent", "obs_dim": model.obs_dim, "act_dim": model.act_dim,
            "cfg": to_dict(model.cfg), "action_low": (model.act_mid - model.act_half).tolist(),
            "action_high": (model.act_mid + model.act_half).tolist(), "state": model.state_dict(),
            "learner": learner.state_dict() if learner is not None else None, "extra": dict(extra or {})}
    return atomic_write(path, lambda f: torch.save(blob, f))


def _read(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"latent checkpoint {p} not found: train one with rtmpc train (kind: latent)")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)  # tensors and plain data only: no pickle code runs
    except Exception as err:  # torch raises several types for a damaged file
        raise ModelError(f"latent checkpoint {p} is damaged ({str(err).splitlines()[0][:200]})") from None
    if not isinstance(blob, dict) or blob.get("kind") != "latent" or blob.get("format") != _CKPT_FORMAT:
        raise ModelError(f"{p} is not a format-{_CKPT_FORMAT} latent checkpoint")
    return blob


def load_latent(path: str | os.PathLike) -> LatentWorldModel:
    """The model saved by :func:`save_latent` (eval mode)."""
    blob = _read(path)
    model = LatentWorldModel(blob["obs_dim"], blob["act_dim"], from_dict(LatentModelConfig, blob["cfg"]),
                             blob["action_low"], blob["action_high"])
    model.load_state_dict(blob["state"])
    return model.eval()


def latent_discount(path: str | os.PathLike) -> float:
    """The discount per agent step the checkpoint's model was trained with."""
    state = _read(path).get("learner")
    if state is None:
        raise ModelError(f"latent checkpoint {path} does not record its discount: export it with gamma given")
    return float(state["discount"])


def load_latent_learner(path: str | os.PathLike, cfg: LatentTrainConfig, seed: int = 0
                        ) -> tuple[LatentWorldModel, LatentLearner, dict]:
    """Model, learner (optimisers, scale, counters restored) and the checkpoint's ``extra``."""
    blob = _read(path)
    model = load_latent(path)
    state = blob.get("learner")
    if state is None:
        raise ModelError(f"latent checkpoint {path} holds no optimiser state: it cannot be resumed")
    learner = LatentLearner(model, cfg, state["discount"], seed)
    learner.load_state_dict(state)
    return model, learner, blob.get("extra") or {}
