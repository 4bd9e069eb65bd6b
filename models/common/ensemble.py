"""The PETS probabilistic ensemble and its training (PyTorch).

Chua et al., "Deep Reinforcement Learning in a Handful of Trials using Probabilistic
Dynamics Models", NeurIPS 2018 (PETS). Each of E members is an MLP that maps a
normalised (obs, action) to a diagonal Gaussian over the normalised
(delta_obs, reward): mean and log-variance. All members run in one call: every layer
holds weights ``[E, in, out]`` and applies ``torch.baddbmm`` to inputs ``[E, N, in]``.

The log-variance is kept inside learned soft bounds (PETS appendix A.1, as in
mbrl-lib's ``GaussianMLP``)::

    logvar = max_logvar - softplus(max_logvar - logvar)
    logvar = min_logvar + softplus(logvar - min_logvar)

and the loss adds ``penalty * (sum max_logvar - sum min_logvar)`` so the bounds tighten
onto the data. Training (:func:`fit_ensemble`) holds out a validation split, trains each
member on its own bootstrap resample, and stops each member at its best validation MSE
(its weights are copied whenever it improves and restored at the end).

Shapes: O observation size, A action size, E members, N rows per member.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from rtmpc.configs import from_dict, to_dict
from rtmpc.configs.rundir import atomic_write
from rtmpc.models.base import ModelError
from rtmpc.models.common.ensemble_config import EnsembleConfig, TrainConfig, check_propagation
from torch import nn
from torch.nn import functional as F

__all__ = ["EnsembleLinear", "ProbabilisticEnsemble", "FitResult", "fit_ensemble", "Transitions",
           "save_ensemble", "load_ensemble", "elite_members", "select_members"]

log = logging.getLogger(__name__)

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu, "relu": F.relu, "tanh": torch.tanh}
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class EnsembleLinear(nn.Module):
    """E independent affine maps: ``[E, N, in] -> [E, N, out]`` in one ``baddbmm``."""

    def __init__(self, members: int, n_in: int, n_out: int, generator: torch.Generator | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(members, 1, n_out))
        # PETS / mbrl-lib initialisation: truncated normal, std 1 / (2 sqrt(in)).
        std = 1.0 / (2.0 * math.sqrt(n_in))
        with torch.no_grad():
            nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class ProbabilisticEnsemble(nn.Module):
    """E Gaussian MLPs over (delta_obs, reward), with data-fitted normalisers.

    ``predict(obs [E,N,O], act [E,N,A])`` returns raw-unit ``delta_mean [E,N,O]``,
    ``delta_logvar [E,N,O]``, ``reward_mean [E,N]``, ``reward_logvar [E,N]`` (the reward
    outputs are None when ``cfg.learned_reward`` is off). Member e sees row block e.
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: EnsembleConfig = EnsembleConfig(),
                 seed: int | None = None) -> None:
        super().__init__()
        if obs_dim < 1 or act_dim < 1:
            raise ValueError(f"obs_dim = {obs_dim} and act_dim = {act_dim} must both be >= 1")
        self.cfg = cfg
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.members = cfg.members
        self.in_dim = obs_dim + act_dim
        self.out_dim = obs_dim + (1 if cfg.learned_reward else 0)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        sizes = [self.in_dim] + [cfg.hidden] * cfg.layers
        self.hidden_layers = nn.ModuleList(
            EnsembleLinear(cfg.members, a, b, gen) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.head = EnsembleLinear(cfg.members, cfg.hidden, 2 * self.out_dim, gen)
        self._act = _ACTIVATIONS[cfg.activation]
        e, d = cfg.members, self.out_dim
        self.max_logvar = nn.Parameter(torch.full((e, 1, d), cfg.max_logvar_init))
        self.min_logvar = nn.Parameter(torch.full((e, 1, d), cfg.min_logvar_init))
        # Normalisers (identity until fitted): x_n = (x - mean) / std.
        self.register_buffer("in_mean", torch.zeros(self.in_dim))
        self.register_buffer("in_std", torch.ones(self.in_dim))
        self.register_buffer("out_mean", torch.zeros(self.out_dim))
        self.register_buffer("out_std", torch.ones(self.out_dim))

    # -- normalisation ----------------------------------------------------------------
    def fit_normalisers(self, inputs: np.ndarray, targets: np.ndarray) -> None:
        """Set the normalisers from inputs (n, O+A) and targets (n, out_dim)."""
        for (mean_name, std_name), data in ((("in_mean", "in_std"), inputs),
                                            (("out_mean", "out_std"), targets)):
            data = np.asarray(data, np.float64)
            mean, std = data.mean(axis=0), data.std(axis=0)
            std = np.where(std < 1e-6, 1.0, std)  # constant columns: leave the scale alone
            getattr(self, mean_name).copy_(torch.as_tensor(mean, dtype=torch.float32))
            getattr(self, std_name).copy_(torch.as_tensor(std, dtype=torch.float32))

    def normalisers(self) -> dict[str, list[float]]:
        """The four normaliser vectors as plain lists (stored in the ONNX metadata)."""
        return {k: getattr(self, k).tolist() for k in ("in_mean", "in_std", "out_mean", "out_std")}

    # -- forward ----------------------------------------------------------------------
    def forward(self, x_n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised inputs ``[E,N,O+A]`` -> normalised mean and bounded logvar ``[E,N,out]``."""
        h = x_n
        for layer in self.hidden_layers:
            h = self._act(layer(h))
        out = self.head(h)
        mean, logvar = out[..., : self.out_dim], out[..., self.out_dim:]
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    def predict(self, obs: torch.Tensor, act: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Raw-unit Gaussian over (delta_obs, reward) for obs ``[E,N,O]``, act ``[E,N,A]``."""
        x_n = (torch.cat([obs, act], dim=-1) - self.in_mean) / self.in_std
        mean_n, logvar_n = self(x_n)
        mean = mean_n * self.out_std + self.out_mean
        logvar = logvar_n + 2.0 * torch.log(self.out_std)
        o = self.obs_dim
        if self.cfg.learned_reward:
            return mean[..., :o], logvar[..., :o], mean[..., o], logvar[..., o]
        return mean, logvar, None, None

    def propagate(self, obs: torch.Tensor, act: torch.Tensor, propagation: str,
                  member_of: torch.Tensor | None = None, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """One PETS propagation step for N particles (reference implementation).

        obs ``[N,O]``, act ``[N,A]`` -> ``(next_obs [N,O], reward [N] or None, member_of [N])``.
        TS1: each particle gets a fresh member (a random balanced permutation) and a
        sampled next state. TSinf: particle i keeps ``member_of[i]`` (``i mod E`` when
        not given), sampled next state. expectation: the mean of the members' means,
        deterministic; ``member_of`` is None. Any other name is a ValueError.
        """
        check_propagation(propagation)
        n = obs.shape[0]
        e = self.members
        dm, dlv, rm, _ = self.predict(obs.expand(e, n, -1), act.expand(e, n, -1))
        if propagation == "expectation":
            return obs + dm.mean(0), (rm.mean(0) if rm is not None else None), None
        if propagation == "TS1" or member_of is None:
            member_of = torch.arange(n) % e
            if propagation == "TS1":
                member_of = member_of[torch.randperm(n, generator=generator)]
        rows = torch.arange(n)
        mean, std = dm[member_of, rows], torch.exp(0.5 * dlv[member_of, rows])
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        reward = rm[member_of, rows] if rm is not None else None
        return obs + mean + std * eps, reward, member_of

    # -- loss -------------------------------------------------------------------------
    def nll_loss(self, x_n: torch.Tensor, y_n: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training loss on normalised x_n ``[E,B,in]``, y_n ``[E,B,out]``: the Gaussian NLL
        (without its constant) averaged over rows and outputs, summed over members, plus the
        bound penalty. Also returns the detached per-member NLL and MSE ``[E]``."""
        mean, logvar = self(x_n)
        err2 = (mean - y_n) ** 2
        nll = (0.5 * (err2 * torch.exp(-logvar) + logvar)).mean(dim=(1, 2))
        loss = nll.sum() + self.cfg.logvar_bound_penalty * (self.max_logvar.sum() - self.min_logvar.sum())
        return loss, nll.detach(), err2.detach().mean(dim=(1, 2))

    @torch.no_grad()
    def evaluate(self, x_n: torch.Tensor, y_n: torch.Tensor, chunk: int = 8192
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Per-member NLL (with the 0.5 log 2 pi constant) and MSE ``[E]`` on normalised
        data x_n ``[n,in]``, y_n ``[n,out]`` shared by all members."""
        e, n = self.members, x_n.shape[0]
        nll_sum, mse_sum = torch.zeros(e, dtype=torch.float64), torch.zeros(e, dtype=torch.float64)
        for s in range(0, n, chunk):
            x, y = x_n[s: s + chunk].expand(e, -1, -1), y_n[s: s + chunk].expand(e, -1, -1)
            mean, logvar = self(x)
            err2 = (mean - y) ** 2
            nll = 0.5 * (err2 * torch.exp(-logvar) + logvar) + _HALF_LOG_2PI
            nll_sum += nll.sum(dim=(1, 2)).double()
            mse_sum += err2.sum(dim=(1, 2)).double()
        denom = n * self.out_dim
        return (nll_sum / denom).numpy(), (mse_sum / denom).numpy()

    # -- per-member snapshots (early stopping) -----------------------------------------
    def member_state(self, member: int) -> dict[str, torch.Tensor]:
        """A copy of every member-indexed parameter of ``member``."""
        return {name: p[member].detach().clone() for name, p in self.named_parameters()}

    def load_member_state(self, member: int, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, p in self.named_parameters():
                p[member].copy_(state[name])


class Transitions(Protocol):
    """What :func:`fit_ensemble` reads (a :class:`~models.common.buffer.ReplayBuffer` is one)."""

    obs: np.ndarray
    act: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray


@dataclass
class FitResult:
    """Outcome of one :func:`fit_ensemble`. Gaussian NLL per output dimension (constant
    included) and MSE, both in normalised target units, averaged over members; train_*
    over the last epoch's minibatches, val_* of the kept (best) members on the held-out
    split (on a training sample when there is none). history: one stats dict per epoch.
    val_mse_members: each member's validation MSE (E,), what MBPO picks its elites by
    (:func:`elite_members`)."""

    train_nll: float
    train_mse: float
    val_nll: float
    val_mse: float
    epochs: int
    updates: int
    best_epoch: tuple[int, ...]
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    val_mse_members: tuple[float, ...] = ()


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def fit_ensemble(model: ProbabilisticEnsemble, data: Transitions, cfg: TrainConfig = TrainConfig(),
                 rng: np.random.Generator | int | None = None,
                 callback: Callable[[int, dict[str, float]], bool | None] | None = None,
                 ) -> FitResult:
    """Fit ``model`` on ``data`` (obs, act, reward, next_obs of n transitions).

    Refits the normalisers on the training split (the weights carry over from the last
    fit, as in mbrl-lib), then runs Adam on the Gaussian NLL
    until every member has gone ``cfg.patience`` epochs without improving its validation
    MSE by ``cfg.min_improvement`` (relative), or ``cfg.epochs`` / ``cfg.max_updates``
    run out. Each member ends with the weights of its best validation epoch. With no
    validation split (``val_fraction`` 0 or too little data) the last weights are kept.
    ``callback(epoch, stats)`` is called after each epoch; returning True stops the fit.
    Terminal flags are ignored (PETS models the dynamics only). The torch thread count is
    the caller's (``torch.set_num_threads``).
    """
    t0 = time.perf_counter()
    rng = _as_rng(rng)
    obs = np.asarray(data.obs, np.float32)
    n = obs.shape[0]
    if n < 2:
        raise ValueError(f"cannot fit on {n} transition(s): collect at least 2")
    act = np.asarray(data.act, np.float32)
    inputs = np.concatenate([obs, act], axis=1)
    targets = np.asarray(data.next_obs, np.float32) - obs
    if model.cfg.learned_reward:
        targets = np.concatenate([targets, np.asarray(data.reward, np.float32).reshape(n, 1)], axis=1)
    if not (np.all(np.isfinite(inputs)) and np.all(np.isfinite(targets))):
        raise ValueError("the transitions hold non-finite values: clean the buffer before fitting")

    # Split: hold out a validation share (at least one row when asked for any).
    perm = rng.permutation(n)
    n_val = int(round(cfg.val_fraction * n))
    if cfg.val_fraction > 0 and n_val == 0 and n >= 4:
        n_val = 1
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    model.fit_normalisers(inputs[train_idx], targets[train_idx])

    def normalised(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = (torch.as_tensor(inputs[idx]) - model.in_mean) / model.in_std
        y = (torch.as_tensor(targets[idx]) - model.out_mean) / model.out_std
        return x, y

    x_tr, y_tr = normalised(train_idx)
    if n_val:
        x_val, y_val = normalised(val_idx[: cfg.max_val_samples])
    else:
        sub = rng.permutation(len(train_idx))[: min(cfg.max_val_samples, len(train_idx))]
        x_val, y_val = x_tr[sub], y_tr[sub]

    e, n_tr = model.members, len(train_idx)
    rows = rng.integers(0, n_tr, (e, n_tr)) if cfg.bootstrap else np.tile(np.arange(n_tr), (e, 1))
    decay = [p for name, p in model.named_parameters() if name.endswith("weight")]
    other = [p for name, p in model.named_parameters() if not name.endswith("weight")]
    opt = torch.optim.Adam([{"params": decay, "weight_decay": cfg.weight_decay},
                            {"params": other, "weight_decay": 0.0}], lr=cfg.lr, fused=True)

    best_mse = np.full(e, np.inf)
    best_epoch = [0] * e
    since_best = np.zeros(e, np.int64)
    best_state = [model.member_state(m) for m in range(e)]
    history: list[dict[str, float]] = []
    updates = 0
    epoch = 0
    train_nll = train_mse = float("nan")
    model.train()
    while epoch < cfg.epochs and updates < cfg.max_updates:
        epoch += 1
        order = rng.permuted(rows, axis=1)
        nll_sum, mse_sum, batches = 0.0, 0.0, 0
        for s in range(0, n_tr, cfg.batch_size):
            b = torch.as_tensor(order[:, s: s + cfg.batch_size])
            loss, nll, mse = model.nll_loss(x_tr[b], y_tr[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            nll_sum += float(nll.mean())
            mse_sum += float(mse.mean())
            batches += 1
            updates += 1
            if updates >= cfg.max_updates:
                break
        train_nll, train_mse = nll_sum / batches + _HALF_LOG_2PI, mse_sum / batches
        val_nll_m, val_mse_m = model.evaluate(x_val, y_val)
        improved = val_mse_m < best_mse * (1.0 - cfg.min_improvement)
        for m in np.flatnonzero(improved):
            best_mse[m], best_epoch[m], since_best[m] = val_mse_m[m], epoch, 0
            best_state[m] = model.member_state(int(m))
        since_best[~improved] += 1
        stats = {"epoch": epoch, "updates": updates, "train_nll": train_nll, "train_mse": train_mse,
                 "val_nll": float(val_nll_m.mean()), "val_mse": float(val_mse_m.mean()),
                 "improved": int(improved.sum())}
        history.append(stats)
        log.debug("epoch %d: train nll %.4f mse %.4f, val nll %.4f mse %.4f (%d members improved)",
                  epoch, train_nll, train_mse, stats["val_nll"], stats["val_mse"], stats["improved"])
        if callback is not None and callback(epoch, stats):
            log.info("fit stopped by the callback after epoch %d", epoch)
            break
        if n_val and np.all(since_best >= cfg.patience):
            log.info("early stop after epoch %d: no member improved for %d epochs", epoch, cfg.patience)
            break

    if n_val:
        for m in range(e):
            model.load_member_state(m, best_state[m])
    model.eval()
    val_nll_m, val_mse_m = model.evaluate(x_val, y_val)
    result = FitResult(train_nll=train_nll, train_mse=train_mse, val_nll=float(val_nll_m.mean()),
                       val_mse=float(val_mse_m.mean()), epochs=epoch, updates=updates,
                       best_epoch=tuple(best_epoch) if n_val else (epoch,) * e,
                       seconds=time.perf_counter() - t0, history=history,
                       val_mse_members=tuple(float(v) for v in val_mse_m))
    log.info("fit %d transitions (%d held out): %d epochs, %d updates, val nll %.4f mse %.4f, %.1fs",
             n, n_val, epoch, updates, result.val_nll, result.val_mse, result.seconds)
    return result



def elite_members(fit: FitResult, elites: int) -> tuple[int, ...]:
    """The ``elites`` members with the lowest validation MSE of ``fit``, in member order
    (MBPO, Janner et al. 2019, app. C: 7 members trained, the 5 best on held-out data used)."""
    mse = np.asarray(fit.val_mse_members, np.float64)
    if not 1 <= elites <= mse.size:
        raise ValueError(f"elites = {elites} must be in 1..{mse.size} (the members fitted)")
    return tuple(sorted(int(m) for m in np.argsort(mse, kind="stable")[:elites]))


def select_members(model: ProbabilisticEnsemble, members) -> ProbabilisticEnsemble:
    """A new ensemble of ``model``'s ``members`` (indices) only, weights, bounds and normalisers
    copied: what is exported when only the elites are rolled out."""
    idx = [int(m) for m in members]
    if not idx or any(not 0 <= m < model.members for m in idx) or len(set(idx)) != len(idx):
        raise ValueError(f"members {idx} must be distinct indices in 0..{model.members - 1}")
    sub = ProbabilisticEnsemble(model.obs_dim, model.act_dim, model.cfg.replace(members=len(idx), particles=0))
    index = torch.as_tensor(idx)
    with torch.no_grad():
        for p_sub, p in zip(sub.parameters(), model.parameters(), strict=True):
            p_sub.copy_(p[index])
        for b_sub, b in zip(sub.buffers(), model.buffers(), strict=True):
            b_sub.copy_(b)
    return sub.eval()


def save_ensemble(model: ProbabilisticEnsemble, path: str | os.PathLike) -> Path:
    """Checkpoint ``model`` (config, sizes, weights, normalisers) to ``path``, atomically."""
    payload = {"format": 1, "obs_dim": model.obs_dim, "act_dim": model.act_dim,
               "cfg": to_dict(model.cfg), "state": model.state_dict()}
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_ensemble(path: str | os.PathLike) -> ProbabilisticEnsemble:
    """Rebuild an ensemble saved by :func:`save_ensemble`; a bad file is a ModelError."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"ensemble checkpoint {p} not found")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
        model = ProbabilisticEnsemble(payload["obs_dim"], payload["act_dim"],
                                      from_dict(EnsembleConfig, payload["cfg"]))
        model.load_state_dict(payload["state"])
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError, pickle.UnpicklingError) as err:
        # weights_only=True: a checkpoint that carries pickled code is refused here, never run
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelError(f"ensemble checkpoint {p} is damaged or not an ensemble ({first[:200]})") from None
    return model.eval()
