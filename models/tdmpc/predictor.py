"""The latent model as rtmpc analyze sees it. No torch."""

from __future__ import annotations

import logging
import os

import numpy as np
from rtmpc.models.analysis.predictors import Prediction, Predictor
from rtmpc.models.base import ModelError

log = logging.getLogger(__name__)


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
