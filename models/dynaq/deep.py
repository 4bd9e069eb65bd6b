"""Deep Dyna-Q: Sutton's (1990) Dyna architecture with function approximation, for discrete actions.

Three things learn from one stream of real experience, interleaved with acting:

- **direct RL**: a Q-network (MLP, one output per action) trained as double DQN (van Hasselt et
  al. 2016) with a target network (Polyak or periodic hard copies) and the Huber loss, on
  minibatches from the replay buffer of real transitions;
- **model learning**: an ensemble of MLPs maps (obs, one-hot action) to the change of the
  observation, the reward and a termination logit (normalised inputs and targets; MSE on the
  first two, binary cross-entropy on the third), each member on its own random minibatches;
- **planning**: imagined rollouts of ``rollout_length`` steps start from real states drawn from
  the replay buffer, act epsilon-greedily on Q, take each step from a random member, stop where
  the ensemble's mean termination probability passes 0.5, and drop a transition (and the rest of
  its rollout) where the members disagree about the next observation beyond
  ``disagreement_threshold``. Imagined transitions go to their own FIFO buffer, and each Q
  minibatch takes the share ``planning_ratio`` from it, the rest from real data.

``planning_ratio = 0`` trains no model and imagines nothing: plain double DQN with the same
network, schedule and updates, the baseline of ``rtmpc.scripts.bench_dynaq``.

Real episodes end in a termination (no bootstrap) or a truncation at the task's step limit
(bootstrapped: a time limit is not a property of the state). Imagined rollouts never truncate.

All mutable training state (networks, optimisers, buffers, the random generator, counters and
the current episode) lives in one :class:`DeepDynaQ` object whose :meth:`~DeepDynaQ.state_dict`
holds only tensors and plain Python values (``torch.load(weights_only=True)`` reads it back) and
whose :meth:`~DeepDynaQ.load_state_dict` continues bit-identically. The environments are not in
it: :meth:`DeepDynaQ.env_step` starts a new episode (reset with a seed drawn from the state's
generator) whenever the state holds no current observation, so a state saved at an episode
boundary resumes exactly, and one saved mid-episode resumes with a new episode
(:meth:`DeepDynaQ.end_episode`); the finished part of the interrupted episode stays in the buffer.

:func:`train_deep_dynaq` runs the loop with greedy evaluations; :class:`GreedyQPolicy` and
:func:`export_q_policy` write the greedy policy as an rtmpc policy file (kind ``dynaq``).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rtmpc.configs import ConfigError, to_dict
from rtmpc.models.common.buffer import ReplayBuffer
from rtmpc.models.common.ensemble import EnsembleLinear
from torch import nn
from torch.nn import functional as F

from .config import DeepDynaQConfig

__all__ = ["DeepDynaQConfig", "QNetwork", "DynamicsEnsemble", "DeepDynaQ", "double_dqn_targets",
           "train_deep_dynaq", "evaluate_greedy", "GreedyQPolicy", "export_q_policy", "balanced_accuracy"]


# ----------------------------------------------------------------------------------------------
# networks
# ----------------------------------------------------------------------------------------------

class QNetwork(nn.Module):
    """obs (B, O) -> Q values (B, n_actions), an MLP with ReLU."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: tuple[int, ...] = (128, 128)):
        super().__init__()
        sizes = [obs_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], n_actions))
        self.net = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class DynamicsEnsemble(nn.Module):
    """E MLPs (SiLU) from (normalised obs, one-hot action) to (normalised Δobs, normalised reward,
    termination logit), all members in one batched call (:class:`EnsembleLinear`).

    ``predict(obs (N, O), act (N,) int)`` returns raw-unit ``delta (E, N, O)``, ``reward (E, N)``
    and ``done_logit (E, N)``: every member on the same rows.
    """

    def __init__(self, obs_dim: int, n_actions: int, members: int = 5, hidden: int = 200, layers: int = 3,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.obs_dim, self.n_actions, self.members = int(obs_dim), int(n_actions), int(members)
        sizes = [obs_dim + n_actions] + [hidden] * layers
        self.hidden_layers = nn.ModuleList(EnsembleLinear(members, a, b, generator)
                                           for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = EnsembleLinear(members, hidden, obs_dim + 2, generator)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.register_buffer("delta_mean", torch.zeros(obs_dim))
        self.register_buffer("delta_std", torch.ones(obs_dim))
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("reward_std", torch.ones(()))

    def fit_normalisers(self, obs: np.ndarray, delta: np.ndarray, reward: np.ndarray) -> None:
        """Mean and std of the inputs and targets (a constant column keeps scale 1)."""
        for (m, s), data in ((("obs_mean", "obs_std"), obs), (("delta_mean", "delta_std"), delta),
                             (("reward_mean", "reward_std"), reward)):
            data = np.asarray(data, np.float64)
            mean, std = data.mean(axis=0), data.std(axis=0)
            std = np.where(std < 1e-6, 1.0, std)
            getattr(self, m).copy_(torch.as_tensor(mean, dtype=torch.float32))
            getattr(self, s).copy_(torch.as_tensor(std, dtype=torch.float32))

    def inputs(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """(..., O) obs and (...,) int actions -> (..., O + n_actions) normalised inputs."""
        return torch.cat([(obs - self.obs_mean) / self.obs_std, F.one_hot(act, self.n_actions).to(obs.dtype)], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised inputs (E, N, O + n) -> (E, N, O + 2): normalised Δobs, reward, done logit."""
        h = x
        for layer in self.hidden_layers:
            h = F.silu(layer(h))
        return self.head(h)

    def predict(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, o = obs.shape[0], self.obs_dim
        out = self(self.inputs(obs, act).expand(self.members, n, -1))
        delta = out[..., :o] * self.delta_std + self.delta_mean
        reward = out[..., o] * self.reward_std + self.reward_mean
        return delta, reward, out[..., o + 1]

    def losses(self, obs: torch.Tensor, act: torch.Tensor, delta: torch.Tensor, reward: torch.Tensor,
               done: torch.Tensor, pos_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-member minibatches obs (E, B, O), act (E, B), delta (E, B, O), reward (E, B), done (E, B):
        MSE of the normalised Δobs and reward, and the weighted BCE of the termination logit, each
        averaged over rows and summed over members."""
        o = self.obs_dim
        out = self(self.inputs(obs, act))
        d_n = (delta - self.delta_mean) / self.delta_std
        r_n = (reward - self.reward_mean) / self.reward_std
        mse_delta = ((out[..., :o] - d_n) ** 2).mean(dim=(1, 2)).sum()
        mse_reward = ((out[..., o] - r_n) ** 2).mean(dim=1).sum()
        weight = torch.where(done > 0.5, pos_weight, 1.0)
        bce = F.binary_cross_entropy_with_logits(out[..., o + 1], done, weight=weight, reduction="none")
        return mse_delta, mse_reward, bce.mean(dim=1).sum()

    @torch.no_grad()
    def disagreement(self, delta: torch.Tensor) -> torch.Tensor:
        """Members' predictions delta (E, N, O) -> (N,): the largest over entries of the std over
        members of the next observation, in units of the Δobs normaliser's std (0 for one member)."""
        if delta.shape[0] < 2:
            return torch.zeros(delta.shape[1])
        return (delta.std(dim=0) / self.delta_std).amax(dim=-1)


def double_dqn_targets(q_online: nn.Module, q_target: nn.Module, reward: torch.Tensor, next_obs: torch.Tensor,
                       terminated: torch.Tensor, gamma: float) -> torch.Tensor:
    """Double DQN targets ``r + gamma * (1 - terminated) * Q_target(s', argmax_a Q_online(s', a))``, (B,)."""
    with torch.no_grad():
        best = q_online(next_obs).argmax(dim=1, keepdim=True)
        next_q = q_target(next_obs).gather(1, best).squeeze(1)
        return reward + gamma * (1.0 - terminated) * next_q


def balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean of the true-positive and true-negative rates (nan where a class is absent)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if truth.all() or not truth.any():
        return float("nan")
    return 0.5 * float(pred[truth].mean() + (~pred[~truth]).mean())


# ----------------------------------------------------------------------------------------------
# the imagined-transition buffer
# ----------------------------------------------------------------------------------------------

class _ImaginedBuffer:
    """A FIFO ring of (obs, action index, reward, next_obs, terminated)."""

    def __init__(self, obs_dim: int, capacity: int):
        self.capacity = int(capacity)
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.act = np.zeros(capacity, np.int64)
        self.reward = np.zeros(capacity, np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.head = 0  # next row to write
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs, act, reward, next_obs, terminated) -> None:
        n = len(act)
        if n > self.capacity:  # only the newest fit
            obs, act, reward, next_obs, terminated = (x[-self.capacity:] for x in (obs, act, reward, next_obs,
                                                                                  terminated))
            n = self.capacity
        rows = (self.head + np.arange(n)) % self.capacity
        self.obs[rows], self.act[rows], self.reward[rows] = obs, act, reward
        self.next_obs[rows], self.terminated[rows] = next_obs, terminated
        self.head = int((self.head + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    _ARRAYS = ("obs", "act", "reward", "next_obs", "terminated")

    def state_dict(self) -> dict:
        n = self.size
        return {"head": self.head, "size": n,
                **{k: torch.from_numpy(getattr(self, k)[:n].copy()) for k in self._ARRAYS}}

    def load_state_dict(self, state: dict) -> None:
        n = int(state["size"])
        if n > self.capacity:
            raise ValueError(f"the saved imagined buffer holds {n} rows, more than imagined_size = {self.capacity}")
        for k in self._ARRAYS:
            arr = getattr(self, k)
            arr[:] = 0
            arr[:n] = state[k].numpy()
        self.head, self.size = int(state["head"]), n


# ----------------------------------------------------------------------------------------------
# the agent: all mutable training state
# ----------------------------------------------------------------------------------------------

_REAL_FIELDS = ("obs", "act", "reward", "next_obs", "terminated", "episode")


class DeepDynaQ:
    """Everything a deep Dyna-Q run changes: Q-network and its target, the model, both optimisers,
    the real and imagined buffers, the numpy generator, the step counters and the current episode.

    ``env_step(env)`` is one real step with everything it triggers (Q training, model training,
    imagined rollouts); :func:`train_deep_dynaq` adds evaluations around it.
    """

    def __init__(self, obs_dim: int, n_actions: int, cfg: DeepDynaQConfig = DeepDynaQConfig()):
        if n_actions < 2:
            raise ConfigError(f"deep Dyna-Q needs a discrete task with >= 2 actions, got n_actions = {n_actions}")
        self.cfg = cfg
        self.obs_dim, self.n_actions = int(obs_dim), int(n_actions)
        gen = torch.Generator().manual_seed(cfg.seed)
        with torch.random.fork_rng():  # nn.Linear's init draws from the global generator: seed a private one
            torch.manual_seed(cfg.seed)
            self.q = QNetwork(obs_dim, n_actions, cfg.q_hidden)
        self.q_target = copy.deepcopy(self.q)
        for p in self.q_target.parameters():
            p.requires_grad_(False)
        self.q_opt = torch.optim.Adam(self.q.parameters(), lr=cfg.q_lr)
        self.model: DynamicsEnsemble | None = None
        self.model_opt: torch.optim.Optimizer | None = None
        if cfg.planning_ratio > 0:
            self.model = DynamicsEnsemble(obs_dim, n_actions, cfg.model_members, cfg.model_hidden,
                                          cfg.model_layers, gen)
            decay = [p for n, p in self.model.named_parameters() if n.endswith("weight")]
            other = [p for n, p in self.model.named_parameters() if not n.endswith("weight")]
            self.model_opt = torch.optim.Adam([{"params": decay, "weight_decay": cfg.model_weight_decay},
                                               {"params": other, "weight_decay": 0.0}], lr=cfg.model_lr)
        self.real = ReplayBuffer(obs_dim, 1, capacity=min(cfg.total_steps, 1 << 20) + 1)
        self.imagined = _ImaginedBuffer(obs_dim, cfg.imagined_size)
        self.rng = np.random.default_rng(cfg.seed)
        self.env_steps = 0
        self.q_updates_done = 0
        self.model_rounds = 0
        self.episodes = 0  # finished episodes
        self.obs: np.ndarray | None = None  # the current episode's observation (None: start one)
        self.episode_return = 0.0
        self.episode_length = 0
        self.returns: list[float] = []  # of finished training episodes, in order
        self.stats: dict[str, float] = {}  # running sums since the last take_stats()
        self.model_metrics: dict[str, float] = {}  # of the last model round

    # -- acting ---------------------------------------------------------------------------------
    def epsilon(self, step: int | None = None) -> float:
        """The behaviour epsilon at env step ``step`` (default: now)."""
        cfg = self.cfg
        t = self.env_steps if step is None else step
        frac = min(t / cfg.eps_decay_steps, 1.0)
        return cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start)

    @torch.no_grad()
    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """argmax_a Q(obs, a) for obs (N, O): (N,) int (the first of ties)."""
        return self.q(torch.as_tensor(np.asarray(obs, np.float32).reshape(-1, self.obs_dim))).argmax(1).numpy()

    def _eps_greedy(self, obs: np.ndarray, eps: float) -> np.ndarray:
        """(N,) int actions: uniform with probability eps, else greedy."""
        n = obs.shape[0]
        u = self.rng.random(n)
        rand = self.rng.integers(0, self.n_actions, n)
        return np.where(u < eps, rand, self.greedy(obs))

    # -- one real step ---------------------------------------------------------------------------
    def end_episode(self) -> None:
        """Forget the current episode (a resume in a fresh env starts a new one)."""
        self.obs = None
        self.episode_return, self.episode_length = 0.0, 0

    def env_step(self, env) -> dict | None:
        """One real step in ``env``, then the updates it triggers; the finished episode's
        {"return", "length"} when this step ended one, else None."""
        cfg = self.cfg
        if self.obs is None:
            self.obs, _ = env.reset(seed=int(self.rng.integers(2**31 - 1)))
            self.episode_return, self.episode_length = 0.0, 0
        obs = np.asarray(self.obs, np.float32)
        a = int(self._eps_greedy(obs[None], self.epsilon())[0]) if self.env_steps >= cfg.learning_starts \
            else int(self.rng.integers(self.n_actions))
        next_obs, reward, terminated, truncated, _ = env.step(np.array([float(a)]))
        self.real.add(obs, np.array([a], np.float32), reward, next_obs, terminated, self.episodes)
        self.env_steps += 1
        self.episode_return += float(reward)
        self.episode_length += 1
        finished = None
        if terminated or truncated:
            finished = {"return": self.episode_return, "length": self.episode_length}
            self.returns.append(self.episode_return)
            self.episodes += 1
            self.end_episode()
        else:
            self.obs = np.asarray(next_obs, np.float64)
        self._after_step()
        return finished

    def _after_step(self) -> None:
        cfg, t = self.cfg, self.env_steps
        if t < cfg.learning_starts:
            return
        if self.model is not None:
            since = t - cfg.learning_starts
            if since % cfg.model_train_every == 0:
                t0 = time.perf_counter()
                self.train_model()
                self._add("model_s", time.perf_counter() - t0)
            if since % cfg.rollout_every == 0:
                t0 = time.perf_counter()
                self.imagine(cfg.rollouts_per_step * cfg.rollout_every)
                self._add("rollout_s", time.perf_counter() - t0)
        if t % cfg.q_train_every == 0:
            t0 = time.perf_counter()
            for _ in range(cfg.q_updates):
                self.q_update()
            self._add("q_s", time.perf_counter() - t0)

    def _add(self, key: str, value: float, count: str | None = None) -> None:
        self.stats[key] = self.stats.get(key, 0.0) + value
        if count:
            self.stats[count] = self.stats.get(count, 0.0) + 1

    def take_stats(self) -> dict[str, float]:
        """The sums gathered since the last call (and reset them)."""
        out, self.stats = self.stats, {}
        return out

    # -- sampling --------------------------------------------------------------------------------
    def _real_rows(self, n: int) -> np.ndarray:
        size = len(self.real)
        lo = max(0, size - self.cfg.replay_size)
        return self.rng.integers(lo, size, n)

    def sample(self, batch: int) -> tuple[torch.Tensor, ...]:
        """A Q minibatch: obs, action (int), reward, next_obs, terminated (float); the share
        planning_ratio from the imagined buffer (where it holds anything), the rest real."""
        n_img = int(round(self.cfg.planning_ratio * batch)) if len(self.imagined) else 0
        r = self._real_rows(batch - n_img)
        real = self.real
        obs, act, rew = real.obs[r], real.act[r, 0].astype(np.int64), real.reward[r]
        nxt, term = real.next_obs[r], real.terminated[r].astype(np.float32)
        if n_img:
            i = self.rng.integers(0, len(self.imagined), n_img)
            im = self.imagined
            obs, act, rew = (np.concatenate([obs, im.obs[i]]), np.concatenate([act, im.act[i]]),
                             np.concatenate([rew, im.reward[i]]))
            nxt, term = np.concatenate([nxt, im.next_obs[i]]), np.concatenate([term, im.terminated[i]])
        return tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in (obs, act, rew, nxt, term))

    # -- direct RL --------------------------------------------------------------------------------
    def q_update(self, batch: tuple[torch.Tensor, ...] | None = None) -> float:
        """One double-DQN step (Huber loss) on ``batch`` (default: :meth:`sample`); the loss."""
        cfg = self.cfg
        obs, act, rew, nxt, term = batch if batch is not None else self.sample(cfg.batch_size)
        target = double_dqn_targets(self.q, self.q_target, rew, nxt, term, cfg.gamma)
        q = self.q(obs).gather(1, act.view(-1, 1)).squeeze(1)
        loss = F.smooth_l1_loss(q, target)
        self.q_opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.q.parameters(), cfg.grad_clip)
        self.q_opt.step()
        self.q_updates_done += 1
        if self.q_updates_done % cfg.target_period == 0:
            with torch.no_grad():
                for p, pt in zip(self.q.parameters(), self.q_target.parameters()):
                    pt.lerp_(p, cfg.target_tau)
        value = float(loss.detach())
        self._add("q_loss", value, count="q_loss_n")
        return value

    # -- model learning ----------------------------------------------------------------------------
    def _model_arrays(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        real = self.real
        obs = real.obs[rows]
        return (obs, real.act[rows, 0].astype(np.int64), real.next_obs[rows] - obs, real.reward[rows],
                real.terminated[rows].astype(np.float32))

    @torch.no_grad()
    def model_report(self, rows: np.ndarray) -> dict[str, float]:
        """The model on real transitions ``rows``: MSE of the normalised Δobs, termination balanced
        accuracy (p > 0.5 of the members' mean) and recall, median and 95th percentile disagreement."""
        obs, act, delta, _, done = self._model_arrays(rows)
        pred, _, logit = self.model.predict(torch.from_numpy(obs), torch.from_numpy(act))
        m = self.model
        err = (((pred.mean(0) - torch.from_numpy(delta)) / m.delta_std) ** 2).mean()
        p = torch.sigmoid(logit).mean(0).numpy() > 0.5
        dis = m.disagreement(pred).numpy()
        truth = done > 0.5
        return {"model_mse": float(err), "model_done_bacc": balanced_accuracy(p, truth),
                "model_done_recall": float(p[truth].mean()) if truth.any() else float("nan"),
                "model_disagreement_p50": float(np.median(dis)), "model_disagreement_p95": float(np.quantile(dis,
                                                                                                            0.95))}

    def train_model(self, updates: int | None = None) -> dict[str, float]:
        """One model round: measure the model on the real transitions it has not trained on yet (the
        newest ``model_train_every``), refit the normalisers on the replay window, then ``updates``
        (default ``model_updates``) Adam steps, each member on its own random minibatch."""
        cfg, model = self.cfg, self.model
        size = len(self.real)
        lo = max(0, size - cfg.replay_size)
        metrics: dict[str, float] = {}
        if self.model_rounds > 0:
            fresh = np.arange(max(lo, size - cfg.model_train_every), size)
            metrics.update({f"{k}_new": v for k, v in self.model_report(fresh).items()})
        window = np.arange(lo, size)
        obs, _, delta, reward, _ = self._model_arrays(window)
        model.fit_normalisers(obs, delta, reward)
        model.train()
        e, b = model.members, cfg.model_batch_size
        totals = np.zeros(3)
        for _ in range(cfg.model_updates if updates is None else updates):
            rows = self._real_rows(e * b)
            o, a, d, r, done = (torch.from_numpy(x) for x in self._model_arrays(rows))
            parts = model.losses(o.view(e, b, -1), a.view(e, b), d.view(e, b, -1), r.view(e, b), done.view(e, b),
                                 cfg.done_pos_weight)
            loss = sum(parts)
            self.model_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.model_opt.step()
            totals += [float(x.detach()) / e for x in parts]
        model.eval()
        n = cfg.model_updates if updates is None else updates
        metrics.update({"model_loss_delta": float(totals[0] / n), "model_loss_reward": float(totals[1] / n),
                        "model_loss_done": float(totals[2] / n)})
        self.model_rounds += 1
        self.model_metrics = metrics
        return metrics

    # -- planning ----------------------------------------------------------------------------------
    @torch.no_grad()
    def imagine(self, n_starts: int, epsilon: float | None = None) -> dict[str, int]:
        """``n_starts`` imagined rollouts of up to ``rollout_length`` steps from real replay states,
        added to the imagined buffer; counts of transitions made, kept, dropped for disagreement and
        ended by a predicted termination."""
        cfg, model = self.cfg, self.model
        eps = cfg.rollout_epsilon if epsilon is None else float(epsilon)
        obs = self.real.obs[self._real_rows(n_starts)]
        counts = {"made": 0, "kept": 0, "dropped": 0, "terminated": 0}
        rows_all = np.arange(n_starts)
        for _ in range(cfg.rollout_length):
            n = obs.shape[0]
            if n == 0:
                break
            act = self._eps_greedy(obs, eps)
            delta, reward, logit = model.predict(torch.from_numpy(obs), torch.from_numpy(act))
            member = self.rng.integers(0, model.members, n)
            rows = torch.from_numpy(rows_all[:n])
            member_t = torch.from_numpy(member)
            next_obs = obs + delta[member_t, rows].numpy()
            rew = reward[member_t, rows].numpy()
            done = torch.sigmoid(logit).mean(0).numpy() > 0.5
            keep = model.disagreement(delta).numpy() <= cfg.disagreement_threshold
            counts["made"] += n
            counts["kept"] += int(keep.sum())
            counts["dropped"] += int((~keep).sum())
            counts["terminated"] += int((keep & done).sum())
            self.imagined.add(obs[keep], act[keep], rew[keep], next_obs[keep].astype(np.float32),
                              done[keep].astype(np.float32))
            go_on = keep & ~done
            obs = next_obs[go_on].astype(np.float32)
        for k, v in counts.items():
            self._add(f"imagined_{k}", float(v))
        return counts

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """A deep copy of all mutable training state: tensors and plain Python values only."""
        real = self.real
        state = {
            "format": 1, "cfg": to_dict(self.cfg), "obs_dim": self.obs_dim, "n_actions": self.n_actions,
            "q": self.q.state_dict(), "q_target": self.q_target.state_dict(), "q_opt": self.q_opt.state_dict(),
            "model": self.model.state_dict() if self.model is not None else None,
            "model_opt": self.model_opt.state_dict() if self.model_opt is not None else None,
            "real": {k: torch.from_numpy(np.array(getattr(real, k))) for k in _REAL_FIELDS},
            "imagined": self.imagined.state_dict(),
            "rng": self.rng.bit_generator.state,
            "counters": {"env_steps": self.env_steps, "q_updates": self.q_updates_done,
                         "model_rounds": self.model_rounds, "episodes": self.episodes},
            "episode": {"obs": None if self.obs is None else torch.from_numpy(np.array(self.obs, np.float64)),
                        "return": self.episode_return, "length": self.episode_length},
            "returns": [float(r) for r in self.returns], "stats": {k: float(v) for k, v in self.stats.items()},
            "model_metrics": {k: float(v) for k, v in self.model_metrics.items()},
        }
        return copy.deepcopy(state)

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (made with the same sizes and model settings)."""
        state = copy.deepcopy(state)  # the optimisers would otherwise share tensors with ``state``
        if (state["obs_dim"], state["n_actions"]) != (self.obs_dim, self.n_actions):
            raise ValueError(f"the state is of a task with obs_dim {state['obs_dim']} and n_actions "
                             f"{state['n_actions']}, this agent has {self.obs_dim} and {self.n_actions}")
        if (state["model"] is None) != (self.model is None):
            raise ValueError("the state and this agent disagree on planning_ratio = 0 (a model or none)")
        self.q.load_state_dict(state["q"])
        self.q_target.load_state_dict(state["q_target"])
        self.q_opt.load_state_dict(state["q_opt"])
        if self.model is not None:
            self.model.load_state_dict(state["model"])
            self.model_opt.load_state_dict(state["model_opt"])
            self.model.eval()
        arrays = {k: v.numpy() for k, v in state["real"].items()}
        self.real = ReplayBuffer(self.obs_dim, 1, capacity=max(self.real.capacity, len(arrays["obs"]) + 1))
        if len(arrays["obs"]):
            self.real.add_batch(**arrays)
        self.imagined.load_state_dict(state["imagined"])
        self.rng.bit_generator.state = state["rng"]
        c = state["counters"]
        self.env_steps, self.q_updates_done = int(c["env_steps"]), int(c["q_updates"])
        self.model_rounds, self.episodes = int(c["model_rounds"]), int(c["episodes"])
        ep = state["episode"]
        self.obs = None if ep["obs"] is None else ep["obs"].numpy().copy()
        self.episode_return, self.episode_length = float(ep["return"]), int(ep["length"])
        self.returns = [float(r) for r in state["returns"]]
        self.stats, self.model_metrics = dict(state["stats"]), dict(state["model_metrics"])


# ----------------------------------------------------------------------------------------------
# evaluation and the loop
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate_greedy(q: nn.Module, envs: list, seeds: list[int]) -> np.ndarray:
    """Returns of one greedy episode in each of ``envs`` (reset with ``seeds``), run in lockstep so
    that Q sees every live env in one batch; (len(envs),)."""
    obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds)]).astype(np.float32)
    returns = np.zeros(len(envs))
    alive = np.ones(len(envs), bool)
    while alive.any():
        idx = np.flatnonzero(alive)
        act = q(torch.from_numpy(obs[idx])).argmax(1).numpy()
        for j, a in zip(idx, act):
            o, r, term, trunc, _ = envs[j].step(np.array([float(a)]))
            returns[j] += r
            obs[j] = o
            if term or trunc:
                alive[j] = False
    return returns


Progress = Callable[[dict], "bool | None"]


def _finite(x: float, digits: int = 4):
    return round(float(x), digits) if x is not None and math.isfinite(x) else None


def train_deep_dynaq(make_env: Callable[[], object], cfg: DeepDynaQConfig = DeepDynaQConfig(), *,
                     progress: Progress | None = None, agent: DeepDynaQ | None = None
                     ) -> tuple[DeepDynaQ, list[dict]]:
    """Run deep Dyna-Q for ``cfg.total_steps`` env steps in ``make_env()`` (a discrete task), with a
    greedy evaluation of ``cfg.eval_episodes`` episodes (in as many more envs) every ``eval_every``
    steps; returns (agent, rows), one row per evaluation. ``agent``: continue that state (its
    ``env_steps`` on), starting a new episode. ``progress(row)`` after each evaluation; returning
    True stops the run there. Sets ``torch.set_num_threads(cfg.threads)``."""
    torch.set_num_threads(cfg.threads)
    env = make_env()
    spec = env.spec
    if not spec.n_actions:
        raise ConfigError(f"task {spec.name} has continuous actions: deep Dyna-Q needs a discrete task")
    if agent is None:
        agent = DeepDynaQ(spec.obs_dim, spec.n_actions, cfg)
    else:
        agent.end_episode()
    eval_envs = [make_env() for _ in range(cfg.eval_episodes)]
    rows: list[dict] = []
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    eval_s = 0.0
    try:
        while agent.env_steps < cfg.total_steps:
            agent.env_step(env)
            t = agent.env_steps
            if t % cfg.eval_every != 0 and t != cfg.total_steps:
                continue
            t0 = time.perf_counter()
            n_eval = t // cfg.eval_every
            seeds = [10**6 * (cfg.seed + 1) + n_eval * cfg.eval_episodes + i for i in range(cfg.eval_episodes)]
            returns = evaluate_greedy(agent.q, eval_envs, seeds)
            eval_s += time.perf_counter() - t0
            stats = agent.take_stats()
            recent = agent.returns[-10:]
            made = stats.get("imagined_made", 0.0)
            row = {"env_steps": t, "episodes": agent.episodes, "eval_return": float(returns.mean()),
                   "eval_min": float(returns.min()),
                   "train_return": _finite(float(np.mean(recent))) if recent else None,
                   "epsilon": round(agent.epsilon(), 4), "q_updates": agent.q_updates_done,
                   "q_loss": _finite(stats["q_loss"] / stats["q_loss_n"]) if stats.get("q_loss_n") else None,
                   "imagined": len(agent.imagined),
                   "imagined_kept": _finite(stats.get("imagined_kept", 0.0) / made) if made else None,
                   "imagined_terminated": _finite(stats.get("imagined_terminated", 0.0) / made) if made else None,
                   **{k: _finite(v) for k, v in agent.model_metrics.items()},
                   "q_s": round(stats.get("q_s", 0.0), 2), "model_s": round(stats.get("model_s", 0.0), 2),
                   "rollout_s": round(stats.get("rollout_s", 0.0), 2), "eval_s": round(eval_s, 2),
                   "seconds": round(time.perf_counter() - t_start, 2),
                   "cpu_seconds": round(time.process_time() - cpu_start, 2)}
            rows.append(row)
            if progress is not None and progress(row):
                break
    finally:
        env.close()
        for e in eval_envs:
            e.close()
    return agent, rows


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------

class GreedyQPolicy(nn.Module):
    """The policy-file contract for a Q-network: ``forward(obs (B, O), eps (B, 1)) -> action (B, 1)``,
    argmax_a Q(obs, a) as a float column. ``eps`` (the sampling noise) plays no part in the
    action; it is multiplied by zero so that the exported graph keeps it as an input."""

    def __init__(self, q: nn.Module):
        super().__init__()
        self.q = q

    def forward(self, obs: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        action = self.q(obs).argmax(dim=1, keepdim=True).to(obs.dtype)
        return action + 0.0 * eps[:, :1]


def export_q_policy(agent: DeepDynaQ, path: str | os.PathLike, spec, *, check_obs: np.ndarray | None = None,
                    n_random: int = 256) -> Path:
    """Write ``agent``'s greedy policy as an rtmpc policy file (kind ``dynaq``) at ``path`` and check
    it against PyTorch (:func:`check_policy_parity` on ``n_random`` random observations plus up to 256
    real ones from the agent's buffer, or ``check_obs``): the actions must agree exactly."""
    from rtmpc.models.base import ModelError
    from rtmpc.models.common.policy_export import check_policy_parity, export_policy

    if spec.n_actions != agent.n_actions or spec.obs_dim != agent.obs_dim:
        raise ModelError(f"the agent has obs_dim {agent.obs_dim} and {agent.n_actions} actions, task {spec.name} "
                         f"{spec.obs_dim} and {spec.n_actions}")
    module = GreedyQPolicy(copy.deepcopy(agent.q)).eval()
    meta = {**spec.model_metadata(), "gamma": repr(agent.cfg.gamma)}
    out = export_policy(module, path, kind="dynaq", obs_dim=spec.obs_dim, act_dim=1, action_low=spec.action_low,
                        action_high=spec.action_high, n_actions=spec.n_actions, extra_metadata=meta)
    if check_obs is None and len(agent.real):
        pick = np.random.default_rng(0).choice(len(agent.real), min(256, len(agent.real)), replace=False)
        check_obs = agent.real.obs[np.sort(pick)]
    worst = check_policy_parity(module, out, check_obs, n_random=n_random)
    if worst != 0.0:  # actions are indices: any difference is a different action
        raise ModelError(f"policy file {out} picks another action than PyTorch on some observation "
                         f"(difference {worst:g}): do not deploy it")
    return out
