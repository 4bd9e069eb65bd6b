"""Typed options of PETS's outer training loop. No torch. (The ensemble's options,
shared with MBPO, are in :mod:`rtmpc.models.common.ensemble_config`.)

PETS: Chua, Calandra, McAllister, Levine, "Deep Reinforcement Learning in a Handful
of Trials using Probabilistic Dynamics Models", NeurIPS 2018.
"""

from __future__ import annotations

from dataclasses import dataclass

from rtmpc.configs import Config, param

__all__ = ["PETSLoopConfig"]


@dataclass(frozen=True)
class PETSLoopConfig(Config):
    """The outer loop of PETS training."""

    seed_episodes: int = param(1, "episodes of random actions before the first fit", ge=1)
    episodes: int = param(15, "episodes in all (random seed episodes included)", ge=2)
    max_env_steps: int = param(0, "stop after this many environment steps, action repeat counted "
                                  "(0 = no cap)", ge=0)
    threads: int = param(2, "threads for torch (fitting) and ONNX Runtime (planning)", ge=1, le=64)
    gamma: float = param(1.0, "discount per model step used by the planner", gt=0.0, le=1.0)
    parity_samples: int = param(256, "buffer transitions checked ONNX vs PyTorch after each export", ge=1)
