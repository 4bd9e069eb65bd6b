"""A trained actor exported to ONNX, run as a :class:`~rtmpc.models.base.Policy`. No torch.

Every family that deploys an actor (MBPO's SAC policy, Dyna-Q's Q-network, Dreamer's actor,
World Models' controller) exports it in this one format (:mod:`.policy_export`), so one
runtime and one runner (:class:`rtmpc.planners.policy.PolicyRunner`) serve them all.

The graph: inputs ``obs`` (1, O) float32, ``eps`` (1, A) float32 (the sampling noise: zeros
for the deterministic action, standard normals for a stochastic one; a discrete actor
ignores it or uses it as it likes), then ``state0 .. state{S-1}`` (the recurrent state,
absent for a feed-forward actor); outputs ``action`` (1, A) and ``state0_out ..``. Metadata:
``role = "policy"``, ``kind`` (the family), ``format``, ``obs_dim``, ``act_dim``,
``action_low``/``action_high`` (JSON lists), ``n_actions`` (0 = continuous; else the action
is an index in [0, n)), ``state_shapes`` (JSON list of shapes without the batch axis),
``rtmpc_version``, and the task's ``task``, ``control_period``, ``action_repeat``.
"""

from __future__ import annotations

import json
import os

import numpy as np
from rtmpc.models.base import ModelDims, ModelError, Policy, meta_size, meta_value

__all__ = ["OnnxPolicy", "load_policy", "POLICY_FORMAT", "MAX_STATE_SIZE"]

POLICY_FORMAT = 1
MAX_STATE_SIZE = 1_000_000  # floats of recurrent state a policy file may ask for


class OnnxPolicy(Policy):
    """An exported actor in ONNX Runtime: ``act(obs (O,), state) -> (action (A,), state)``.

    deterministic: zeros as the sampling noise (the mean, or the argmax), else standard
    normals from ``rng``. The returned action and state are fresh arrays.
    """

    def __init__(self, session, meta: dict[str, str], source: str, *, deterministic: bool = True,
                 rng: np.random.Generator | int | None = None):
        fmt = meta_value(meta, "format", int, source)
        if fmt != POLICY_FORMAT:
            raise ModelError(f"policy file {source} has format {fmt}; this runtime reads format {POLICY_FORMAT}")
        o, a = meta_size(meta, "obs_dim", source), meta_size(meta, "act_dim", source)
        low = np.asarray(meta_value(meta, "action_low", json.loads, source), np.float64)
        high = np.asarray(meta_value(meta, "action_high", json.loads, source), np.float64)
        shapes = [tuple(int(d) for d in s) for s in meta_value(meta, "state_shapes", json.loads, source)]
        if low.shape != (a,) or high.shape != (a,):
            raise ModelError(f"policy file {source} has impossible sizes (obs {o}, act {a}, bounds {low.shape}, "
                             f"{high.shape}): export it again")
        if sum(int(np.prod(s)) for s in shapes) > MAX_STATE_SIZE or any(d < 1 for s in shapes for d in s):
            raise ModelError(f"policy file {source} asks for a recurrent state of shapes {shapes}: at most "
                             f"{MAX_STATE_SIZE} floats, every size >= 1")
        self.n_actions = meta_value(meta, "n_actions", int, source) and meta_size(meta, "n_actions", source)
        self.dims = ModelDims(obs_dim=o, act_dim=a, action_low=low, action_high=high, kind=meta.get("kind", ""),
                              meta=dict(meta))
        self.state_shapes = shapes
        self.deterministic = bool(deterministic)
        self.source = source
        self.session = session  # the ONNX Runtime session (inputs obs, eps, state*; outputs action, state*_out)
        self._rng = np.random.default_rng(rng)
        self._feed: dict[str, np.ndarray] = {"obs": np.zeros((1, o), np.float32), "eps": np.zeros((1, a), np.float32)}
        self._state_names = [f"state{i}" for i in range(len(shapes))]
        self.output_names = ["action", *(f"{n}_out" for n in self._state_names)]
        names = {i.name for i in session.get_inputs()}
        if names != {"obs", "eps", *self._state_names}:
            raise ModelError(f"policy file {source} has inputs {sorted(names)}, not obs, eps and "
                             f"{len(shapes)} state input(s): export it with rtmpc.models.common.policy_export")

    def initial_state(self) -> tuple[np.ndarray, ...]:
        return tuple(np.zeros((1, *s), np.float32) for s in self.state_shapes)

    def act(self, obs: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        x = np.asarray(obs, np.float32).reshape(-1)
        if x.shape[0] != self.dims.obs_dim:
            raise ModelError(f"observation has {x.shape[0]} entries but the policy expects {self.dims.obs_dim}: "
                             f"was it trained on another task?")
        if len(state) != len(self.state_shapes):
            raise ModelError(f"the policy's state has {len(self.state_shapes)} part(s), got {len(state)}: start "
                             f"from initial_state()")
        feed = self._feed
        feed["obs"][0] = x
        if self.deterministic:
            feed["eps"].fill(0.0)
        else:
            feed["eps"][0] = self._rng.standard_normal(self.dims.act_dim)
        for name, value in zip(self._state_names, state):
            feed[name] = value
        out = self.session.run(self.output_names, feed)
        action = np.asarray(out[0], np.float64).reshape(-1)
        return action, tuple(out[1:])


def load_policy(path: str | os.PathLike, threads: int = 1, **options) -> OnnxPolicy:
    """The actor in an rtmpc policy file (``role = "policy"`` in its metadata); a model file or a
    missing, damaged or foreign file is a one-line ModelError. ``options``: ``deterministic``, ``rng``."""
    from rtmpc.models.runtime import open_onnx

    sess = open_onnx(path, threads, False)
    meta = dict(sess.get_modelmeta().custom_metadata_map)
    if meta.get("role") != "policy":
        raise ModelError(f"{path} is not a policy file (metadata role = {meta.get('role')!r}): plan over a model "
                         f"file with a planner, or export the family's actor")
    return OnnxPolicy(sess, meta, str(path), **options)
