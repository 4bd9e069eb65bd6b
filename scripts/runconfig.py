"""The run config: one YAML file that names the task, the model, its training and the planner.

Each section is the owning package's own frozen config; this module only composes them:
the task, planner, loop and safety sections, then every registered model family's own
(``SECTIONS`` in ``models/<family>/__init__.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from rtmpc.configs import Config, load, param, table
from rtmpc.controller.config import LoopConfig, SafetyConfig
from rtmpc.models import registry
from rtmpc.planners.base import CEMConfig, PlannerConfig
from rtmpc.sim import TaskConfig

from . import flags

__all__ = ["RunConfig", "add_config_arguments", "load_run_config", "config_or_runs"]


@dataclass(frozen=True)
class _RunConfigBase(Config):
    """The sections every run has; each model family adds its own (models.registry)."""

    kind: str = param("pets", "model family (rtmpc.models.registry): " + ", ".join(registry.names()) + "; "
                              "its own sections hold its settings", choices=registry.names())
    seed: int = param(0, "seed of every random choice of the run", ge=0)
    task: TaskConfig = param(TaskConfig(), "the task")
    planner: PlannerConfig = param(CEMConfig(), "the planner used to collect data and to control "
                                                "(its kind picks its config: rtmpc.planners.registry)")
    loop: LoopConfig = param(LoopConfig(), "the fixed-rate control loop")
    safety: SafetyConfig = param(SafetyConfig(), "the safety filter")

    def unused_sections(self) -> tuple[str, ...]:
        """The sections only other model families read (kept in config.yaml, left out of listings)."""
        own = set(registry.family(self.kind).SECTIONS)
        return tuple(sorted(set(_family_sections()) - own))


def _family_sections() -> dict[str, tuple[type, str]]:
    """Every registered family's own sections, name -> (Config class, doc); a name two
    families claim, or one the base has, is an error in the registry."""
    base = {f.name for f in dataclasses.fields(_RunConfigBase)}
    out: dict[str, tuple[type, str]] = {}
    for name in registry.names():
        for section, spec in registry.family(name).SECTIONS.items():
            if section in out or section in base:
                raise TypeError(f"model family {name!r} claims the run config section {section!r}, "
                                f"which is taken: rename it")
            out[section] = spec
    return out


# Everything one training run needs; saved resolved as runs/NAME/config.yaml. Its fields are
# the base's, then each registered family's sections, so a new family needs no line here.
RunConfig = dataclasses.make_dataclass(
    "RunConfig", [(section, cls, param(cls(), doc)) for section, (cls, doc) in _family_sections().items()],
    bases=(_RunConfigBase,), frozen=True, namespace={"__module__": __name__, "__doc__": (
        "Everything one training run needs (the task, the model family and its sections, the planner, "
        "the loop); saved resolved as runs/NAME/config.yaml.")})
RunConfig.__qualname__ = "RunConfig"


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
