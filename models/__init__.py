"""Learned models: replay buffer, PETS ensemble, export to ONNX, ONNX Runtime rollouts.

The names here import no torch (deployment needs none). Training and export are
imported from their modules: ``models.common.ensemble`` (ProbabilisticEnsemble, fit_ensemble),
``models.common.ensemble_export`` (export_onnx, check_parity).
"""

from rtmpc.models.base import ModelDims, ModelError, RolloutModel
from rtmpc.models.common.buffer import ReplayBuffer
from rtmpc.models.common.ensemble_config import EnsembleConfig, TrainConfig
from rtmpc.models.runtime import load_model

__all__ = ["ModelDims", "RolloutModel", "ModelError", "ReplayBuffer", "load_model", "EnsembleConfig",
           "TrainConfig"]
