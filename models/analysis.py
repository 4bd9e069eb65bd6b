"""How far can a model be trusted: k-step error, calibration and the horizon it supports. No torch.

The model is rolled open-loop from real states along real action sequences and compared
with what really happened (docs/analyze.md explains every metric):

1. **Data**: :func:`collect_trajectory` runs a policy (the planner over the model, or
   random actions) in the simulator and keeps observations, actions, rewards and the
   physics states. :func:`make_windows` cuts every trajectory into windows of H steps:
   start observation ``o_t``, actions ``a_t .. a_{t+H-1}``, true ``o_{t+1} .. o_{t+H}``
   and rewards ``r_t .. r_{t+H-1}``.
2. **Prediction**: a :class:`Predictor` starts from ``o_t`` (``begin``) and is fed the
   window's actions one step at a time (``step``), never seeing a real observation again.
   :class:`PETSPredictor` serves an exported PETS ensemble (ONNX Runtime),
   :class:`SimPredictor` the true simulator (an exact model, for tests and as a reference),
   :class:`FunctionPredictor` any ``(obs, act) -> (next_obs, reward)`` function.
3. **Metrics** (:func:`analyze`), all as functions of k = 1..H:

   - state error ``e_k``: per window, the RMS over dimensions of ``(pred - true) / s``,
     with ``s`` (O,) the standard deviation of each observation dimension in the data;
     the mean and 90th percentile over windows; also the raw RMSE per dimension. Against
     the last-state baseline (``o_t`` held) and the constant-velocity one
     (``o_t + k (o_t - o_{t-1})``).
   - reward error ``|r_hat - r|`` at step k, and the error of the predicted k-step return
     ``R_k = sum_{j<k} gamma^j r_{t+j}``, against the same baselines on the reward (last
     reward held; linear extrapolation of the last two).
   - calibration: the ensemble disagreement ``d_k`` (RMS over dimensions of the members'
     standard deviation, normalised by ``s``) and the predicted standard deviation
     (disagreement and the members' predicted noise) against the true error ``e_k``, as a
     reliability curve (quantile bins of the prediction) and Spearman rank correlations:
     pooled over all (window, k) pairs, and within each k.
   - a suggested horizon: the largest k such that for every j <= k the mean return error
     stays within ``fraction`` times the spread (standard deviation over windows) of the
     true j-step return; compared with the MBPO-style linear-drift rule (Janner et al.,
     "When to Trust Your Model", NeurIPS 2019, lemma B.2): if the one-step state
     distribution error ``eps`` only added up (``k eps`` after k steps), the return error
     after k steps would be ``eps_R k (k + 1) / 2`` with ``eps_R`` the one-step reward error.

Every function over arrays is pure numpy and states its shapes; Spearman's correlation is
computed here (average ranks for ties), so scipy is not needed.
"""

from __future__ import annotations

import abc
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from rtmpc.configs.plots import pyplot, save_png
from rtmpc.models.base import ModelError

__all__ = ["Trajectory", "Windows", "Prediction", "Predictor", "PETSPredictor", "LatentPredictor", "SimPredictor",
           "FunctionPredictor", "Rollouts", "PREDICTORS", "make_predictor", "collect_trajectory",
           "make_windows", "predict_windows", "analyze", "rankdata", "spearman", "reliability_curve",
           "normalised_error", "discounted_cumsum", "supported_horizon", "linear_drift_horizon",
           "last_state_baseline", "constant_velocity_baseline", "plot_errors", "plot_calibration",
           "ANALYSIS_FILE", "VALUE_TAIL", "read_suggested_horizon", "to_json"]

log = logging.getLogger(__name__)

ANALYSIS_FILE = "analysis.json"
"""Name of the report in a run directory; ``suggested_horizon`` in it bounds a tuner's horizon."""


# -- data ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trajectory:
    """One episode: obs (T+1, O), act (T, A), reward (T,), states (T+1, S) physics states
    or None, source: a label ("controller", "random") for per-source results, terminated:
    the task ended the episode (nothing follows), as opposed to a time limit or a cap."""

    obs: np.ndarray
    act: np.ndarray
    reward: np.ndarray
    states: np.ndarray | None = None
    source: str = ""
    terminated: bool = False

    def __post_init__(self) -> None:
        t = len(self.act)
        if self.obs.shape[0] != t + 1 or self.reward.shape != (t,) or (
                self.states is not None and self.states.shape[0] != t + 1):
            raise ValueError(f"trajectory shapes disagree: obs {self.obs.shape} (want T+1 rows), act "
                             f"{self.act.shape}, reward {self.reward.shape}, states "
                             f"{None if self.states is None else self.states.shape}")


def collect_trajectory(env, policy: Callable[[np.ndarray], np.ndarray], seed: int, steps: int = 0,
                       source: str = "") -> Trajectory:
    """Run ``policy(obs) -> action (A,)`` in ``env`` (a sim.Env) for one episode.

    steps: cap on steps (0 = the task's episode); the episode also ends when the task
    terminates or truncates. Physics states are kept (``env.get_state()``) before every step.
    """
    obs, _ = env.reset(seed=seed)
    cap = steps or env.spec.episode_steps
    o, a, r, s = [obs], [], [], [env.get_state()]
    terminated = False
    for _ in range(cap):
        act = np.asarray(policy(obs), dtype=np.float64).reshape(-1)
        act = np.clip(act, env.spec.action_low, env.spec.action_high)
        obs, reward, terminated, truncated, _ = env.step(act)
        o.append(obs)
        a.append(act)
        r.append(reward)
        s.append(env.get_state())
        if terminated or truncated:
            break
    return Trajectory(np.asarray(o, np.float64), np.asarray(a, np.float64), np.asarray(r, np.float64),
                      np.asarray(s, np.float64), source, bool(terminated))


@dataclass(frozen=True)
class Windows:
    """N open-loop windows of H steps, cut from trajectories.

    obs0 (N, O): o_t; prev_obs (N, O): o_{t-1}; actions (N, H, A): a_t .. a_{t+H-1};
    true_obs (N, H, O): o_{t+1} .. o_{t+H}; true_reward (N, H): r_t .. r_{t+H-1};
    prev_reward (N, 2): r_{t-1}, r_{t-2}; states0 (N, S) physics states at t or None;
    source (N,) labels; true_value (N, H) or None: the discounted return-to-go from
    o_{t+k}, ``sum_{j>=0} gamma^j r_{t+k+j}`` up to the end of the episode; value_ok (N,)
    or None: the windows whose return-to-go is a fair target for a value estimate (from a
    source that follows the controller's policy, and either the episode terminated or what
    the time limit cut off weighs ``gamma^(T-t-H) <= VALUE_TAIL``).
    """

    obs0: np.ndarray
    prev_obs: np.ndarray
    actions: np.ndarray
    true_obs: np.ndarray
    true_reward: np.ndarray
    prev_reward: np.ndarray
    states0: np.ndarray | None
    source: np.ndarray
    true_value: np.ndarray | None = None
    value_ok: np.ndarray | None = None

    @property
    def n(self) -> int:
        return self.obs0.shape[0]

    @property
    def horizon(self) -> int:
        return self.actions.shape[1]

    def select(self, mask: np.ndarray) -> "Windows":
        """The windows where ``mask`` (N,) is true."""
        return Windows(*(None if v is None else v[mask] for v in (
            self.obs0, self.prev_obs, self.actions, self.true_obs, self.true_reward, self.prev_reward,
            self.states0, self.source, self.true_value, self.value_ok)))


VALUE_TAIL = 0.05
"""Largest weight ``gamma^(steps cut off)`` of the return a time limit removed from a value target."""


def make_windows(trajectories: list[Trajectory], horizon: int, stride: int = 1, gamma: float | None = None,
                 value_sources: tuple[str, ...] | None = None) -> Windows:
    """Every window of ``horizon`` steps starting at t = 2, 2 + stride, ... (t >= 2 so that the
    baselines have o_{t-1}, r_{t-1} and r_{t-2}); a ModelError if there is none. With
    ``gamma`` the windows carry the true discounted return-to-go (value targets), fair
    (``value_ok``) in the windows of ``value_sources`` (None: every source) whose episode
    terminated or went on long enough after the window (see :data:`VALUE_TAIL`)."""
    if horizon < 1 or stride < 1:
        raise ValueError(f"horizon = {horizon} and stride = {stride} must be >= 1")
    keys = ("obs0", "prev", "act", "obs", "rew", "prev_r", "states", "src", "value", "value_ok")
    parts: dict[str, list] = {k: [] for k in keys}
    with_states = all(tr.states is not None for tr in trajectories)
    for tr in trajectories:
        t_steps = len(tr.act)
        if gamma is not None:  # to_go[i] = sum_{j>=0} gamma^j r_{i+j}
            to_go = np.zeros(t_steps + 1)
            for i in range(t_steps - 1, -1, -1):
                to_go[i] = tr.reward[i] + gamma * to_go[i + 1]
        for t in range(2, t_steps - horizon + 1, stride):
            parts["obs0"].append(tr.obs[t])
            parts["prev"].append(tr.obs[t - 1])
            parts["act"].append(tr.act[t:t + horizon])
            parts["obs"].append(tr.obs[t + 1:t + horizon + 1])
            parts["rew"].append(tr.reward[t:t + horizon])
            parts["prev_r"].append(tr.reward[[t - 1, t - 2]])
            if with_states:
                parts["states"].append(tr.states[t])
            parts["src"].append(tr.source)
            if gamma is not None:
                parts["value"].append(to_go[t + 1:t + horizon + 1])
                fair_source = value_sources is None or tr.source in value_sources
                cut = gamma ** (t_steps - t - horizon) if gamma < 1.0 else 1.0
                parts["value_ok"].append(fair_source and (tr.terminated or cut <= VALUE_TAIL))
    if not parts["obs0"]:
        longest = max((len(tr.act) for tr in trajectories), default=0)
        raise ModelError(f"no window of {horizon} steps fits in the episodes (longest {longest} steps, and a "
                         f"window starts at step 2): lower --horizon or run longer episodes")
    return Windows(np.asarray(parts["obs0"]), np.asarray(parts["prev"]), np.asarray(parts["act"]),
                   np.asarray(parts["obs"]), np.asarray(parts["rew"]), np.asarray(parts["prev_r"]),
                   np.asarray(parts["states"]) if with_states else None, np.asarray(parts["src"]),
                   np.asarray(parts["value"]) if gamma is not None else None,
                   np.asarray(parts["value_ok"], bool) if gamma is not None else None)


# -- predictors ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    """One predicted step for N rows (None where the model does not predict the quantity).

    reward (N,): predicted reward of the step (None for a model whose file only gives
    whole-sequence scores); obs (N, O): predicted next observation
    (None for a latent model without a decoder); obs_spread (N, O): standard deviation of
    the ensemble members' predictions (disagreement); obs_var (N, O): total predicted
    variance; reward_spread, reward_var (N,): the same for the reward; value (N,): the
    model's value estimate of the state reached (latent models with a value head); score
    (N,): the model's own score of the k steps so far, as its planner sees it (discounted
    predicted rewards plus the discounted terminal value: latent models).
    """

    reward: np.ndarray | None = None
    obs: np.ndarray | None = None
    obs_spread: np.ndarray | None = None
    obs_var: np.ndarray | None = None
    reward_spread: np.ndarray | None = None
    reward_var: np.ndarray | None = None
    value: np.ndarray | None = None
    score: np.ndarray | None = None


class Predictor(abc.ABC):
    """A model rolled open-loop: ``begin(obs0 (N, O), states0 (N, S) | None)`` starts N
    rollouts, each ``step(act (N, A)) -> Prediction`` advances them one model step.

    Stateful rather than ``predict(obs, act)`` because what a model carries between steps
    is its own business: PETS carries one state per member, a latent model a latent
    vector (encoded once from obs0), the true simulator a physics state.
    """

    obs_dim: int
    act_dim: int
    gamma: float = 1.0  # discount per model step of the returns (the model file's, where it has one)

    @abc.abstractmethod
    def begin(self, obs0: np.ndarray, states0: np.ndarray | None = None) -> None:
        ...

    @abc.abstractmethod
    def step(self, act: np.ndarray) -> Prediction:
        ...


class PETSPredictor(Predictor):
    """An exported PETS ensemble (``model.onnx``) rolled open-loop with ONNX Runtime.

    propagation:
      ``members`` (default): every member keeps its own trajectory of mean predictions
      (PETS's TSinf without the sampling noise); the prediction is the mean over members,
      the disagreement their standard deviation, which therefore compounds with k.
      ``expectation``: one state per row, the members' mean, fed back each step (the
      runtime's ``expectation``); the disagreement is then the one-step spread at the
      mean state.
    Predicted variance: disagreement^2 plus the members' mean predicted noise variance
    (``delta_std^2``) summed over the steps so far (independent step noise, not
    propagated through the dynamics). reward_fn: as in the runtime, for a file without a
    learned reward. threads: ONNX Runtime intra-op threads.
    """

    PROPAGATIONS = ("members", "expectation")

    def __init__(self, path: str | os.PathLike, *, propagation: str = "members", threads: int = 1,
                 reward_fn: Callable | None = None) -> None:
        import onnxruntime as ort
        from rtmpc.models.runtime import load_model, session_options

        if propagation not in self.PROPAGATIONS:
            raise ModelError(f"propagation {propagation!r}: choose one of {', '.join(self.PROPAGATIONS)}")
        model = load_model(path, threads=threads, reward_fn=reward_fn)  # validates file and metadata
        if model.dims.kind != "pets":
            raise ModelError(f"{path} holds a {model.dims.kind!r} model, not a PETS ensemble")
        self.dims = model.dims
        self.gamma = float(model.dims.gamma)
        self.obs_dim, self.act_dim = model.dims.obs_dim, model.dims.act_dim
        self.members = int(model.dims.meta["members"])
        self.learned_reward = bool(json.loads(model.dims.meta["learned_reward"]))
        self.propagation = propagation
        self._reward_fn = reward_fn
        self._sess = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        self._outputs = ["delta_mean", "delta_std"] + (["reward_mean", "reward_std"] if self.learned_reward else [])
        self._state = np.zeros((self.members, 0, self.obs_dim), np.float32)
        self._noise_var = np.zeros((0, self.obs_dim))

    def begin(self, obs0: np.ndarray, states0: np.ndarray | None = None) -> None:
        obs0 = np.asarray(obs0, np.float32).reshape(-1, self.obs_dim)
        self._state = np.ascontiguousarray(np.broadcast_to(obs0, (self.members, *obs0.shape)))
        self._noise_var = np.zeros(obs0.shape)

    def step(self, act: np.ndarray) -> Prediction:
        e, o = self.members, self.obs_dim
        act = np.asarray(act, np.float32).reshape(-1, self.act_dim)
        n = act.shape[0]
        if n != self._state.shape[1]:
            raise ModelError(f"step got {n} actions for {self._state.shape[1]} rollouts")
        act_e = np.ascontiguousarray(np.broadcast_to(act, (e, n, self.act_dim)))
        outs = dict(zip(self._outputs, self._sess.run(self._outputs, {"obs": self._state, "act": act_e})))
        nxt = self._state + outs["delta_mean"]  # (E, N, O)
        mean = nxt.mean(axis=0, dtype=np.float64)
        spread = nxt.std(axis=0, dtype=np.float64)
        self._noise_var += np.mean(np.square(outs["delta_std"], dtype=np.float64), axis=0)
        if self.learned_reward:
            rm, rs = outs["reward_mean"].astype(np.float64), outs["reward_std"].astype(np.float64)
        else:
            flat = (self._state.reshape(-1, o), act_e.reshape(-1, self.act_dim), nxt.reshape(-1, o))
            rm, rs = np.asarray(self._reward_fn(*flat), np.float64).reshape(e, n), np.zeros((e, n))
        pred = Prediction(reward=rm.mean(axis=0), obs=mean, obs_spread=spread,
                          obs_var=spread**2 + self._noise_var, reward_spread=rm.std(axis=0),
                          reward_var=rm.var(axis=0) + np.mean(rs**2, axis=0))
        if self.propagation == "members":
            self._state = np.ascontiguousarray(nxt)
        else:
            self._state = np.ascontiguousarray(np.broadcast_to(mean.astype(np.float32), nxt.shape))
        return pred


class SimPredictor(Predictor):
    """The true dynamics as a model: each row's physics state is restored, stepped with its
    action and saved again, on one environment (rows one after another).

    Needs the physics states (``begin(obs0, states0)``): an observation does not determine
    the state in general. Exact where ``env.get_state()`` holds all that the next step
    depends on (dm_control suite tasks); not for tasks that keep per-episode randomness in
    the model itself (point-target's target). An episode end returned by a step resets the
    env before the next row (Gymnasium semantics).
    """

    def __init__(self, env) -> None:
        self.env = env
        self.obs_dim, self.act_dim = env.spec.obs_dim, env.spec.act_dim
        self._states = np.zeros((0, 0))

    def begin(self, obs0: np.ndarray, states0: np.ndarray | None = None) -> None:
        if states0 is None:
            raise ModelError("the true-dynamics predictor needs the physics states of the windows")
        self._states = np.array(states0, np.float64)
        self.env.reset()

    def step(self, act: np.ndarray) -> Prediction:
        act = np.asarray(act, np.float64).reshape(-1, self.act_dim)
        n = act.shape[0]
        obs, rew = np.empty((n, self.obs_dim)), np.empty(n)
        for i in range(n):
            self.env.set_state(self._states[i])
            obs[i], rew[i], terminated, truncated, _ = self.env.step(act[i])
            self._states[i] = self.env.get_state()
            if terminated or truncated:
                self.env.reset()
        zeros = np.zeros_like(obs)
        return Prediction(reward=rew, obs=obs, obs_spread=zeros, obs_var=zeros)


class FunctionPredictor(Predictor):
    """``fn(obs (N, O), act (N, A)) -> (next_obs (N, O), reward (N,))`` as a deterministic
    model (no disagreement): a hand-written model, a toy system in tests."""

    def __init__(self, fn: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]], obs_dim: int,
                 act_dim: int) -> None:
        self.fn, self.obs_dim, self.act_dim = fn, obs_dim, act_dim
        self._obs = np.zeros((0, obs_dim))

    def begin(self, obs0: np.ndarray, states0: np.ndarray | None = None) -> None:
        self._obs = np.array(obs0, np.float64).reshape(-1, self.obs_dim)

    def step(self, act: np.ndarray) -> Prediction:
        nxt, rew = self.fn(self._obs, np.asarray(act, np.float64).reshape(-1, self.act_dim))
        self._obs = np.asarray(nxt, np.float64).reshape(self._obs.shape)
        return Prediction(reward=np.asarray(rew, np.float64).reshape(-1), obs=self._obs.copy())


class LatentPredictor(Predictor):
    """An exported TD-MPC-style latent model (``kind = "latent"``) as its planner sees it.

    The exported graph is fused: ``(obs0, actions (K, H, A)) -> returns (K,)``, the
    discounted latent rewards plus the discounted terminal value ``Q(z_H, pi(z_H))``, with
    neither per-step rewards, latent states nor a decoder among its outputs. So each step
    k scores the k actions so far from obs0 (one call per row, deterministic: the prior's
    mean action and heads 0 and 1) and reports that as ``score``; no observation, reward or
    value is predicted (see docs/analyze.md for what a per-step graph would add).
    """

    def __init__(self, path: str | os.PathLike, *, threads: int = 1, propagation: str | None = None) -> None:
        from rtmpc.models.runtime import load_model

        if propagation is not None:
            raise ModelError(f"propagation = {propagation!r} applies to PETS ensembles, not to a latent model")
        self.model = load_model(path, threads=threads, stochastic=False)
        if self.model.dims.kind != "latent":
            raise ModelError(f"{path} holds a {self.model.dims.kind!r} model, not a latent model")
        self.obs_dim, self.act_dim = self.model.dims.obs_dim, self.model.dims.act_dim
        self.gamma = float(self.model.dims.gamma)
        self._obs0 = np.zeros((0, self.obs_dim), np.float32)
        self._acts: list[np.ndarray] = []

    def begin(self, obs0: np.ndarray, states0: np.ndarray | None = None) -> None:
        self._obs0 = np.asarray(obs0, np.float32).reshape(-1, self.obs_dim)
        self._acts = []

    def step(self, act: np.ndarray) -> Prediction:
        self._acts.append(np.asarray(act, np.float32).reshape(-1, self.act_dim))
        seq = np.ascontiguousarray(np.stack(self._acts, axis=1))  # (N, k, A)
        score = np.array([float(self.model.rollout(self._obs0[i], seq[i:i + 1])[0]) for i in range(len(seq))])
        return Prediction(score=score)


# Model kinds (ONNX metadata "kind") -> predictor built as cls(path, **options).
PREDICTORS: dict[str, Callable[..., Predictor]] = {"pets": PETSPredictor, "latent": LatentPredictor}


def make_predictor(path: str | os.PathLike, **options: Any) -> Predictor:
    """The predictor for the kind of model stored in ``path`` (see :data:`PREDICTORS`);
    options that are None are left to the predictor's defaults."""
    from rtmpc.models.runtime import read_metadata

    kind = read_metadata(path).get("kind")
    if kind not in PREDICTORS:
        raise ModelError(f"model file {path} holds a {kind!r} model; analysis knows "
                         f"{', '.join(sorted(PREDICTORS))}")
    return PREDICTORS[kind](path, **{k: v for k, v in options.items() if v is not None})


@dataclass(frozen=True)
class Rollouts:
    """Open-loop predictions over windows: reward (N, H); obs, obs_spread, obs_var (N, H, O),
    reward_spread, reward_var, value, score (N, H); None where the predictor gave none."""

    reward: np.ndarray | None = None
    obs: np.ndarray | None = None
    obs_spread: np.ndarray | None = None
    obs_var: np.ndarray | None = None
    reward_spread: np.ndarray | None = None
    reward_var: np.ndarray | None = None
    value: np.ndarray | None = None
    score: np.ndarray | None = None

    def select(self, mask: np.ndarray) -> "Rollouts":
        return Rollouts(*(None if v is None else v[mask] for v in (
            self.reward, self.obs, self.obs_spread, self.obs_var, self.reward_spread, self.reward_var,
            self.value, self.score)))


def predict_windows(predictor: Predictor, windows: Windows, batch: int = 1024) -> Rollouts:
    """Roll ``predictor`` open-loop over every window, ``batch`` windows at a time."""
    fields = ("reward", "obs", "obs_spread", "obs_var", "reward_spread", "reward_var", "value", "score")
    chunks: dict[str, list] = {f: [] for f in fields}
    for lo in range(0, windows.n, batch):
        hi = min(lo + batch, windows.n)
        predictor.begin(windows.obs0[lo:hi], None if windows.states0 is None else windows.states0[lo:hi])
        steps = [predictor.step(windows.actions[lo:hi, k]) for k in range(windows.horizon)]
        for f in fields:
            values = [getattr(p, f) for p in steps]
            chunks[f].append(None if any(v is None for v in values) else np.stack(values, axis=1))
    out = {f: None if any(c is None for c in chunks[f]) else np.concatenate(chunks[f]) for f in fields}
    return Rollouts(**out)


# -- metrics over arrays -----------------------------------------------------------------
def normalised_error(pred: np.ndarray, true: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """RMS over the last axis of ``(pred - true) / scale``: (..., O), (..., O), (O,) -> (...)."""
    return np.sqrt(np.mean(np.square((pred - true) / scale), axis=-1))


def last_state_baseline(obs0: np.ndarray, horizon: int) -> np.ndarray:
    """o_t held for k = 1..H: (N, O) -> (N, H, O)."""
    return np.repeat(obs0[:, None, :], horizon, axis=1)


def constant_velocity_baseline(obs0: np.ndarray, prev_obs: np.ndarray, horizon: int) -> np.ndarray:
    """o_t + k (o_t - o_{t-1}) for k = 1..H: (N, O), (N, O) -> (N, H, O)."""
    k = np.arange(1, horizon + 1)[None, :, None]
    return obs0[:, None, :] + k * (obs0 - prev_obs)[:, None, :]


def discounted_cumsum(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """R_k = sum_{j<k} gamma^j r_j for k = 1..H: (N, H) -> (N, H)."""
    return np.cumsum(rewards * gamma ** np.arange(rewards.shape[1]), axis=1)


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties given their average rank (scipy's ``method='average'``)."""
    x = np.asarray(x).reshape(-1)
    order = np.argsort(x, kind="mergesort")
    inv = np.empty_like(order)
    inv[order] = np.arange(x.size)
    xs = x[order]
    new = np.r_[True, xs[1:] != xs[:-1]]
    dense = np.cumsum(new)[inv]  # 1-based group of each element
    bounds = np.r_[np.nonzero(new)[0], x.size]  # group g spans sorted positions bounds[g-1] .. bounds[g]-1
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation of two equally long 1-D arrays (Pearson's on average
    ranks); NaN when fewer than 3 finite pairs or either is constant."""
    x, y = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"spearman needs arrays of one length, got {x.size} and {y.size}")
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")
    rx, ry = rankdata(x[ok]), rankdata(y[ok])
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry / denom) if denom > 0 else float("nan")


def reliability_curve(pred_std: np.ndarray, err: np.ndarray, bins: int = 10) -> dict[str, list]:
    """Reliability of a predicted spread: pairs sorted into ``bins`` quantile bins of
    ``pred_std``; per bin the RMS predicted spread, the RMS true error and the count.

    A calibrated Gaussian prediction has ``E[err^2] = pred_std^2``: its points lie on the
    diagonal; points above it are over-confident. Inputs: any shape, flattened.
    """
    p, e = np.asarray(pred_std, np.float64).reshape(-1), np.asarray(err, np.float64).reshape(-1)
    ok = np.isfinite(p) & np.isfinite(e)
    p, e = p[ok], e[ok]
    if p.size == 0:
        return {"pred_rms": [], "err_rms": [], "count": []}
    order = np.argsort(p, kind="mergesort")
    groups = [g for g in np.array_split(order, min(bins, p.size)) if g.size]
    return {"pred_rms": [float(np.sqrt(np.mean(p[g] ** 2))) for g in groups],
            "err_rms": [float(np.sqrt(np.mean(e[g] ** 2))) for g in groups],
            "count": [int(g.size) for g in groups]}


def supported_horizon(err_by_k: np.ndarray, spread_by_k: np.ndarray, fraction: float) -> int:
    """Largest k (0..H) with ``err_j <= fraction * spread_j`` for every j <= k: (H,), (H,) -> int.

    0 means the model's one-step prediction already fails the test.
    """
    bad = ~(np.asarray(err_by_k) <= fraction * np.asarray(spread_by_k))
    return int(np.argmax(bad)) if bad.any() else int(len(bad))


def linear_drift_horizon(one_step_err: float, spread_by_k: np.ndarray, fraction: float) -> int:
    """The MBPO-style k*: the horizon :func:`supported_horizon` would give if the return error
    grew only through a linearly growing state-distribution error (Janner et al. 2019, lemma
    B.2: TV distance after k steps <= k eps), i.e. ``err_k = one_step_err * k (k + 1) / 2``."""
    k = np.arange(1, len(spread_by_k) + 1)
    return supported_horizon(one_step_err * k * (k + 1) / 2.0, spread_by_k, fraction)


def _stats(x: np.ndarray, q: float = 90.0) -> tuple[list[float], list[float]]:
    """Mean and q-th percentile over axis 0 of an (N, H) array, as lists."""
    return np.mean(x, axis=0).tolist(), np.percentile(x, q, axis=0).tolist()


def _rms_norm(v: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """RMS over the last axis of v / scale: (..., O) -> (...)."""
    return np.sqrt(np.mean(np.square(v / scale), axis=-1))


def _core(windows: Windows, pred: Rollouts, scale: np.ndarray | None, gamma: float, fraction: float,
          bins: int) -> dict[str, Any]:
    """The metrics of one set of windows (see :func:`analyze` for the keys)."""
    h = windows.horizon
    out: dict[str, Any] = {"windows": int(windows.n)}
    # State error against the baselines.
    if pred.obs is not None:
        err = normalised_error(pred.obs, windows.true_obs, scale)  # (N, H)
        out["state_error_by_k"], out["state_error_p90_by_k"] = _stats(err)
        out["state_rmse_by_dim"] = np.sqrt(np.mean((pred.obs - windows.true_obs) ** 2, axis=0)).T.tolist()
        out["state_error_by_dim"] = np.sqrt(np.mean(((pred.obs - windows.true_obs) / scale) ** 2, axis=0)).T.tolist()
        last = normalised_error(last_state_baseline(windows.obs0, h), windows.true_obs, scale)
        cv = normalised_error(constant_velocity_baseline(windows.obs0, windows.prev_obs, h), windows.true_obs,
                              scale)
        out["state_error_last_state_by_k"] = np.mean(last, axis=0).tolist()
        out["state_error_const_velocity_by_k"] = np.mean(cv, axis=0).tolist()
        out["state_error_linear_by_k"] = (out["state_error_by_k"][0] * np.arange(1, h + 1)).tolist()
    # Reward and return error against the baselines.
    r_true = windows.true_reward
    ret_true = discounted_cumsum(r_true, gamma)
    if pred.reward is not None:
        r_last = np.repeat(windows.prev_reward[:, :1], h, axis=1)
        r_cv = r_last + np.arange(1, h + 1) * (windows.prev_reward[:, :1] - windows.prev_reward[:, 1:])
        out["reward_error_by_k"], out["reward_error_p90_by_k"] = _stats(np.abs(pred.reward - r_true))
        ret_pred = discounted_cumsum(pred.reward, gamma)
        ret_err = np.abs(ret_pred - ret_true)
        out["return_error_by_k"], out["return_error_p90_by_k"] = _stats(ret_err)
        out["return_error_last_state_by_k"] = np.mean(np.abs(discounted_cumsum(r_last, gamma) - ret_true),
                                                      0).tolist()
        out["return_error_const_velocity_by_k"] = np.mean(np.abs(discounted_cumsum(r_cv, gamma) - ret_true),
                                                          0).tolist()
        out["return_spread_by_k"] = np.std(ret_true, axis=0).tolist()
        out["return_rank_spearman_by_k"] = [spearman(ret_pred[:, k], ret_true[:, k]) for k in range(h)]
        out["suggested_horizon"] = supported_horizon(np.mean(ret_err, 0), np.std(ret_true, 0), fraction)
        out["horizon_limited"] = out["suggested_horizon"] == h
        out["mbpo_k_star"] = linear_drift_horizon(float(np.mean(ret_err[:, 0])), np.std(ret_true, 0), fraction)
    # Value and score against the real return-to-go, on the windows where that is a fair target.
    if windows.true_value is not None and (pred.value is not None or pred.score is not None):
        ok = windows.value_ok
        out["value_windows"] = int(ok.sum())
        if ok.any() and pred.value is not None:
            out["value_error_by_k"], out["value_error_p90_by_k"] = _stats(np.abs(pred.value - windows.true_value)[ok])
        if ok.any() and pred.score is not None:
            true_score = (ret_true + gamma ** np.arange(1, h + 1) * windows.true_value)[ok]
            score_err = np.abs(pred.score[ok] - true_score)
            out["score_error_by_k"], out["score_error_p90_by_k"] = _stats(score_err)
            out["score_spread_by_k"] = np.std(true_score, axis=0).tolist()
            out["score_rank_spearman_by_k"] = [spearman(pred.score[ok][:, k], true_score[:, k]) for k in range(h)]
            if pred.reward is None:  # the planner's whole objective is all such a model offers
                out["suggested_horizon"] = supported_horizon(np.mean(score_err, 0), np.std(true_score, 0), fraction)
                out["horizon_limited"] = out["suggested_horizon"] == h
    # Calibration: disagreement and predicted std against the true state error.
    if pred.obs is not None and pred.obs_spread is not None:
        dis = _rms_norm(pred.obs_spread, scale)  # (N, H)
        out["disagreement_by_k"] = np.mean(dis, axis=0).tolist()
        out["disagreement_error_spearman"] = spearman(dis, err)
        per_k = [spearman(dis[:, k], err[:, k]) for k in range(h)]
        out["disagreement_error_spearman_by_k"] = per_k
        out["disagreement_error_spearman_within_k"] = _nanmean(per_k)
        out["reliability_disagreement"] = reliability_curve(dis, err, bins)
        if pred.obs_var is not None:
            std = _rms_norm(np.sqrt(pred.obs_var), scale)  # (N, H)
            out["predicted_std_by_k"] = np.mean(std, axis=0).tolist()
            out["variance_error_spearman"] = spearman(std, err)
            out["reliability_predicted_std"] = reliability_curve(std, err, bins)
            with np.errstate(invalid="ignore", divide="ignore"):  # an exact model: 0 / 0 -> NaN
                ratio = np.sqrt(np.mean(err**2, 0)) / np.sqrt(np.mean(std**2, 0))
            out["error_to_std_ratio_by_k"] = ratio.tolist()
    if pred.reward_spread is not None and pred.reward is not None:
        out["reward_disagreement_error_spearman"] = spearman(pred.reward_spread, np.abs(pred.reward - r_true))
    return out


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def analyze(predictor: Predictor, windows: Windows, *, gamma: float = 1.0, fraction: float = 0.5,
            scale: np.ndarray | None = None, bins: int = 10, rollouts: Rollouts | None = None) -> dict[str, Any]:
    """Roll ``predictor`` over ``windows`` and measure it; returns a JSON-ready dict.

    gamma: discount of the k-step return; fraction: the return error, as a fraction of the
    true return's spread, up to which a horizon is supported; scale (O,): per-dimension
    normaliser of the state error (default: the data's standard deviation per dimension,
    1 where a dimension is constant); bins: reliability-curve bins; rollouts: predictions
    already made (skips the rollout).

    Keys, each a list over k = 1..H where it ends in ``_by_k``: ``state_error_by_k``,
    ``state_error_p90_by_k``, ``state_error_last_state_by_k``,
    ``state_error_const_velocity_by_k``, ``state_error_linear_by_k`` (k times the one-step
    error), ``state_rmse_by_dim`` / ``state_error_by_dim`` (O lists of H; raw / normalised),
    ``reward_error_by_k`` (+ ``_p90``), ``return_error_by_k`` (+ ``_p90``, ``_last_state``,
    ``_const_velocity``), ``return_spread_by_k``, ``return_rank_spearman_by_k``,
    ``disagreement_by_k``, ``disagreement_error_spearman`` (pooled over windows and k),
    ``disagreement_error_spearman_by_k`` and ``_within_k`` (their mean),
    ``predicted_std_by_k``, ``variance_error_spearman``, ``error_to_std_ratio_by_k``,
    ``reliability_disagreement`` / ``reliability_predicted_std`` ({pred_rms, err_rms,
    count}), ``value_error_by_k`` (+ ``_p90``; a model with a value head, windows made with
    gamma), ``score_error_by_k`` (+ ``_p90``), ``score_spread_by_k``, ``score_rank_spearman_by_k``
    (a model that gives the planner's score: against the true k-step return plus the
    discounted true return-to-go; both on the ``value_ok`` windows, ``value_windows`` of them;
    the score decides the horizon of a model without rewards), ``suggested_horizon``,
    ``horizon_limited`` (true when it is H: never exceeded),
    ``mbpo_k_star``, ``windows``, ``horizon``, ``fraction``, ``gamma``, ``scale``, ``by_source``
    (the same per trajectory source). With several sources, ``suggested_horizon`` and
    ``mbpo_k_star`` are the smallest over the sources (each judged against its own return
    spread) and the pooled values are kept as ``..._pooled``. State keys are absent for a
    model that predicts no observation; NaN is written as null by :func:`to_json`.
    """
    if not 0.0 < fraction:
        raise ValueError(f"fraction = {fraction} must be > 0")
    pred = rollouts if rollouts is not None else predict_windows(predictor, windows)
    if scale is None:
        data = np.concatenate([windows.obs0, windows.true_obs.reshape(-1, windows.obs0.shape[1])])
        sd = data.std(axis=0)
        scale = np.where(sd > 1e-8 * (1.0 + np.abs(data).max(axis=0)), sd, 1.0)
    report = {"horizon": int(windows.horizon), "fraction": float(fraction), "gamma": float(gamma),
              "scale": np.asarray(scale, np.float64).tolist()}
    report.update(_core(windows, pred, scale, gamma, fraction, bins))
    sources = [s for s in dict.fromkeys(windows.source.tolist()) if s]
    if len(sources) > 1:
        by = {s: _core(windows.select(windows.source == s), pred.select(windows.source == s), scale, gamma,
                       fraction, bins) for s in sources}
        report["by_source"] = by
        # Conservative: the model must pass on every source (the controller's own trajectories
        # and random actions), each judged against its own spread of returns.
        for key in ("suggested_horizon", "mbpo_k_star"):
            values = [b[key] for b in by.values() if key in b]
            if key in report and values:
                report[f"{key}_pooled"] = report[key]
                report[key] = min(values)
        report["horizon_limited"] = report.get("suggested_horizon") == windows.horizon
    if "suggested_horizon" not in report:
        raise ModelError(f"no horizon can be suggested: the model predicts no reward and none of the "
                         f"{windows.n} windows has a fair value target (it needs controller episodes that "
                         f"run at least {windows.horizon} + log({VALUE_TAIL}) / log(gamma = {gamma:g}) steps)")
    return report


def to_json(report: dict[str, Any], **kwargs: Any) -> str:
    """``json.dumps`` with non-finite floats written as null (strict JSON)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(report), allow_nan=False, **kwargs)


def read_suggested_horizon(run_dir: str | os.PathLike) -> int | None:
    """``suggested_horizon`` from RUN_DIR/analysis.json (written by ``rtmpc analyze``), or None
    when the run has not been analysed. A tuner uses it as the upper bound of its horizon."""
    path = Path(run_dir) / ANALYSIS_FILE
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get("suggested_horizon")
    return None if value is None else int(value)


# -- plots --------------------------------------------------------------------------------
def plot_errors(report: dict[str, Any], path: str | os.PathLike, title: str = "",
                planner_horizon: int | None = None) -> Path:
    """Error against k: the state error and the return error with their baselines (the score
    error for a latent model), and that error in units of the tolerance ``fraction * spread``
    per source with the suggested and the planner's horizons; a PNG, atomically."""
    plt = pyplot()
    k = np.arange(1, report["horizon"] + 1)
    has_state = "state_error_by_k" in report
    panels = 3 if has_state else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4), dpi=100, squeeze=False)
    if has_state:
        ax = axes[0, 0]
        ax.plot(k, report["state_error_by_k"], "o-", label="model (mean)")
        ax.plot(k, report["state_error_p90_by_k"], "--", color="C0", label="model (p90)")
        ax.plot(k, report["state_error_last_state_by_k"], "s-", ms=3, label="last state")
        ax.plot(k, report["state_error_const_velocity_by_k"], "^-", ms=3, label="constant velocity")
        ax.plot(k, report["state_error_linear_by_k"], ":", color="gray", label="k x one-step error")
        if "disagreement_by_k" in report:
            ax.plot(k, report["disagreement_by_k"], "-", color="C4", alpha=0.7, label="disagreement")
        ax.set_yscale("log")
        ax.set_xlabel("k (model steps open-loop)")
        ax.set_ylabel("state error (RMS over dims, in data std)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    # The return (a reward model) or the planner's score (a latent model) against k.
    what = "return" if "return_error_by_k" in report else "score"
    ax = axes[0, -2]
    ax.plot(k, report[f"{what}_error_by_k"], "o-", label="model (mean)")
    ax.plot(k, report[f"{what}_error_p90_by_k"], "--", color="C0", label="model (p90)")
    if what == "return":
        ax.plot(k, report["return_error_last_state_by_k"], "s-", ms=3, label="last reward")
        ax.plot(k, report["return_error_const_velocity_by_k"], "^-", ms=3, label="linear reward")
    ax.plot(k, report["fraction"] * np.asarray(report[f"{what}_spread_by_k"]), "k:",
            label=f"{report['fraction']:g} x spread of the true {what}")
    ax.set_xlabel("k (model steps open-loop)")
    ax.set_ylabel(f"|predicted - true| k-step {what}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    # That error in units of the tolerance, per source: the horizon ends where a curve crosses 1.
    ax = axes[0, -1]
    curves = {"all": report, **report.get("by_source", {})}
    for name, r in curves.items():
        if f"{what}_error_by_k" not in r:
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.asarray(r[f"{what}_error_by_k"]) / (report["fraction"] * np.asarray(r[f"{what}_spread_by_k"]))
        hz = r.get("suggested_horizon_pooled", r.get("suggested_horizon"))
        n = r["windows"] if what == "return" else r["value_windows"]
        ax.plot(k, ratio, "o-" if name == "all" else ".-", ms=4, label=f"{name} ({n} windows): horizon {hz}")
    ax.axhline(1.0, color="k", ls=":", label="tolerance")
    ax.axvline(report["suggested_horizon"], color="C3", alpha=0.6,
               label=f"suggested horizon {report['suggested_horizon']}")
    if planner_horizon:
        ax.axvline(planner_horizon, color="gray", ls="--", alpha=0.6, label=f"planner horizon {planner_horizon}")
    ax.set_yscale("log")
    ax.set_xlabel("k (model steps open-loop)")
    ax.set_ylabel(f"{what} error / ({report['fraction']:g} x spread of true {what})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)


def plot_calibration(report: dict[str, Any], path: str | os.PathLike, title: str = "") -> Path | None:
    """Reliability curves (RMS true error against RMS predicted spread, per quantile bin) for
    the disagreement and the predicted std; a PNG, atomically. None without them."""
    curves = [(key, label) for key, label in (("reliability_disagreement", "ensemble disagreement"),
                                               ("reliability_predicted_std", "predicted std"))
              if report.get(key, {}).get("pred_rms")]
    if not curves:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=100)
    lo, hi = np.inf, 0.0
    for key, label in curves:
        x, y = np.asarray(report[key]["pred_rms"]), np.asarray(report[key]["err_rms"])
        ax.plot(x, y, "o-", label=label)
        pos = np.r_[x, y][np.r_[x, y] > 0]
        if pos.size:
            lo, hi = min(lo, pos.min()), max(hi, pos.max())
    if hi > 0:
        ax.plot([lo, hi], [lo, hi], "k:", label="calibrated")
        ax.set_xscale("log")
        ax.set_yscale("log")
    rho = report.get("disagreement_error_spearman", float("nan"))
    rho_k = report.get("disagreement_error_spearman_within_k", float("nan"))
    ax.set_title(f"{title}\nSpearman(disagreement, error) = {rho:.2f} pooled, {rho_k:.2f} within k", fontsize=9)
    ax.set_xlabel("predicted spread (RMS over dims, in data std)")
    ax.set_ylabel("true error (RMS, in data std)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)
