"""Learned models: replay buffer, PETS ensemble, export to ONNX, ONNX Runtime rollouts.

The names here import no torch (deployment needs none). Training and export are
imported from their modules: ``models.ensemble`` (ProbabilisticEnsemble, fit_ensemble),
``models.export`` (export_onnx, check_parity).
"""

from models.base import ModelDims, ModelError, RolloutModel
from models.buffer import ReplayBuffer
from models.config import EnsembleConfig, TrainConfig
from models.runtime import load_model

__all__ = ["ModelDims", "RolloutModel", "ModelError", "ReplayBuffer", "load_model", "EnsembleConfig",
           "TrainConfig"]
