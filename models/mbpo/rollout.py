"""MBPO's branched rollouts through the exported ONNX ensemble, and the model buffer. No torch.

The ensemble file is PETS's (:func:`rtmpc.models.common.ensemble_export.export_onnx`, ``kind = "pets"``,
graph ``obs [E, N, O], act [E, N, A] -> delta_mean, delta_std [E, N, O], reward_mean,
reward_std [E, N]``) holding MBPO's elites only, opened by :func:`rtmpc.models.runtime.open_session`
as every planner's model is. :class:`EnsembleStep` predicts one step for N rows, each row on
one member drawn afresh at every step (TS1, Chua et al. 2018 sec. 4.2): a fresh random
permutation deals the rows out to the E members in equal shares (stratified, as the PETS
runtime's TS1; the last member's share is padded), so each ONNX call evaluates ceil(N / E)
rows per member instead of all N on every member. The next state and the reward are drawn
from the member's Gaussian (MBPO samples both: ``mean + std * eps``).

:func:`branched_rollouts` (Janner et al. 2019, Alg. 2, lines 7-9): from N states drawn from the
real buffer, k steps of ``policy(obs) -> action`` and the model; every model transition goes
into the :class:`ModelBuffer`, a FIFO ring whose capacity is the retention window. With a
termination (the learned head's file, :class:`TerminationStep`, or a task's known function,
:mod:`.known_termination`) a transition called terminal is stored with ``done = 1`` and its
rollout stops there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np
from rtmpc.models.base import ModelError, meta_size

__all__ = ["EnsembleStep", "TerminationStep", "ModelBuffer", "branched_rollouts", "termination_feeds"]


class EnsembleStep:
    """One TS1 step of an exported PETS ensemble: ``step(obs (N, O), act (N, A)) -> next_obs (N, O),
    reward (N,)``, float32, fresh arrays. ``session``: an ONNX Runtime session of the file (its
    thread count is the caller's); ``rng``: the generator of member draws and Gaussian noise."""

    def __init__(self, session, rng: np.random.Generator, source: str = "ensemble"):
        meta = dict(session.get_modelmeta().custom_metadata_map)
        if meta.get("kind") != "pets" or meta.get("learned_reward") != "true":
            raise ModelError(f"{source} is not a PETS ensemble with a learned reward (kind {meta.get('kind')!r}): "
                             f"export the run's ensemble again")
        self.members = meta_size(meta, "members", source)
        self.obs_dim, self.act_dim = meta_size(meta, "obs_dim", source), meta_size(meta, "act_dim", source)
        self.session, self.rng = session, rng
        self._names = ["delta_mean", "delta_std", "reward_mean", "reward_std"]
        self.transitions = 0  # rows predicted so far
        self.seconds = 0.0  # inside step()
        self.low = np.asarray(json.loads(meta["action_low"]), np.float32)
        self.high = np.asarray(json.loads(meta["action_high"]), np.float32)

    def step(self, obs: np.ndarray, act: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        n, e = obs.shape[0], self.members
        m = -(-n // e)
        order = self.rng.permutation(n)
        slots = np.concatenate([order, order[: e * m - n]])  # pad the last share with repeated rows
        x = np.ascontiguousarray(obs[slots].reshape(e, m, self.obs_dim), np.float32)
        a = np.ascontiguousarray(act[slots].reshape(e, m, self.act_dim), np.float32)
        dm, ds, rm, rs = self.session.run(self._names, {"obs": x, "act": a})
        noise = self.rng.standard_normal((e, m, self.obs_dim + 1), dtype=np.float32)
        delta = (dm + ds * noise[..., :-1]).reshape(e * m, self.obs_dim)[:n]
        reward = (rm + rs * noise[..., -1]).reshape(e * m)[:n]
        next_obs = np.empty_like(obs, dtype=np.float32)
        next_obs[order] = obs[order] + delta
        rew = np.empty(n, np.float32)
        rew[order] = reward
        self.transitions += n
        self.seconds += time.perf_counter() - t0
        return next_obs, rew


def termination_feeds(session, obs: np.ndarray, act: np.ndarray, next_obs: np.ndarray) -> dict[str, np.ndarray]:
    """The inputs a termination file's graph has (a head on s' alone has no obs or act input)."""
    have = {i.name for i in session.get_inputs()}
    feeds = {"obs": obs, "act": act, "next_obs": next_obs}
    return {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items() if k in have}


class TerminationStep:
    """The exported termination head (:mod:`.termination`): ``done(obs (N, O), act (N, A), next_obs
    (N, O)) -> (N,) bool``, true where its P(done) > ``threshold``. ``session``: its ONNX Runtime
    session."""

    def __init__(self, session, threshold: float, source: str = "termination"):
        meta = dict(session.get_modelmeta().custom_metadata_map)
        if meta.get("role") != "termination":
            raise ModelError(f"{source} is not an MBPO termination head (metadata role {meta.get('role')!r}): "
                             f"export the run's head again")
        self.session, self.source = session, source
        self.obs_dim, self.act_dim = meta_size(meta, "obs_dim", source), meta_size(meta, "act_dim", source)
        self.logit_cut = float(np.log(threshold / (1.0 - threshold)))
        self.calls = self.ended = 0  # rows asked about, rows predicted terminal

    def done(self, obs: np.ndarray, act: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        logit = self.session.run(["logit"], termination_feeds(self.session, obs, act, next_obs))[0]
        out = logit > self.logit_cut
        self.calls += len(out)
        self.ended += int(out.sum())
        return out


class ModelBuffer:
    """Model transitions in a FIFO ring of ``capacity`` rows: (obs, act, reward, next_obs, done)."""

    def __init__(self, obs_dim: int, act_dim: int, capacity: int):
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self._alloc(max(1, int(capacity)))

    def _alloc(self, capacity: int) -> None:
        self.obs = np.zeros((capacity, self.obs_dim), np.float32)
        self.act = np.zeros((capacity, self.act_dim), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.next_obs = np.zeros((capacity, self.obs_dim), np.float32)
        self.done = np.zeros(capacity, np.float32)
        self.size, self.head = 0, 0

    @property
    def capacity(self) -> int:
        return self.obs.shape[0]

    def __len__(self) -> int:
        return self.size

    def _ordered(self) -> tuple[np.ndarray, ...]:
        """The stored rows oldest first."""
        idx = (np.arange(self.size) + (self.head - self.size)) % self.capacity
        return tuple(x[idx] for x in (self.obs, self.act, self.reward, self.next_obs, self.done))

    def resize(self, capacity: int) -> None:
        """A new capacity keeping the newest rows (MBPO reallocates its pool when k changes)."""
        capacity = max(1, int(capacity))
        if capacity == self.capacity:
            return
        rows = self._ordered()
        self._alloc(capacity)
        self.add(*(x[-capacity:] for x in rows))

    def add(self, obs, act, reward, next_obs, done) -> None:
        n = len(obs)
        if n > self.capacity:  # only the newest fit
            obs, act, reward, next_obs, done = (x[-self.capacity:] for x in (obs, act, reward, next_obs, done))
            n = self.capacity
        idx = (self.head + np.arange(n)) % self.capacity
        self.obs[idx], self.act[idx], self.reward[idx] = obs, act, reward
        self.next_obs[idx], self.done[idx] = next_obs, done
        self.head = int((self.head + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        idx = rng.integers(0, self.size, n)
        return self.obs[idx], self.act[idx], self.reward[idx], self.next_obs[idx], self.done[idx]

    def state_dict(self) -> dict[str, np.ndarray]:
        obs, act, reward, next_obs, done = self._ordered()
        return {"obs": obs, "act": act, "reward": reward, "next_obs": next_obs, "done": done,
                "capacity": np.asarray(self.capacity)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self._alloc(int(state["capacity"]))
        if len(state["obs"]):
            self.add(state["obs"], state["act"], state["reward"], state["next_obs"], state["done"])


def branched_rollouts(step: EnsembleStep, policy: Callable[[np.ndarray], np.ndarray], starts: np.ndarray, k: int,
                      out: ModelBuffer, terminal: TerminationStep | None = None) -> dict[str, float]:
    """k model steps from each of the N states ``starts`` (N, O) under ``policy(obs (N, O)) ->
    act (N, A)``; the transitions go into ``out``. Without ``terminal`` nothing ends (``done`` 0,
    N * k transitions); with it (anything with ``done(obs, act, next_obs) -> (N,) bool``: a
    TerminationStep or a KnownTermination), a transition it calls terminal is stored with ``done`` 1 and its
    row stops. A row whose prediction is not finite is dropped from there on. Returns rollouts,
    transitions, terminal (transitions stored with done 1), seconds."""
    t0 = time.perf_counter()
    obs = np.asarray(starts, np.float32)
    made = ended = 0
    for _ in range(k):
        act = np.asarray(policy(obs), np.float32)
        next_obs, reward = step.step(obs, act)
        ok = np.isfinite(next_obs).all(axis=1) & np.isfinite(reward)
        if not ok.all():
            obs, act, next_obs, reward = obs[ok], act[ok], next_obs[ok], reward[ok]
        done = np.zeros(len(obs), bool) if terminal is None or not len(obs) else terminal.done(obs, act, next_obs)
        out.add(obs, act, reward, next_obs, done.astype(np.float32))
        made += len(obs)
        ended += int(done.sum())
        obs = next_obs[~done] if done.any() else next_obs
        if not len(obs):
            break
    return {"rollouts": int(len(starts)), "transitions": made, "terminal": ended,
            "seconds": time.perf_counter() - t0}
