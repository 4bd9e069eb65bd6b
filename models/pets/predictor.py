"""The PETS ensemble as rtmpc analyze sees it: rolled open-loop with ONNX Runtime. No torch."""

from __future__ import annotations

import json
import logging
import os
from typing import Callable

import numpy as np
from rtmpc.models.analysis.predictors import Prediction, Predictor
from rtmpc.models.base import ModelError

log = logging.getLogger(__name__)


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
