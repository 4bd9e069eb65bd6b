"""The run config: one YAML file that names the task, the model, its training and the planner.

Each section is the owning package's own frozen config; this module only composes them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from rtmpc.configs import Config, load, param, table
from rtmpc.controller.config import LoopConfig, SafetyConfig
from rtmpc.models import registry
from rtmpc.models.pets.config import EnsembleConfig, PETSLoopConfig, TrainConfig
from rtmpc.models.tdmpc.config import LatentConfig
from rtmpc.planners.base import PlannerConfig
from rtmpc.sim import TaskConfig

from . import flags

__all__ = ["RunConfig", "add_config_arguments", "load_run_config", "config_or_runs"]


@dataclass(frozen=True)
class RunConfig(Config):
    """Everything one training run needs; saved resolved as runs/NAME/config.yaml."""

    kind: str = param("pets", "model family (rtmpc.models.registry): pets (model, train and pets sections) "
                              "or latent (TD-MPC, the latent section)", choices=registry.names())
    seed: int = param(0, "seed of every random choice of the run", ge=0)
    task: TaskConfig = param(TaskConfig(), "the task")
    model: EnsembleConfig = param(EnsembleConfig(), "the probabilistic ensemble")
    train: TrainConfig = param(TrainConfig(), "one fit of the ensemble")
    planner: PlannerConfig = param(PlannerConfig(), "the planner used to collect data and to control")
    pets: PETSLoopConfig = param(PETSLoopConfig(), "the PETS outer loop")
    latent: LatentConfig = param(LatentConfig(), "the TD-MPC latent model, its updates and loop (kind: latent)")
    loop: LoopConfig = param(LoopConfig(), "the fixed-rate control loop")
    safety: SafetyConfig = param(SafetyConfig(), "the safety filter")

    def unused_sections(self) -> tuple[str, ...]:
        """The sections only other model families read (kept in config.yaml, left out of listings)."""
        own = set(registry.family(self.kind).SECTIONS)
        others = {s for name in registry.names() if name != self.kind for s in registry.family(name).SECTIONS}
        return tuple(sorted(others - own))


def add_config_arguments(p: argparse.ArgumentParser, config_required: bool = True) -> None:
    if config_required:
        p.add_argument("config", help="YAML run config (a path, or the name of a shipped one: pets_cartpole)")
    else:
        p.add_argument("--config", help="YAML run config (a path, or the name of a shipped one)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value (repeatable), e.g. --set planner.horizon=20")
    p.add_argument("--seed", type=flags.seed(), help="override the run's seed")


def config_or_runs(config, run_dir) -> Path | None:
    """``config`` if given, else the run's ``run_dir/config.yaml`` if there is one, else None
    (the defaults): a model inside a run directory is planned and analysed as it was trained."""
    if config:
        return Path(config)
    if run_dir is not None and (Path(run_dir) / "config.yaml").is_file():
        return Path(run_dir) / "config.yaml"
    return None


def load_run_config(path, overrides=(), seed: int | None = None, extra: dict | None = None) -> RunConfig:
    extra = dict(extra or {})
    if seed is not None:
        extra["seed"] = seed
    return load(RunConfig, path, overrides=overrides, extra=extra)


def print_config(cfg: RunConfig, title: str) -> None:
    print(table(cfg, title, skip=cfg.unused_sections()))
