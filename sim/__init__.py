"""Simulation: MuJoCo tasks by name, with Gymnasium step semantics.

``sim.make("cartpole-swingup")`` builds a dm_control suite task; ``sim.make("point-target")``
a project task from sim/assets; ``sim.make("path/robot.xml", cost=CostConfig(...))`` any MJCF
file with a cost section. See :class:`sim.base.Env` for the step semantics.

Gymnasium environments (the ``sim`` extra installs gymnasium with its MuJoCo envs):
``sim.make("gym:Pendulum-v1")``, ``sim.make("gym:CartPole-v1")`` (discrete: ``spec.n_actions``
= 2, one action entry holding the index), ``sim.make("gym:HalfCheetah-v5")``; a Gymnasium id
from another package in Gymnasium's own form, ``gym:package:ID``. ``sim.make("mytasks.arm:make_env")``
imports ``mytasks.arm`` and calls ``make_env()``, which returns a ``gymnasium.Env`` or an rtmpc
Env; ``sim.from_gymnasium(env)`` wraps an env built by hand. docs/tasks.md has the details.
"""

from __future__ import annotations

import os

# No display exists on the machines this runs on: render offscreen through EGL unless the
# user chose a backend (osmesa also works). Must be set before mujoco/dm_control load GL.
os.environ.setdefault("MUJOCO_GL", "egl")

from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from rtmpc.configs import Config, ConfigError, param  # noqa: E402

from .base import Env, TaskError, TaskSpec  # noqa: E402
from .gymenv import GymEnv, from_gymnasium, make_from_factory, make_gym  # noqa: E402
from .mjcf import BoundConfig, CostConfig, MJCFEnv, TargetConfig, cost_task  # noqa: E402
from .robot import SimRobot  # noqa: E402
from .tasks import PROJECT_TASKS  # noqa: E402
from .vec import VecEnv  # noqa: E402
from .video import record_video, render_states, write_video  # noqa: E402

__all__ = ["make", "task_names", "TaskConfig", "Env", "TaskSpec", "TaskError", "CostConfig",
           "TargetConfig", "BoundConfig", "MJCFEnv", "record_video", "render_states", "write_video", "VecEnv",
           "SimRobot", "from_gymnasium", "GymEnv"]


@dataclass(frozen=True)
class TaskConfig(Config):
    """Which task to run and how."""

    name: str = param("cartpole-swingup", "task name (rtmpc tasks lists them), a path to an MJCF file, "
                                          "gym:ID (a Gymnasium env) or package.module:factory")
    action_repeat: int = param(1, "physics control steps per agent step (the model's time step); 0 = by "
                                  "domain, from action_repeat_by_domain", ge=0, le=100)
    action_repeat_by_domain: tuple[str, ...] = param((), "with action_repeat 0: DOMAIN=N entries (the domain is "
                                                         "the name before '-', e.g. cartpole=8) and default=N")
    episode_steps: int = param(0, "agent steps per episode (0 = the task's default)", ge=0)
    cost: CostConfig | None = param(None, "cost section for an MJCF file given as the task name")

    def check(self) -> None:
        table = {}
        for entry in self.action_repeat_by_domain:
            domain, sep, n = entry.partition("=")
            if not sep or not domain.strip() or not n.strip().isdigit() or not 1 <= int(n) <= 100:
                raise ConfigError(f"task.action_repeat_by_domain entry {entry!r}: expected DOMAIN=N with N in "
                                  f"1..100, e.g. cartpole=8 or default=4")
            table[domain.strip()] = int(n)
        if self.action_repeat == 0:
            domain = self.name.split("-", 1)[0]
            if domain not in table and "default" not in table:
                raise ConfigError(f"task.action_repeat = 0 (by domain) but task.action_repeat_by_domain has no "
                                  f"entry for {domain!r} and no default=N: add one, or set task.action_repeat")
            # Resolved once, here: every consumer (and the run's saved config) sees the number.
            object.__setattr__(self, "action_repeat", table.get(domain, table.get("default")))


def task_names() -> list[str]:
    """Every registered task name: project tasks, then dm_control suite tasks.

    ``gym:ID`` and ``package.module:factory`` names are not listed (Gymnasium's registry is
    large and grows with every installed package): ``gymnasium.pprint_registry()`` lists IDs.
    """
    from .dmc import suite_task_names

    return sorted(PROJECT_TASKS) + suite_task_names()


def make(name: str | TaskConfig, seed: int | np.random.Generator | None = None, **overrides) -> Env:
    """Build the task ``name`` (or a TaskConfig); ``overrides`` are TaskConfig fields.

    ``seed`` (None, an int or a numpy Generator) drives every random choice of the env;
    ``reset(seed=)`` reseeds it. Name forms: ``domain-task`` (dm_control), a project task,
    ``path.xml`` (with ``cost``), ``gym:ID`` and ``package.module:factory`` (see gymenv).
    """
    cfg = name if isinstance(name, TaskConfig) else TaskConfig(name=name, **overrides)
    if isinstance(name, TaskConfig) and overrides:
        cfg = cfg.replace(**overrides)
    if cfg.name.endswith(".xml") or Path(cfg.name).suffix == ".xml":
        if cfg.cost is None:
            raise TaskError(f"task {cfg.name} is an MJCF file: give it a cost section in the config "
                            f"(task.cost.targets: joints, sites or sensors with targets)")
        env = cost_task(cfg.name, cfg.cost, action_repeat=cfg.action_repeat, seed=seed)
    elif cfg.name.startswith("gym:"):
        env = make_gym(cfg.name[len("gym:"):], action_repeat=cfg.action_repeat, episode_steps=cfg.episode_steps,
                       seed=seed)
    elif ":" in cfg.name:
        env = make_from_factory(cfg.name, action_repeat=cfg.action_repeat, episode_steps=cfg.episode_steps, seed=seed)
    elif cfg.name in PROJECT_TASKS:
        env = PROJECT_TASKS[cfg.name](action_repeat=cfg.action_repeat, seed=seed)
    else:
        from .dmc import DMCEnv, suite_task_names

        if cfg.name not in suite_task_names():
            close = [n for n in task_names() if cfg.name.split("-")[0] in n][:6]
            hint = f" (did you mean {', '.join(close)}?)" if close else " (rtmpc tasks lists them)"
            raise TaskError(f"unknown task {cfg.name!r}{hint}")
        env = DMCEnv(cfg.name, action_repeat=cfg.action_repeat, seed=seed, episode_steps=cfg.episode_steps)
    if cfg.episode_steps:
        env.spec = replace(env.spec, episode_steps=cfg.episode_steps)
    return env
