"""An exported PETS ensemble in ONNX Runtime as a RolloutModel. No torch.

``rtmpc.models.runtime.load_model(path, threads=1)`` opens the session (explicit thread
counts, this family's ``DISABLED_OPTIMIZERS`` off) and builds :class:`PETSRolloutModel`
for a file whose metadata says ``kind = "pets"``.

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

Lanes (``threads`` > 1, ``parallel="lanes"``, the default): the K candidates are split
into ``threads`` contiguous lanes; each lane rolls its candidates out for the whole
horizon on its own thread (the caller's and ``threads - 1`` pool workers), with its own
buffers, IOBinding and random generator (spawned from the injected one, so runs are
reproducible for a given seed, thread count and K) and single-threaded ONNX Runtime
calls on one shared session. Particles never interact across candidates, so lanes meet
once per rollout, not once per operator as ONNX Runtime's intra-op pool does
(``parallel="intra"``, one lane, the pool inside every call; spinning optional).
Measured on 2 cores (docs/planner_benchmark.md, rounds in shuffled order): lanes take
14-35% less time per plan than the pool at K = 256 ... 4000, e.g. MPPI K = 1000, H = 15:
lanes 81 ms, intra 113 ms, intra with spinning 107 ms. Below ``min_lane`` rows per member
per lane (two lanes need K * P / E >= 64 with the default 32), the first lane runs alone,
single-threaded: at a few rows per member a call is mostly per-operator work, and waking
ONNX Runtime's pool for each operator cost more than it saved (MPPI K = 4, H = 3, 2 threads:
1.31 ms per plan on the pool, 0.33 ms single-threaded; docs/planner_benchmark.md).

Per rollout a lane draws the whole horizon's standard normals in one call of its Generator
(the same stream as one draw per step); per step it runs a Numba kernel (nogil) that fills
the actions, ONNX Runtime on the bound buffers, and one Numba pass that samples the next
states in place, accumulates the reward and measures the disagreement. Buffers are
allocated for the largest K (and K x H for the noise) seen and reused; nothing is allocated
per step. :meth:`PETSRolloutModel.timeline` says where the calling thread's time went.

The graph is models/export.py's "members" layout (per-member 2-D Gemm with the bias
inside, normalisers folded into the weights, a softplus-free head on the transposed
output). ONNX Runtime's transpose optimizer is switched off for PETS sessions: it moves
the head's transposes so that its per-member constants broadcast over the short last
axis again, ONNX Runtime's slow broadcast path (150 us instead of 10 us per op).

Measured cost of one call, 1 thread, E = 5, 3 x 200 SiLU, O = 5, A = 1 (quiet machine,
best of 5 batches): 9.5 us per row of all five members at M = 128 ... 1000 rows per
member (88 GFLOP/s, ~73% of the best fp32 GEMM rate for these shapes). Of a call's
kernel time: Gemm 79-82%, SiLU (ONNX Runtime's fused QuickGelu) 14%, the rest 4-7%;
unfusing SiLU into Sigmoid and Mul was measured slower (75 GFLOP/s). Per step outside
the call at M = 500: normals 157 us, propagation kernel 89 us, actions 16 us (~6% of
the call). The old batched ``[E, N, .]`` graph spent 30-40% of a call outside the
GEMMs (broadcast Add 15%, Softplus 8%, Sub/Div/Mul 8%).
"""

from __future__ import annotations

import json
import logging
import math
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
from numba import njit
from rtmpc.models.base import ModelDims, ModelError, RolloutModel, meta_size, meta_value
from rtmpc.models.common.ensemble_config import check_propagation
from rtmpc.models.runtime import open_onnx

from . import DISABLED_OPTIMIZERS

__all__ = ["PETSRolloutModel", "RewardFn"]

log = logging.getLogger(__name__)

RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``reward_fn(obs (N, O), act (N, A), next_obs (N, O)) -> (N,)`` float rewards."""

_FORMAT = 1


# -- step kernels (Numba, nogil: lanes run them in parallel) ------------------------------
# Shapes: E members, M rows per member (M = Kl * pe for Kl candidates with pe particles
# per member each; pe = 1 in expectation), O observation and A action entries.
@njit(nogil=True, cache=True)
def _fill_actions(actions, t, k0, pe, act):
    """act (E, M, A) <- actions[k0 + k, t] (K, H, A) on every row of candidate k."""
    n_mem, m_rows, n_act = act.shape
    for e in range(n_mem):
        for m in range(m_rows):
            k = k0 + m // pe
            for a in range(n_act):
                act[e, m, a] = actions[k, t, a]


@njit(nogil=True, cache=True)
def _ts_step(x, dm, ds, eps, pe, nxt, dis, t, acc, rm, discount, ret):
    """One TS step after the model call, one candidate at a time (rows contiguous):
    nxt = x + dm + ds * eps over (E, M, O) (nxt may be x); dis[k, t] (Kl, H) = the spread
    of candidate k's E * pe particles (std, ddof 0, per entry, averaged over O); and, when
    rm (E, M) is given (a learned reward; else an empty array), ret[k] += discount * the
    mean of rm over candidate k's rows. acc (2, O) float64 is work space."""
    n_mem, m_rows, n_obs = x.shape
    n = n_mem * pe
    learned = rm.shape[0] > 0
    for k in range(m_rows // pe):
        for o in range(n_obs):
            acc[0, o] = 0.0
            acc[1, o] = 0.0
        r = 0.0
        for e in range(n_mem):
            for m in range(k * pe, (k + 1) * pe):
                for o in range(n_obs):
                    v = (x[e, m, o] + dm[e, m, o]) + ds[e, m, o] * eps[e, m, o]
                    nxt[e, m, o] = v
                    acc[0, o] += v
                if learned:
                    r += rm[e, m]
        for e in range(n_mem):
            for m in range(k * pe, (k + 1) * pe):
                for o in range(n_obs):
                    d = nxt[e, m, o] - acc[0, o] / n
                    acc[1, o] += d * d
        total = 0.0
        for o in range(n_obs):
            total += math.sqrt(acc[1, o] / n)
        dis[k, t] = total / n_obs
        if learned:
            ret[k] += discount * (r / n)


@njit(nogil=True, cache=True)
def _accumulate(r, pe, discount, ret):
    """ret[k] += discount * the mean of r (E, M) over candidate k's rows (E * pe of them)."""
    n_mem, m_rows = r.shape
    n = n_mem * pe
    for k in range(m_rows // pe):
        s = 0.0
        for e in range(n_mem):
            for i in range(pe):
                s += r[e, k * pe + i]
        ret[k] += discount * (s / n)


@njit(nogil=True, cache=True)
def _gather_rows(src, index, dst):
    """dst[j] = src[index[j]] over rows of (N, O) arrays (the TS1 member reshuffle)."""
    for j in range(dst.shape[0]):
        s = index[j]
        for o in range(dst.shape[1]):
            dst[j, o] = src[s, o]


@njit(nogil=True, cache=True)
def _expectation_propagate(x0, dm, nxt, dis, t):
    """nxt (K, O) = x0 + the member mean of dm (E, K, O); dis[k, t] = the members' spread
    of dm (std, ddof 0) averaged over O."""
    n_mem, kl, n_obs = dm.shape
    for k in range(kl):
        total = 0.0
        for o in range(n_obs):
            s = 0.0
            for e in range(n_mem):
                s += dm[e, k, o]
            mu = s / n_mem
            q = 0.0
            for e in range(n_mem):
                d = dm[e, k, o] - mu
                q += d * d
            total += math.sqrt(q / n_mem)
            nxt[k, o] = x0[k, o] + mu
        dis[k, t] = total / n_obs


@njit(nogil=True, cache=True)
def _broadcast_members(state, x):
    """x[e] = state (K, O) for every member e of x (E, K, O)."""
    for e in range(x.shape[0]):
        for k in range(x.shape[1]):
            for o in range(x.shape[2]):
                x[e, k, o] = state[k, o]


class _Lane:
    """One share of a rollout: candidates [k0, k0 + Kl), with buffers, an IOBinding and a
    random generator of its own, so that lanes run in parallel without touching each
    other's memory. Buffers grow to the largest Kl seen and are reused (flat arrays,
    contiguous views)."""

    def __init__(self, sess: ort.InferenceSession, members: int, obs_dim: int, act_dim: int, pe: int,
                 outputs: list[str], rng: np.random.Generator) -> None:
        self.sess, self.e, self.o, self.a, self.pe = sess, members, obs_dim, act_dim, pe
        self.outputs, self.rng = outputs, rng
        self.acc = np.empty((2, obs_dim), np.float64)  # _ts_step's work space
        self._b_noise = np.empty(0, np.float32)  # the horizon's standard normals, (H, E, M, O)
        self._no_reward = np.empty((0, 0), np.float32)  # _ts_step's "no learned reward"
        self.cap = 0
        self.kl = -1
        self.eval_seconds = 0.0  # in ONNX Runtime calls
        self.noise_seconds = 0.0  # drawing the standard normals
        self.lane_seconds = 0.0  # in rollout_ts / rollout_expectation, all of it
        self.evaluations = 0  # model evaluations (rows through one member) run, all calls
        self._rows = 0  # rows of one call, E * M

    def ensure(self, kl: int, ts1: bool, particles: int) -> None:
        """Views and IOBinding for Kl candidates (rebuilt only when Kl changes)."""
        if kl == self.kl:
            return
        e, o, a, pe = self.e, self.o, self.a, self.pe
        if kl > self.cap:
            n = e * kl * pe
            self._b = {name: np.empty(n * width, np.float32)
                       for name, width in (("x", o), ("state", o), ("dm", o), ("ds", o),
                                           ("act", a), ("rm", 1), ("r", 1))}
            self._b_gather = np.empty(n, np.int64)
            self.ret_buf = np.empty(kl, np.float64)
            self.cap = kl
        m = kl * pe
        view = lambda name, *shape: self._b[name][: int(np.prod(shape))].reshape(shape)  # noqa: E731
        self.x, self.state, self.dm, self.ds = (view(nm, e, m, o) for nm in ("x", "state", "dm", "ds"))
        self.act = view("act", e, m, a)
        self.rm, self.r = view("rm", e, m), view("r", e, m)
        self.ret = self.ret_buf[:kl]
        if ts1:
            # slots[k, j]: flat row of particle j of candidate k (j = member * pe + i).
            grid = np.arange(e)[:, None, None] * m + np.arange(kl)[None, :, None] * pe + np.arange(pe)
            self.slots = np.ascontiguousarray(grid.transpose(1, 0, 2).reshape(-1))
            self.perm = self.slots.reshape(kl, particles).copy()
            self.gather = self._b_gather[: e * m]
        io = self.sess.io_binding()
        for name, arr in (("obs", self.x), ("act", self.act)):
            io.bind_input(name, "cpu", 0, np.float32, arr.shape, arr.ctypes.data)
        for name, arr in (("delta_mean", self.dm), ("delta_std", self.ds), ("reward_mean", self.rm)):
            if name in self.outputs:
                io.bind_output(name, "cpu", 0, np.float32, arr.shape, arr.ctypes.data)
        self.io = io
        self.kl = kl
        self._rows = e * m

    def _eval(self) -> None:
        t0 = time.perf_counter()
        self.sess.run_with_iobinding(self.io)
        self.eval_seconds += time.perf_counter() - t0
        self.evaluations += self._rows

    def noise(self, h: int) -> np.ndarray:
        """(H, E, M, O) standard normals for the whole horizon, drawn in one call (the same
        stream, in the same order, as one draw per step)."""
        shape = (h,) + self.x.shape
        size = int(np.prod(shape))
        if size > self._b_noise.size:
            self._b_noise = np.empty(size, np.float32)
        eps = self._b_noise[:size].reshape(shape)
        t0 = time.perf_counter()
        self.rng.standard_normal(dtype=np.float32, out=eps)
        self.noise_seconds += time.perf_counter() - t0
        return eps

    def rollout_ts(self, obs: np.ndarray, actions: np.ndarray, k0: int, ts1: bool, gamma: float,
                   reward_fn: Callable | None, returns: np.ndarray, dis: np.ndarray) -> None:
        """TS1 / TSinf over candidates [k0, k0 + Kl): returns (Kl,), dis (Kl, H) written."""
        t_start = time.perf_counter()
        x, act, pe, o, a = self.x, self.act, self.pe, self.o, self.a
        # Where the next state goes: in place into the ONNX input, unless it must be kept
        # apart (TS1 reshuffles it into the input; a task reward reads obs and next obs).
        nxt = self.state if ts1 or reward_fn is not None else x
        rm = self.rm if reward_fn is None else self._no_reward
        x[...] = obs
        nxt[...] = obs
        self.ret.fill(0.0)
        eps = self.noise(actions.shape[1])
        discount = 1.0
        for t in range(actions.shape[1]):
            _fill_actions(actions, t, k0, pe, act)
            if ts1:
                self.rng.permuted(self.perm, axis=1, out=self.perm)
                self.gather[self.slots] = self.perm.reshape(-1)
                _gather_rows(nxt.reshape(-1, o), self.gather, x.reshape(-1, o))
            elif nxt is not x:
                np.copyto(x, nxt)
            self._eval()
            _ts_step(x, self.dm, self.ds, eps[t], pe, nxt, dis, t, self.acc, rm, discount, self.ret)
            if reward_fn is not None:
                _task_reward(reward_fn, x.reshape(-1, o), act.reshape(-1, a), nxt.reshape(-1, o), self.r.reshape(-1))
                _accumulate(self.r, pe, discount, self.ret)
            discount *= gamma
        returns[...] = self.ret
        self.lane_seconds += time.perf_counter() - t_start

    def rollout_expectation(self, obs: np.ndarray, actions: np.ndarray, k0: int, gamma: float,
                            reward_fn: Callable | None, returns: np.ndarray, dis: np.ndarray) -> None:
        """Expectation over candidates [k0, k0 + Kl): one state per candidate, (Kl, O)."""
        t_start = time.perf_counter()
        x, act = self.x, self.act
        state = self.state[0]
        x[...] = obs
        self.ret.fill(0.0)
        discount = 1.0
        for t in range(actions.shape[1]):
            _fill_actions(actions, t, k0, 1, act)
            self._eval()
            _expectation_propagate(x[0], self.dm, state, dis, t)
            if reward_fn is None:
                r = self.rm
            else:
                r = self.r[:1]
                _task_reward(reward_fn, x[0], act[0], state, r.reshape(-1))
            _accumulate(r, 1, discount, self.ret)
            discount *= gamma
            _broadcast_members(state, x)
        returns[...] = self.ret
        self.lane_seconds += time.perf_counter() - t_start


def _task_reward(reward_fn: Callable, obs: np.ndarray, act: np.ndarray, next_obs: np.ndarray,
                 out: np.ndarray) -> None:
    """out (n,) = reward_fn(obs (n, O), act (n, A), next_obs (n, O))."""
    r = np.asarray(reward_fn(obs, act, next_obs))
    if r.shape != out.shape:
        raise ModelError(f"reward_fn returned shape {r.shape}; expected {out.shape}")
    out[...] = r


def _spawn(rng: np.random.Generator, n: int) -> list[np.random.Generator]:
    """n independent generators derived from rng (deterministic given rng's seed)."""
    try:
        return list(rng.spawn(n))
    except (TypeError, ValueError, AttributeError):  # a bit generator without a seed sequence
        return [np.random.default_rng(int(s)) for s in rng.integers(0, 2**63 - 1, n)]


class PETSRolloutModel(RolloutModel):
    """PETS ensemble rollouts over ONNX Runtime (see the module docstring for the layout).

    propagation: "TS1", "TSinf" or "expectation" (default: the file's); particles: P per
    candidate, a multiple of the members (default: the file's; ignored by expectation);
    rng: numpy Generator, seed or None for the TS noise and TS1 permutations;
    reward_fn: replaces the learned reward (required when the file has none);
    gamma: discount per step (default: the file's);
    parallel: how ``threads`` > 1 are used: "lanes" (default: the candidates are split
    into ``threads`` lanes, each rolled out for the whole horizon on its own thread with
    single-threaded ONNX Runtime calls) or "intra" (one lane, ONNX Runtime's intra-op
    thread pool inside each call); min_lane: fewest rows per member (candidates times
    P/E) a lane gets: a K too small for two lanes runs as the first lane alone,
    single-threaded (below 64 rows per member lanes were slower at short horizons and faster
    only at long ones: docs/planner_benchmark.md).
    Not thread-safe: one caller at a time.
    """

    def __init__(self, session: ort.InferenceSession, meta: dict[str, str], source: str, *,
                 propagation: str | None = None, particles: int | None = None,
                 rng: np.random.Generator | int | None = None, reward_fn: RewardFn | None = None,
                 gamma: float | None = None, parallel: str = "lanes", min_lane: int = 32) -> None:
        fmt = meta_value(meta, "format", int, source)
        if fmt != _FORMAT:
            raise ModelError(f"model file {source} has format {fmt}; this runtime reads format {_FORMAT}")
        o = meta_size(meta, "obs_dim", source)
        a = meta_size(meta, "act_dim", source)
        e = meta_size(meta, "members", source)
        low = np.asarray(meta_value(meta, "action_low", json.loads, source), np.float32).reshape(-1)
        high = np.asarray(meta_value(meta, "action_high", json.loads, source), np.float32).reshape(-1)
        learned_reward = bool(meta_value(meta, "learned_reward", json.loads, source))
        gamma = meta_value(meta, "gamma", float, source) if gamma is None else float(gamma)
        if min(o, a, e) < 1 or low.shape != (a,) or high.shape != (a,) or not 0.0 < gamma <= 1.0:
            raise ModelError(f"model file {source} has inconsistent metadata: obs_dim {o}, act_dim {a}, "
                             f"members {e}, action bounds {low.tolist()} / {high.tolist()}, gamma {gamma}")
        self.propagation = check_propagation(propagation or meta.get("propagation", "TSinf"))
        p = meta_size(meta, "particles", source) if particles is None else int(particles)
        if self.propagation == "expectation":
            p = 1
        elif p < 1 or p % e:
            raise ModelError(f"particles = {p} must be a positive multiple of the {e} ensemble members")
        if reward_fn is None and not learned_reward:
            raise ModelError(f"model file {source} predicts no reward: pass reward_fn=(obs, act, next_obs) "
                             f"-> rewards")
        if parallel not in ("lanes", "intra"):
            raise ModelError(f"parallel = {parallel!r}: choose 'lanes' or 'intra'")
        if int(min_lane) < 1:
            raise ModelError(f"min_lane = {min_lane} must be >= 1")
        self._check_graph(session, source, o, a, e, learned_reward)

        self.dims = ModelDims(obs_dim=o, act_dim=a, action_low=low, action_high=high, latent_dim=0,
                              gamma=gamma, kind="pets", meta=meta)
        self.members, self.particles = e, p
        self.source = source
        self._sess = session
        self._rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._reward_fn = reward_fn
        self._outputs = ["delta_mean", "delta_std"] + (["reward_mean"] if learned_reward else [])
        self.threads = int(session.get_session_options().intra_op_num_threads)
        self.parallel = parallel if self.threads > 1 else "intra"
        self._min_lane = int(min_lane)
        pe = 1 if self.propagation == "expectation" else p // e
        if self.parallel == "lanes":
            # One single-threaded session shared by the lanes (ONNX Runtime runs concurrent
            # calls on it in the callers' threads); a worker thread per extra lane.
            lane_sess = open_onnx(source, 1, False, DISABLED_OPTIMIZERS)
            rngs = [self._rng, *_spawn(self._rng, self.threads - 1)]
            self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(self.threads - 1, "rtmpc-lane")
            weakref.finalize(self, self._pool.shutdown, wait=False)
        else:
            lane_sess, rngs, self._pool = session, [self._rng], None
        # A K too small to split runs as the first lane alone, single-threaded: at a few
        # rows per member a call is mostly per-operator work, and waking ONNX Runtime's
        # pool for every operator costs more than it saves (see the class docstring).
        self._lanes = [_Lane(lane_sess, e, o, a, pe, self._outputs, r) for r in rngs]
        self._pe = pe
        self._cap = 0  # largest K seen
        self._k = self._h = -1  # K, H the current views are for
        self._b_returns = np.empty(0, np.float64)
        self._b_dis = np.empty(0, np.float32)
        self._disagreement: np.ndarray | None = None
        self._split: list[tuple[_Lane, int, int]] = []
        self._rollout_seconds = 0.0
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
    def _ensure(self, k: int, h: int) -> None:
        """Lane split, views and IOBindings for K candidates and H steps; backing arrays
        are reallocated only when K (or K * H for the disagreement) grows."""
        if k == self._k and h == self._h:
            return
        if k > self._cap:
            self._b_returns = np.empty(k, np.float64)
            self._cap = k
        if k * h > self._b_dis.size:
            self._b_dis = np.empty(k * h, np.float32)
        self._returns = self._b_returns[:k]
        self._disagreement = self._b_dis[: k * h].reshape(k, h)
        n = max(1, min(len(self._lanes), k * self._pe // self._min_lane))
        bounds = [k * i // n for i in range(n + 1)]
        self._split = [(lane, k0, k1) for lane, k0, k1 in zip(self._lanes[:n], bounds[:-1], bounds[1:], strict=True)]
        ts1 = self.propagation == "TS1"
        for lane, k0, k1 in self._split:
            lane.ensure(k1 - k0, ts1, self.particles)
        self._k, self._h = k, h

    @property
    def eval_seconds(self) -> float:
        """Seconds the caller's thread has spent inside ONNX Runtime calls (a benchmark
        counter: the rest of a plan's time is overhead or waiting for the other lanes)."""
        return self._lanes[0].eval_seconds

    def timeline(self) -> dict[str, float]:
        """Where the calling thread's rollout time went, cumulative seconds since loading:
        ``rollout`` (all of :meth:`rollout`), split into ``onnx`` (ONNX Runtime calls),
        ``noise`` (the standard normals), ``step`` (the Numba kernels and Python between
        the calls) and ``join`` (the rest: splitting, and waiting for the other lanes).
        A benchmark's per-step timeline; cheap enough to be always on (a few clock reads
        per step)."""
        lane = self._lanes[0]
        return {"rollout": self._rollout_seconds, "onnx": lane.eval_seconds, "noise": lane.noise_seconds,
                "step": lane.lane_seconds - lane.eval_seconds - lane.noise_seconds,
                "join": self._rollout_seconds - lane.lane_seconds}

    @property
    def evaluations(self) -> int:
        """Model evaluations run so far, over every lane: rows through one member (a
        particle-step, or in expectation a candidate-step on one member), the unit of work
        ``rtmpc bench planner`` compares implementations at."""
        return sum(lane.evaluations for lane in self._lanes)

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
        actions = np.ascontiguousarray(actions, dtype=np.float32)
        if actions.ndim != 3 or actions.shape[2] != self.dims.act_dim or actions.shape[0] < 1 \
                or actions.shape[1] < 1:
            raise ModelError(f"actions have shape {actions.shape}; expected (K, H, {self.dims.act_dim}) "
                             f"with K, H >= 1")
        t_start = time.perf_counter()
        k, h, _ = actions.shape
        self._ensure(k, h)
        if self.propagation == "expectation":
            run = lambda lane, k0, k1: lane.rollout_expectation(  # noqa: E731
                obs, actions, k0, self.dims.gamma, self._reward_fn, self._returns[k0:k1],
                self._disagreement[k0:k1])
        else:
            ts1 = self.propagation == "TS1"
            run = lambda lane, k0, k1: lane.rollout_ts(  # noqa: E731
                obs, actions, k0, ts1, self.dims.gamma, self._reward_fn, self._returns[k0:k1],
                self._disagreement[k0:k1])
        others = [self._pool.submit(run, *split) for split in self._split[1:]] if self._pool else []
        try:
            run(*self._split[0])
        finally:
            for f in others:
                f.result()  # re-raises a lane's exception
        self._rollout_seconds += time.perf_counter() - t_start
        return self._returns

    def __repr__(self) -> str:
        d = self.dims
        return (f"PETSRolloutModel({self.source}: obs {d.obs_dim}, act {d.act_dim}, {self.members} members, "
                f"{self.propagation}, {self.particles} particles, gamma {d.gamma}, {self.threads} threads "
                f"({self.parallel}))")


# Model kinds this runtime loads: kind (ONNX metadata "kind") -> RolloutModel class built
# as cls(session, metadata, source, **options).
_KINDS: dict[str, Callable[..., RolloutModel]] = {"pets": PETSRolloutModel}
_KINDS["latent"] = __import__("rtmpc.models.tdmpc.runtime", fromlist=["_"]).LatentRolloutModel  # TD-MPC (no torch)
