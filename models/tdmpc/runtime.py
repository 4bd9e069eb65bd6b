"""The exported TD-MPC-style latent model as a RolloutModel over ONNX Runtime. No torch.

``models.runtime.load_model`` builds :class:`LatentRolloutModel` for files whose metadata
says ``kind = "latent"`` (see :mod:`models.tdmpc.export` for the graph). This module
imports nothing from :mod:`models.runtime`, which registers it.

- ``rollout(obs0 (O,), actions (K, H, A)) -> returns (K,)``: one ONNX Runtime call;
  returns are the discounted latent rewards plus the discounted terminal value
  ``Q_avg(z_H, pi(z_H))`` (TD-MPC2's ``_estimate_value``): the terminal action is
  sampled from the policy prior and Q is the mean of a random pair of heads, both drawn
  from the model's generator on every call (``stochastic=False``: the prior's mean
  action and the mean of heads 0 and 1, a deterministic score).
- ``prior_actions(obs0, n, H, rng) -> (n, H, A)``: one call; trajectories sampled from
  the squashed-Gaussian policy prior through the latent dynamics, noise from ``rng``,
  inside the action bounds by construction (tanh squashing, then the affine map to
  [low, high]).

Inputs and outputs are bound once per (K, H) or (n, H) with IOBinding to buffers the
model owns, so a call allocates only the noise it draws. The returned arrays are
overwritten by the next call of the same kind.

Threads: ``load_model(path, threads=T)`` with T > 1 does not use ONNX Runtime's intra-op
threads for rollouts; it splits the K candidates into T slices run concurrently, each by a
single-threaded run of a second session (T - 1 pool threads plus the caller). Measured
here (2 shared cores, K = 512, H = 3): intra-op threading made a 512-row rollout slower
(its ops are too small to split), slices ran up to 1.5x faster when the other core was free.
The policy-prior call (24 rows) always runs whole on the caller's thread.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
from rtmpc.models.base import ModelDims, ModelError, RolloutModel, meta_size, meta_value

__all__ = ["LatentRolloutModel"]

log = logging.getLogger(__name__)

_FORMAT = 1
MIN_SLICE = 64  # fewest candidates per concurrent run: below, one run does them all
_INPUTS = ("obs", "actions", "pi_eps", "q_idx", "prior_eps")
_OUTPUTS = ("returns", "prior_actions", "z0")



class _Call:
    """One bound call: input arrays (obs, actions, pi_eps, q_idx, prior_eps), output arrays
    (returns, prior_actions, z0) and the IOBinding that points at them. The arrays may be
    views of larger buffers (a slice of the candidates)."""

    def __init__(self, sess: ort.InferenceSession, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]):
        self.inputs, self.outputs = inputs, outputs
        io = sess.io_binding()
        for name in _INPUTS:
            arr = inputs[name]
            if arr.size:
                io.bind_input(name, "cpu", 0, arr.dtype, arr.shape, arr.ctypes.data)
            else:
                io.bind_cpu_input(name, arr)
        for name in _OUTPUTS:
            arr = outputs.get(name)
            if arr is not None and arr.size:
                io.bind_output(name, "cpu", 0, arr.dtype, arr.shape, arr.ctypes.data)
            else:
                io.bind_output(name, "cpu")  # empty: ONNX Runtime allocates it
        self.io = io


class LatentRolloutModel(RolloutModel):
    """TD-MPC latent model rollouts over ONNX Runtime (see the module docstring).

    rng: numpy Generator, seed or None for the terminal policy noise and Q-head pairs;
    stochastic: False scores deterministically (prior mean action, heads 0 and 1);
    gamma: not accepted (the discount is baked into the exported graph).
    Not thread-safe: one caller at a time.
    """

    def __init__(self, session: ort.InferenceSession, meta: dict[str, str], source: str, *,
                 rng: np.random.Generator | int | None = None, stochastic: bool = True) -> None:
        fmt = meta_value(meta, "format", int, source)
        if fmt != _FORMAT:
            raise ModelError(f"model file {source} has format {fmt}; this runtime reads latent format {_FORMAT}")
        o = meta_size(meta, "obs_dim", source)
        a = meta_size(meta, "act_dim", source)
        z = meta_size(meta, "latent_dim", source)
        q = meta_size(meta, "num_q", source)
        low = np.asarray(meta_value(meta, "action_low", json.loads, source), np.float32).reshape(-1)
        high = np.asarray(meta_value(meta, "action_high", json.loads, source), np.float32).reshape(-1)
        gamma = meta_value(meta, "gamma", float, source)
        if min(o, a, z) < 1 or q < 2 or low.shape != (a,) or high.shape != (a,) or not np.all(low < high) \
                or not 0.0 < gamma <= 1.0:
            raise ModelError(f"model file {source} has inconsistent metadata: obs_dim {o}, act_dim {a}, latent_dim "
                             f"{z}, num_q {q}, action bounds {low.tolist()} / {high.tolist()}, gamma {gamma}")
        ins = {i.name: i.shape for i in session.get_inputs()}
        outs = {i.name for i in session.get_outputs()}
        if set(ins) != set(_INPUTS) or not set(_OUTPUTS) <= outs or ins["obs"][-1] != o or ins["actions"][-1] != a:
            raise ModelError(f"model file {source}: graph inputs {ins} / outputs {sorted(outs)} do not match its "
                             f"metadata (obs [1, {o}], actions [K, H, {a}]): export it again")
        self.dims = ModelDims(obs_dim=o, act_dim=a, action_low=low, action_high=high, latent_dim=z, gamma=gamma,
                              kind="latent", meta=meta)
        self.num_q = q
        self.stochastic = bool(stochastic)
        self.source = source
        self._sess = session
        self._rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._score: list[_Call] = []  # one binding per slice of the candidates
        self._score_shape: tuple[int, int] = (0, 0)
        self._sample: _Call | None = None
        # threads > 1: concurrent single-threaded runs over slices of the K candidates
        self.workers = max(1, int(session.get_session_options().intra_op_num_threads))
        self._pool: ThreadPoolExecutor | None = None
        self._run_sess = session
        if self.workers > 1:
            opts = session.get_session_options()
            opts.intra_op_num_threads = 1
            self._run_sess = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
            self._pool = ThreadPoolExecutor(self.workers - 1, thread_name_prefix="latent-rollout")
        log.debug("loaded %r", self)

    @property
    def has_prior(self) -> bool:
        return True

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 3 or actions.shape[2] != self.dims.act_dim or actions.shape[0] < 1 \
                or actions.shape[1] < 1:
            raise ModelError(f"actions have shape {actions.shape}; expected (K, H, {self.dims.act_dim}) "
                             f"with K, H >= 1")
        return actions

    def _bind_score(self, k: int, h: int) -> None:
        """Buffers for K candidates of H steps and one binding per slice (K / workers rows
        each when K >= MIN_SLICE * workers, else one)."""
        o, a, z = self.dims.obs_dim, self.dims.act_dim, self.dims.latent_dim
        f32 = np.float32
        obs, q_idx = np.zeros((1, o), f32), np.array([0, 1], np.int64)
        actions, pi_eps, returns = np.zeros((k, h, a), f32), np.zeros((k, a), f32), np.zeros(k, f32)
        parts = self.workers if k >= MIN_SLICE * self.workers else 1
        edges = np.linspace(0, k, parts + 1).astype(int)
        sess = self._run_sess
        calls = []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            ins = {"obs": obs, "actions": actions[lo:hi], "pi_eps": pi_eps[lo:hi], "q_idx": q_idx,
                   "prior_eps": np.zeros((0, 1, a), f32)}
            calls.append(_Call(sess, ins, {"returns": returns[lo:hi], "z0": np.zeros((1, z), f32)}))
        self._score, self._score_shape = calls, (k, h)
        self._score_buffers = {"obs": obs, "actions": actions, "pi_eps": pi_eps, "q_idx": q_idx, "returns": returns}

    def rollout(self, obs0: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """obs0 (O,), actions (K, H, A) -> predicted returns (K,) float32, model-owned."""
        obs = self.check_obs(obs0)
        actions = self._check_actions(actions)
        k, h, _ = actions.shape
        if self._score_shape != (k, h):
            self._bind_score(k, h)
        buf = self._score_buffers
        buf["obs"][0] = obs
        np.copyto(buf["actions"], actions)
        if self.stochastic:
            self._rng.standard_normal(dtype=np.float32, out=buf["pi_eps"])
            i = int(self._rng.integers(self.num_q))
            j = int(self._rng.integers(self.num_q - 1))
            buf["q_idx"][0], buf["q_idx"][1] = i, j + (j >= i)  # two distinct heads
        calls = self._score
        if len(calls) == 1:
            self._run_sess.run_with_iobinding(calls[0].io)
        else:
            pending = [self._pool.submit(self._run_sess.run_with_iobinding, c.io) for c in calls[1:]]
            self._run_sess.run_with_iobinding(calls[0].io)
            for f in pending:
                f.result()
        return buf["returns"]

    def prior_actions(self, obs0: np.ndarray, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        """(n, H, A) float32 action sequences from the policy prior, inside the bounds; model-owned."""
        obs = self.check_obs(obs0)
        n, horizon = int(n), int(horizon)
        if n < 1 or horizon < 1:
            raise ModelError(f"prior_actions needs n >= 1 and horizon >= 1, got n = {n}, horizon = {horizon}")
        call = self._sample
        if call is None or call.inputs["prior_eps"].shape[:2] != (n, horizon):
            o, a, z = self.dims.obs_dim, self.dims.act_dim, self.dims.latent_dim
            f32 = np.float32
            ins = {"obs": np.zeros((1, o), f32), "actions": np.zeros((0, 1, a), f32), "pi_eps": np.zeros((0, a), f32),
                   "q_idx": np.array([0, 1], np.int64), "prior_eps": np.zeros((n, horizon, a), f32)}
            call = self._sample = _Call(self._run_sess, ins, {"prior_actions": np.zeros((n, horizon, a), f32),
                                                              "z0": np.zeros((1, z), f32)})
        call.inputs["obs"][0] = obs
        rng.standard_normal(dtype=np.float32, out=call.inputs["prior_eps"])
        self._run_sess.run_with_iobinding(call.io)  # single-threaded: 24 rows are too few to split
        out = call.outputs["prior_actions"]
        np.clip(out, self.dims.action_low, self.dims.action_high, out=out)  # tanh can round onto a bound
        return out

    def __repr__(self) -> str:
        d = self.dims
        return (f"LatentRolloutModel({self.source}: obs {d.obs_dim}, act {d.act_dim}, latent {d.latent_dim}, "
                f"{self.num_q} Q heads, gamma {d.gamma})")
