"""The project's own MJCF tasks: a file in sim/assets plus a few lines of reward."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .mjcf import MJCFEnv, load_mjcf

ASSETS = Path(__file__).resolve().parent / "assets"


def point_target(action_repeat: int = 1, seed=None) -> MJCFEnv:
    """A point mass driven by two motors to a target placed at random each episode.

    Observation: qpos (x, y), qvel (x, y), target (x, y). Reward per control step in
    [0, 1]: 1 at the target, falling off with distance (scale 5 cm), minus a small
    action cost.
    """
    model = load_mjcf(ASSETS / "point_target.xml")
    tip = model.site("tip").id
    target = model.site("target").id

    def reward(m, d, a) -> float:
        dist = float(np.linalg.norm(d.site_xpos[tip, :2] - d.site_xpos[target, :2]))  # distance to target
        return 1.0 - np.tanh(dist / 0.05) - 0.01 * float(a @ a) / len(a)  # closeness - effort

    def on_reset(m, d, rng) -> None:
        m.site_pos[target, :2] = rng.uniform(-0.2, 0.2, size=2)  # new target each episode

    return MJCFEnv("point-target", model, reward, control_period=0.02, episode_seconds=10.0,
                   action_repeat=action_repeat, on_reset=on_reset,
                   extra_obs=lambda m, d: m.site_pos[target, :2].copy(),
                   extra_names=("target.x", "target.y"), seed=seed, reward_range=(-0.01, 1.0))


PROJECT_TASKS = {"point-target": point_target}
