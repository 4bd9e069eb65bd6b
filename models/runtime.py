"""Load an exported model into ONNX Runtime and present it as a RolloutModel. No torch.

``load_model(path, threads=1)`` reads the metadata stored in the ONNX file, builds an
``InferenceSession`` with explicit thread counts (``intra_op_num_threads=threads``,
``inter_op_num_threads=1``, sequential execution, spinning off unless asked for) and
returns the model kind's RolloutModel: :class:`PETSRolloutModel` for ``kind = "pets"``.

PETS rollout (Chua et al. 2018, sec. 4.2; one ONNX call per model step)
-----------------------------------------------------------------------
Every candidate sequence k gets P particles (P a multiple of E, default P = E). The
K*P particles sit in a member-major layout ``[E, M, .]`` with ``M = K * P/E``: slot
``(e, k * P/E + i)`` is particle i of candidate k on member e, so each candidate has
exactly P/E particles on every member (stratified, not a random draw of members), and
the graph input ``obs [E, M, O]`` needs no reshuffle.

- ``TSinf``: a particle keeps its slot, hence its member, for the whole horizon.
- ``TS1``: before every step the particles of each candidate are randomly permuted
  among that candidate's P slots, so each particle meets a fresh member per step.
  Returns are kept per slot; a permutation inside one candidate leaves that candidate's
  sum unchanged, so the sum needs no permuting.
- ``expectation``: one state per candidate, ``[E, K, O]`` with the same state on every
  member; the next state is the mean of the members' predictions (no sampling,
  deterministic given the weights).

TS modes sample ``next = obs + mean + std * eps`` with ``eps`` drawn from the injected
numpy Generator into a preallocated buffer. The step reward is the predicted reward
mean (or ``reward_fn(obs, act, next_obs)`` when the task supplies one); returns are
``sum_t gamma^t r_t`` averaged over the candidate's particles. ``disagreement[k, t]``
is the standard deviation of candidate k's predicted next observations across its
particles (TS modes) or across members (expectation), averaged over the O dimensions,
in observation units. Non-finite predictions flow through to the returns.

Buffers are allocated for the largest K seen and reused (contiguous views of flat
arrays), inputs and outputs are bound once per K with ONNX Runtime's IOBinding, so a
step allocates only small temporaries (the disagreement reduction, ``gamma^t * r``).

Measured cost (2 shared cores, 1 ORT thread, E = 5, 4 x 200 SiLU hidden layers,
O = 5, A = 1, P = E so N = K rows per member, TSinf; medians, minima in brackets):

    K       one ORT call        H = 25 rollout (numpy included)   per step
    1       0.18 ms (0.17)      -                                  -
    400     7.7 ms (7.4)        242 ms (226)                       9.0 ms
    700     16.6 ms (13.4)      434 ms (417)                       16.7 ms
    1000    21.8 ms (21.0)      567 ms (552)                       22.1 ms

The fixed cost of a call, timed on a 1 x 8 hidden-unit model at K = 1, is 30-60 us
with IOBinding (45-80 us with ``session.run``): under 1% of a step at K >= 400, where
the matrix products dominate. One call per step is therefore fine; a fused H-step graph
would save about 1 ms of a 200+ ms rollout. TS1 and expectation cost the same (212 ms and
204 ms at K = 400). Note the absolute cost: with this default size a K = 400 rollout
takes ~0.2 s on one thread, so real-time control wants a smaller net, fewer samples or
more threads.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from models.base import ModelDims, ModelError, RolloutModel
from models.config import check_propagation

__all__ = ["load_model", "PETSRolloutModel", "session_options", "read_metadata", "RewardFn"]

log = logging.getLogger(__name__)

RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``reward_fn(obs (N, O), act (N, A), next_obs (N, O)) -> (N,)`` float rewards."""

_FORMAT = 1


def session_options(threads: int = 1, allow_spinning: bool = False) -> ort.SessionOptions:
    """Explicit ONNX Runtime options: ``threads`` intra-op threads, one inter-op thread,
    sequential execution, full graph optimisation, spinning off unless asked for."""
    if int(threads) < 1:
        raise ModelError(f"threads = {threads} must be >= 1")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def _open(path: str | os.PathLike, threads: int, allow_spinning: bool) -> ort.InferenceSession:
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file {p} not found: export one with models.export.export_onnx")
    try:
        return ort.InferenceSession(str(p), session_options(threads, allow_spinning),
                                    providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own exception types for a bad protobuf
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"model file {p} is damaged or not an ONNX model ({first[:200]}): "
                         f"export it again") from None


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX model file (a ModelError if it cannot be read)."""
    return dict(_open(path, 1, False).get_modelmeta().custom_metadata_map)


def load_model(path: str | os.PathLike, threads: int = 1, *, allow_spinning: bool = False,
               **options: Any) -> RolloutModel:
    """Load an rtmpc ``.onnx`` file as the RolloutModel of its kind.

    threads: ONNX Runtime intra-op threads (inter-op is always 1, execution sequential);
    allow_spinning: let idle ORT worker threads busy-wait (lower latency, burns a core);
    options: passed to the kind's model, e.g. for PETS ``propagation``, ``particles``,
    ``rng``, ``reward_fn``, ``gamma`` (see :class:`PETSRolloutModel`).
    A missing, damaged or foreign file is a ModelError with a one-line message.
    """
    sess = _open(path, threads, allow_spinning)
    meta = dict(sess.get_modelmeta().custom_metadata_map)
    kind = meta.get("kind")
    if kind is None:
        raise ModelError(f"model file {path} is an ONNX model but not an rtmpc model (no 'kind' in its "
                         f"metadata): export it with models.export")
    if kind not in _KINDS:
        raise ModelError(f"model file {path} holds a {kind!r} model; this runtime loads "
                         f"{', '.join(sorted(_KINDS))}")
    return _KINDS[kind](sess, meta, str(path), **options)


def _meta(meta: dict[str, str], key: str, parse: Callable[[str], Any], source: str) -> Any:
    if key not in meta:
        raise ModelError(f"model file {source} lacks metadata key {key!r}: export it again")
    try:
        return parse(meta[key])
    except (ValueError, TypeError) as err:
        raise ModelError(f"model file {source} has a bad {key!r} in its metadata ({err})") from None


class PETSRolloutModel(RolloutModel):
    """PETS ensemble rollouts over ONNX Runtime (see the module docstring for the layout).

    propagation: "TS1", "TSinf" or "expectation" (default: the file's); particles: P per
    candidate, a multiple of the members (default: the file's; ignored by expectation);
    rng: numpy Generator, seed or None for the TS noise and TS1 permutations;
    reward_fn: replaces the learned reward (required when the file has none);
    gamma: discount per step (default: the file's).
    Not thread-safe: one caller at a time.
    """

    def __init__(self, session: ort.InferenceSession, meta: dict[str, str], source: str, *,
                 propagation: str | None = None, particles: int | None = None,
                 rng: np.random.Generator | int | None = None, reward_fn: RewardFn | None = None,
                 gamma: float | None = None) -> None:
        fmt = _meta(meta, "format", int, source)
        if fmt != _FORMAT:
            raise ModelError(f"model file {source} has format {fmt}; this runtime reads format {_FORMAT}")
        o = _meta(meta, "obs_dim", int, source)
        a = _meta(meta, "act_dim", int, source)
        e = _meta(meta, "members", int, source)
        low = np.asarray(_meta(meta, "action_low", json.loads, source), np.float32).reshape(-1)
        high = np.asarray(_meta(meta, "action_high", json.loads, source), np.float32).reshape(-1)
        learned_reward = bool(_meta(meta, "learned_reward", json.loads, source))
        gamma = _meta(meta, "gamma", float, source) if gamma is None else float(gamma)
        if min(o, a, e) < 1 or low.shape != (a,) or high.shape != (a,) or not 0.0 < gamma <= 1.0:
            raise ModelError(f"model file {source} has inconsistent metadata: obs_dim {o}, act_dim {a}, "
                             f"members {e}, action bounds {low.tolist()} / {high.tolist()}, gamma {gamma}")
        self.propagation = check_propagation(propagation or meta.get("propagation", "TSinf"))
        p = _meta(meta, "particles", int, source) if particles is None else int(particles)
        if self.propagation == "expectation":
            p = 1
        elif p < 1 or p % e:
            raise ModelError(f"particles = {p} must be a positive multiple of the {e} ensemble members")
        if reward_fn is None and not learned_reward:
            raise ModelError(f"model file {source} predicts no reward: pass reward_fn=(obs, act, next_obs) "
                             f"-> rewards")
        self._check_graph(session, source, o, a, e, learned_reward)

        self.dims = ModelDims(obs_dim=o, act_dim=a, action_low=low, action_high=high, latent_dim=0,
                              gamma=gamma, kind="pets", meta=meta)
        self.members, self.particles = e, p
        self.source = source
        self._sess = session
        self._rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._reward_fn = reward_fn
        self._outputs = ["delta_mean", "delta_std"] + (["reward_mean"] if learned_reward else [])
        self._cap = 0  # K the backing arrays hold
        self._k = self._h = -1  # K, H the current views and bindings are for
        self._b_dis = np.empty(0, np.float32)
        self._disagreement: np.ndarray | None = None
        log.debug("loaded %r", self)

    @staticmethod
    def _check_graph(sess: ort.InferenceSession, source: str, o: int, a: int, e: int,
                     learned_reward: bool) -> None:
        ins = {i.name: i.shape for i in sess.get_inputs()}
        outs = {i.name: i.shape for i in sess.get_outputs()}
        want_out = {"delta_mean", "delta_std"} | ({"reward_mean"} if learned_reward else set())
        ok = (set(ins) == {"obs", "act"} and want_out <= set(outs)
              and len(ins["obs"]) == 3 and ins["obs"][0] == e and ins["obs"][2] == o
              and len(ins["act"]) == 3 and ins["act"][0] == e and ins["act"][2] == a)
        if not ok:
            raise ModelError(f"model file {source}: graph inputs {ins} / outputs {sorted(outs)} do not match "
                             f"its metadata (obs [{e}, N, {o}], act [{e}, N, {a}]): export it again")

    # -- buffers ----------------------------------------------------------------------
    def _rows(self, k: int) -> int:
        """M: rows per member for K candidates."""
        return k if self.propagation == "expectation" else k * self.particles // self.members

    def _ensure(self, k: int, h: int) -> None:
        """Views and IOBinding for K candidates and H steps; the backing arrays are
        reallocated only when K (or K * H for the disagreement) grows."""
        if k == self._k and h == self._h:
            return
        e, o, a = self.members, self.dims.obs_dim, self.dims.act_dim
        if k > self._cap:
            mc = self._rows(k)
            f32 = lambda n: np.empty(n, np.float32)  # noqa: E731
            self._b_state, self._b_in, self._b_dm, self._b_ds, self._b_eps = (
                f32(e * mc * o) for _ in range(5))
            self._b_act = f32(e * mc * a)
            self._b_rm, self._b_r = f32(e * mc), f32(e * mc)
            self._b_ret = np.empty(e * mc, np.float64)
            self._b_returns = np.empty(k, np.float64)
            self._b_gather = np.empty(e * mc, np.int64)
            self._cap = k
        if k * h > self._b_dis.size:
            self._b_dis = np.empty(k * h, np.float32)
        m = self._rows(k)
        view = lambda b, *shape: b[: int(np.prod(shape))].reshape(shape)  # noqa: E731
        self._state, self._in, self._dm = view(self._b_state, e, m, o), view(self._b_in, e, m, o), \
            view(self._b_dm, e, m, o)
        self._ds, self._eps = view(self._b_ds, e, m, o), view(self._b_eps, e, m, o)
        self._act = view(self._b_act, e, m, a)
        self._rm, self._r, self._ret = view(self._b_rm, e, m), view(self._b_r, e, m), view(self._b_ret, e, m)
        self._returns = self._b_returns[:k]
        self._disagreement = view(self._b_dis, k, h)
        if self.propagation == "TS1":
            # slots[k, j]: flat slot of particle j of candidate k (j = e * P/E + i).
            pe = self.particles // e
            grid = np.arange(e)[:, None, None] * m + np.arange(k)[None, :, None] * pe + np.arange(pe)
            self._slots = np.ascontiguousarray(grid.transpose(1, 0, 2).reshape(-1))
            self._perm = self._slots.reshape(k, self.particles).copy()
            self._gather = self._b_gather[: e * m]
        io = self._sess.io_binding()
        for name, arr in (("obs", self._in), ("act", self._act)):
            io.bind_input(name, "cpu", 0, np.float32, arr.shape, arr.ctypes.data)
        for name, arr in (("delta_mean", self._dm), ("delta_std", self._ds), ("reward_mean", self._rm)):
            if name in self._outputs:
                io.bind_output(name, "cpu", 0, np.float32, arr.shape, arr.ctypes.data)
        self._io = io
        self._k, self._h = k, h

    # -- the seam ---------------------------------------------------------------------
    @property
    def disagreement(self) -> np.ndarray | None:
        return self._disagreement

    def rollout(self, obs0: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """obs0 (O,), actions (K, H, A) -> discounted predicted returns (K,) float64.

        The returns and :attr:`disagreement` (K, H) float32 are model-owned and overwritten
        by the next call. Pass float32 C-ordered actions to avoid a conversion copy.
        """
        obs = self.check_obs(obs0)
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 3 or actions.shape[2] != self.dims.act_dim or actions.shape[0] < 1 \
                or actions.shape[1] < 1:
            raise ModelError(f"actions have shape {actions.shape}; expected (K, H, {self.dims.act_dim}) "
                             f"with K, H >= 1")
        k, h, _ = actions.shape
        self._ensure(k, h)
        if self.propagation == "expectation":
            self._rollout_expectation(obs, actions)
        else:
            self._rollout_ts(obs, actions)
        return self._returns

    def _task_reward(self, obs: np.ndarray, act: np.ndarray, next_obs: np.ndarray, out: np.ndarray) -> None:
        """out (n,) = reward_fn(obs (n, O), act (n, A), next_obs (n, O))."""
        r = np.asarray(self._reward_fn(obs, act, next_obs))
        if r.shape != out.shape:
            raise ModelError(f"reward_fn returned shape {r.shape}; expected {out.shape}")
        out[...] = r

    def _rollout_ts(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        e, o, a = self.members, self.dims.obs_dim, self.dims.act_dim
        k, h, _ = actions.shape
        pe = self.particles // e
        state4 = self._state.reshape(e, k, pe, o)
        act4 = self._act.reshape(e, k, pe, a)
        state_flat, in_flat = self._state.reshape(-1, o), self._in.reshape(-1, o)
        ts1 = self.propagation == "TS1"
        self._state[...] = obs
        self._ret.fill(0.0)
        discount = 1.0
        for t in range(h):
            # Inputs: this step's actions on every particle; TS1 reshuffles members.
            np.copyto(act4, actions[None, :, t, None, :])
            if ts1:
                self._rng.permuted(self._perm, axis=1, out=self._perm)
                self._gather[self._slots] = self._perm.reshape(-1)
                np.take(state_flat, self._gather, axis=0, out=in_flat)
            else:
                np.copyto(self._in, self._state)
            self._sess.run_with_iobinding(self._io)
            # Sample next states: obs + mean + std * eps.
            self._rng.standard_normal(dtype=np.float32, out=self._eps)
            np.multiply(self._eps, self._ds, out=self._eps)
            np.add(self._in, self._dm, out=self._state)
            self._state += self._eps
            # Rewards and spread.
            if self._reward_fn is None:
                r = self._rm
            else:
                r = self._r
                self._task_reward(in_flat, self._act.reshape(-1, a), state_flat, r.reshape(-1))
            self._ret += discount * r
            discount *= self.dims.gamma
            self._disagreement[:, t] = state4.std(axis=(0, 2)).mean(axis=1)
        np.mean(self._ret.reshape(e, k, pe), axis=(0, 2), out=self._returns)
        return self._returns

    def _rollout_expectation(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        h = actions.shape[1]
        state = self._state[0]  # (K, O): one state per candidate
        state[...] = obs
        self._ret.fill(0.0)
        discount = 1.0
        for t in range(h):
            np.copyto(self._act, actions[None, :, t, :])
            np.copyto(self._in, state[None])
            self._sess.run_with_iobinding(self._io)
            # Next state: the mean of the members' predictions (no sampling).
            np.mean(self._dm, axis=0, out=self._eps[0])
            np.add(state, self._eps[0], out=state)
            if self._reward_fn is None:
                r = np.mean(self._rm, axis=0, out=self._r[0])
            else:
                r = self._r[0]
                self._task_reward(self._in[0], self._act[0], state, r)
            self._ret[0] += discount * r
            discount *= self.dims.gamma
            self._disagreement[:, t] = self._dm.std(axis=0).mean(axis=1)
        self._returns[...] = self._ret[0]
        return self._returns

    def __repr__(self) -> str:
        d = self.dims
        return (f"PETSRolloutModel({self.source}: obs {d.obs_dim}, act {d.act_dim}, {self.members} members, "
                f"{self.propagation}, {self.particles} particles, gamma {d.gamma})")


# Model kinds this runtime loads: kind (ONNX metadata "kind") -> RolloutModel class built
# as cls(session, metadata, source, **options).
_KINDS: dict[str, Callable[..., RolloutModel]] = {"pets": PETSRolloutModel}
