"""Soft actor-critic in PyTorch, small and by hand (what MBPO trains on its mixed batches).

Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", 2018 (arXiv:1812.05905):
twin Q-networks with the minimum in the target (clipped double Q), Polyak-averaged target
critics, a tanh-squashed Gaussian actor trained by the reparameterisation trick, and the
temperature alpha tuned towards an entropy target (-A by default), eq. 17-18. Written after
reading skrl's SAC algorithm page, jannerm/mbpo's softlearning SAC and mbrl-lib's pytorch_sac
port; none is installed here, and each owns a replay loop that does not take MBPO's mixed
real/model batches, so the few lines of the update are written here.

Actions: the actor outputs u ~ N(mean, std) over R^A, squashed a = low + (tanh(u) + 1) / 2 *
(high - low), so the log-density carries the tanh and scale corrections
``log pi(a) = log N(u) - sum log(1 - tanh(u)^2) - sum log((high - low) / 2)``.
The deployed action is the deterministic one, the squashed mean (:class:`ActorPolicy`).

Shapes: B batch rows, O observation size, A action size.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .config import SACConfig

__all__ = ["Actor", "TwinQ", "SAC", "ActorPolicy"]


def _mlp(n_in: int, hidden: tuple[int, ...], n_out: int, layer_norm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(n_in, h), *([nn.LayerNorm(h)] if layer_norm else []), nn.ReLU()]
        n_in = h
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """``obs (B, O) -> mean, log_std (B, A)`` of the pre-squash Gaussian; bounds as buffers."""

    def __init__(self, obs_dim: int, act_dim: int, low, high, cfg: SACConfig):
        super().__init__()
        self.net = _mlp(obs_dim, cfg.hidden, 2 * act_dim)
        self.act_dim = act_dim
        self.log_std_min, self.log_std_max = cfg.log_std_min, cfg.log_std_max
        low = torch.as_tensor(np.asarray(low, np.float32).reshape(-1))
        high = torch.as_tensor(np.asarray(high, np.float32).reshape(-1))
        self.register_buffer("center", (high + low) / 2)
        self.register_buffer("scale", (high - low) / 2)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def squash(self, u: torch.Tensor) -> torch.Tensor:
        return self.center + self.scale * torch.tanh(u)

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action (B, A) and its log-density (B,)."""
        mean, log_std = self(obs)
        std = log_std.exp()
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        u = mean + std * eps
        logp = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), numerically stable
        logp = logp - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1) - torch.log(self.scale).sum()
        return self.squash(u), logp

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return self.squash(self(obs)[0])


class TwinQ(nn.Module):
    """Two Q-networks: ``(obs (B, O), act (B, A)) -> q1, q2 (B,)``; with ``cfg.critic_layer_norm``
    each hidden layer is Linear -> LayerNorm -> ReLU (RLPD's critic)."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: SACConfig):
        super().__init__()
        self.q1 = _mlp(obs_dim + act_dim, cfg.hidden, 1, cfg.critic_layer_norm)
        self.q2 = _mlp(obs_dim + act_dim, cfg.hidden, 1, cfg.critic_layer_norm)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, act], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class SAC:
    """The learner: networks, target critics, temperature and their optimisers.

    ``update(obs, act, reward, next_obs, done)`` (tensors, B rows) runs one critic step, an actor
    and temperature step on every ``cfg.actor_every``-th call (each call with 1) and a Polyak
    update of the targets; returns the latest losses. Randomness (the
    reparameterisation noise) comes from the injected ``generator``; initial weights from
    ``seed``.
    """

    def __init__(self, obs_dim: int, act_dim: int, low, high, cfg: SACConfig = SACConfig(), seed: int = 0):
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.actor = Actor(obs_dim, act_dim, low, high, cfg)
            self.critic = TwinQ(obs_dim, act_dim, cfg)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(cfg.init_alpha), requires_grad=True)
        self.target_entropy = cfg.target_entropy or -float(act_dim)
        # fused: one kernel per optimiser step; 5-8% off an update at 256 x 256 on one CPU thread
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr, fused=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr, fused=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.lr, fused=True)
        self.generator = torch.Generator().manual_seed(seed + 1)
        self.updates = self.actor_updates = 0
        self.last: dict[str, float] = {}  # the latest losses, alpha and entropy

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    def update(self, obs, act, reward, next_obs, done) -> dict[str, float]:
        cfg, alpha = self.cfg, self.log_alpha.exp().detach()
        # Critic: soft Bellman target with the minimum of the target twins (SAC eq. 3, 5)
        with torch.no_grad():
            next_act, next_logp = self.actor.sample(next_obs, self.generator)
            t1, t2 = self.critic_target(next_obs, next_act)
            target = reward + cfg.gamma * (1.0 - done) * (torch.min(t1, t2) - alpha * next_logp)
        q1, q2 = self.critic(obs, act)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self.updates += 1
        self.last["critic_loss"], self.last["alpha"] = critic_loss.item(), alpha.item()
        if self.updates % cfg.actor_every == 0:  # the last critic update of each group of actor_every
            self._update_actor(obs, alpha)
        # Targets: Polyak averaging
        with torch.no_grad():
            for p_t, p in zip(self.critic_target.parameters(), self.critic.parameters(), strict=True):
                p_t.lerp_(p, cfg.tau)
        return dict(self.last)

    def _update_actor(self, obs: torch.Tensor, alpha: torch.Tensor) -> None:
        # Actor: minimise alpha log pi - min Q over reparameterised actions (eq. 7); critics frozen
        self.critic.requires_grad_(False)
        new_act, logp = self.actor.sample(obs, self.generator)
        p1, p2 = self.critic(obs, new_act)
        actor_loss = (alpha * logp - torch.min(p1, p2)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        self.critic.requires_grad_(True)
        # Temperature: towards the entropy target (eq. 18)
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        self.actor_updates += 1
        self.last["actor_loss"], self.last["entropy"] = actor_loss.item(), -logp.detach().mean().item()

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions (B, A) float32 for observations (B, O), sampled or the squashed mean."""
        x = torch.as_tensor(np.asarray(obs, np.float32))
        a = self.actor.deterministic(x) if deterministic else self.actor.sample(x, self.generator)[0]
        return a.numpy()

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach().clone(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "alpha_opt": self.alpha_opt.state_dict(), "generator": self.generator.get_state(),
                "updates": self.updates, "actor_updates": self.actor_updates}

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        self.generator.set_state(state["generator"])
        self.updates = int(state["updates"])
        self.actor_updates = int(state.get("actor_updates", self.updates))  # checkpoints before actor_every


class ActorPolicy(nn.Module):
    """The policy-file contract for the actor (:mod:`rtmpc.models.common.policy_export`):
    ``forward(obs (B, O), eps (B, A)) -> action (B, A)`` = low + (tanh(mean + std * eps) + 1) / 2 *
    (high - low): zero noise gives the deterministic action that is deployed."""

    def __init__(self, actor: Actor):
        super().__init__()
        self.actor = actor

    def forward(self, obs: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        mean, log_std = self.actor(obs)
        return self.actor.squash(mean + log_std.exp() * eps)
