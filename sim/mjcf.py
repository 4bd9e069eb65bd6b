"""Tasks from a plain MJCF file: a MuJoCo model plus a reward written in Python or as a
cost section in the config (targets for named joints, sites or sensors).

Observation order: ``qpos``, ``qvel``, ``sensordata`` (if the model has sensors), then
the task's extra entries (for a cost task: the positions of the sites it targets).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from rtmpc.configs import Config, ConfigError, param

from .base import Env, TaskError, TaskSpec

__all__ = ["MJCFEnv", "CostConfig", "TargetConfig", "BoundConfig", "load_mjcf", "cost_task"]


def _mujoco():
    import mujoco

    return mujoco


def load_mjcf(path: str | Path):
    """Load an MJCF file; a missing or malformed file is a one-line TaskError."""
    mujoco = _mujoco()
    p = Path(path)
    if not p.exists():
        raise TaskError(f"MJCF file {p} not found")
    try:
        model = mujoco.MjModel.from_xml_path(str(p))
    except ValueError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "parse error"
        raise TaskError(f"MJCF file {p} could not be loaded: {first}") from None
    if model.nu == 0:
        raise TaskError(f"MJCF model {p.name} has no actuators: add <actuator> elements for the joints "
                        f"to drive (joints: {', '.join(_names(model, 'joint')) or 'none'})")
    return model


def _names(model, kind: str) -> list[str]:
    mujoco = _mujoco()
    obj = {"joint": mujoco.mjtObj.mjOBJ_JOINT, "site": mujoco.mjtObj.mjOBJ_SITE,
           "sensor": mujoco.mjtObj.mjOBJ_SENSOR, "body": mujoco.mjtObj.mjOBJ_BODY}[kind]
    count = {"joint": model.njnt, "site": model.nsite, "sensor": model.nsensor, "body": model.nbody}[kind]
    return [mujoco.mj_id2name(model, obj, i) or f"#{i}" for i in range(count)]


# Python-side reward and termination: (model, data, action) -> float / bool.
RewardFn = Callable[[object, object, np.ndarray], float]
TerminateFn = Callable[[object, object], bool]
ResetFn = Callable[[object, object, np.random.Generator], None]
ExtraObsFn = Callable[[object, object], np.ndarray]


class MJCFEnv(Env):
    """A MuJoCo model with a Python reward; actions are the actuators' controls.

    One agent step = ``frame_skip * action_repeat`` physics steps; bounds come from each
    actuator's ctrlrange (unlimited actuators get [-1, 1]).
    """

    def __init__(self, name: str, model, reward: RewardFn, *, control_period: float = 0.02,
                 episode_seconds: float = 10.0, action_repeat: int = 1,
                 terminate: TerminateFn | None = None, on_reset: ResetFn | None = None,
                 extra_obs: ExtraObsFn | None = None, extra_names: tuple[str, ...] = (),
                 reset_noise: float = 0.01, seed: int | np.random.Generator | None = None,
                 reward_range: tuple[float, float] = (0.0, 1.0)):
        mujoco = _mujoco()
        dt = float(model.opt.timestep)
        frame_skip = int(round(control_period / dt))
        if frame_skip < 1 or abs(frame_skip * dt - control_period) > 1e-9 + 1e-6 * control_period:
            raise TaskError(f"control period ({control_period} s) must be a whole multiple of the "
                            f"physics timestep ({dt} s)")
        self.model = model
        self.data = mujoco.MjData(model)
        self._mujoco = mujoco
        self._reward, self._terminate, self._on_reset = reward, terminate, on_reset
        self._extra = extra_obs
        self._frame_skip = frame_skip
        self._repeat = action_repeat
        self._noise = reset_noise
        self._rng = np.random.default_rng(seed)
        self._t = 0
        limited = model.actuator_ctrllimited.astype(bool)
        low = np.where(limited, model.actuator_ctrlrange[:, 0], -1.0)
        high = np.where(limited, model.actuator_ctrlrange[:, 1], 1.0)
        names = [f"qpos[{i}]" for i in range(model.nq)] + [f"qvel[{i}]" for i in range(model.nv)]
        names += [f"sensor[{i}]" for i in range(model.nsensordata)] + list(extra_names)
        period = control_period * action_repeat
        self.spec = TaskSpec(name=name, obs_dim=len(names), act_dim=int(model.nu), action_low=low,
                             action_high=high, control_period=period,
                             episode_steps=int(round(episode_seconds / period)), action_repeat=action_repeat,
                             obs_names=tuple(names),
                             reward_range=(reward_range[0] * action_repeat, reward_range[1] * action_repeat))
        self._renderer = None

    def _obs(self) -> np.ndarray:
        d = self.data
        parts = [d.qpos, d.qvel, d.sensordata]
        if self._extra is not None:
            parts.append(self._extra(self.model, d))
        return np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1) for p in parts])

    def reset(self, seed: int | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        m, d = self.model, self.data
        self._mujoco.mj_resetData(m, d)
        d.qpos[:] = m.qpos0 + self._noise * self._rng.standard_normal(m.nq)
        d.qvel[:] = self._noise * self._rng.standard_normal(m.nv)
        if self._on_reset is not None:
            self._on_reset(m, d, self._rng)
        self._mujoco.mj_forward(m, d)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), self.spec.action_low, self.spec.action_high)
        self.data.ctrl[:] = a
        reward = 0.0
        terminated = False
        for _ in range(self._repeat):
            self._mujoco.mj_step(self.model, self.data, nstep=self._frame_skip)
            # mj_step computes positions, sites and sensors before it integrates: bring them to the
            # state reached (the state itself is unchanged), so rewards, terminations and the
            # observation read the same instant as qpos (a site lagged one physics step before)
            self._mujoco.mj_step1(self.model, self.data)
            reward += float(self._reward(self.model, self.data, a))
            if self._terminate is not None and self._terminate(self.model, self.data):
                terminated = True
                break
        self._t += 1
        truncated = not terminated and self._t >= self.spec.episode_steps
        return self._obs(), reward, terminated, truncated, {}

    def render(self, width: int = 320, height: int = 240) -> np.ndarray:
        if self._renderer is None or (self._renderer.width, self._renderer.height) != (width, height):
            self._renderer = self._mujoco.Renderer(self.model, height=height, width=width)
        self._renderer.update_scene(self.data, camera=0 if self.model.ncam else -1)
        return self._renderer.render()

    def get_state(self) -> np.ndarray:
        d = self.data
        return np.concatenate([[d.time], d.qpos, d.qvel, d.act]).copy()

    def set_state(self, state: np.ndarray) -> np.ndarray:
        m, d = self.model, self.data
        s = np.asarray(state, dtype=np.float64)
        d.time = s[0]
        d.qpos[:] = s[1:1 + m.nq]
        d.qvel[:] = s[1 + m.nq:1 + m.nq + m.nv]
        d.act[:] = s[1 + m.nq + m.nv:]
        self._mujoco.mj_forward(m, d)
        return self._obs()

    def reward_of_state(self) -> float:
        return float(self._reward(self.model, self.data, np.asarray(self.data.ctrl)))

    @property
    def physics_timestep(self) -> float:
        return float(self.model.opt.timestep)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


# ---------------------------------------------------------------- cost tasks from config

@dataclass(frozen=True)
class TargetConfig(Config):
    """One cost term: weight * ||value - target||^2 for a named joint, site or sensor."""

    kind: str = param("joint", "what is named: joint (its qpos), site (its world position) or sensor",
                      choices=("joint", "site", "sensor"))
    name: str = param("", "the element's name in the MJCF file")
    target: tuple[float, ...] = param((0.0,), "target value (1 entry for a joint, 3 for a site, "
                                              "the sensor's size for a sensor)")
    weight: float = param(1.0, "weight of this term", ge=0.0)


@dataclass(frozen=True)
class BoundConfig(Config):
    """Episode ends when the named joint's position leaves [low, high]."""

    joint: str = param("", "joint name")
    low: float = param(-1e9, "lowest allowed position")
    high: float = param(1e9, "highest allowed position")

    def check(self) -> None:
        if self.low >= self.high:
            raise ConfigError(f"low = {self.low} must be below high = {self.high}")


@dataclass(frozen=True)
class CostConfig(Config):
    """Reward = -(sum of target terms + action_penalty * ||a||^2), per physics control step."""

    targets: tuple[TargetConfig, ...] = param((), "cost terms")
    action_penalty: float = param(0.001, "weight of the squared action", ge=0.0)
    terminate: tuple[BoundConfig, ...] = param((), "joint position bounds that end an episode")
    control_period: float = param(0.02, "seconds per control step (a multiple of the MJCF timestep)", gt=0.0)
    episode_seconds: float = param(10.0, "episode length in seconds", gt=0.0)

    def check(self) -> None:
        if not self.targets:
            raise ConfigError("cost.targets is empty: name at least one joint, site or sensor with a target")


def _element(model, kind: str, name: str, where: str) -> int:
    names = _names(model, kind)
    if name not in names:
        raise TaskError(f"{where}: the model has no {kind} named {name!r}; its {kind}s are: "
                        f"{', '.join(names) or 'none'}")
    return names.index(name)


def cost_task(path: str | Path, cost: CostConfig, action_repeat: int = 1,
              seed: int | np.random.Generator | None = None) -> MJCFEnv:
    """Build a task from any MJCF file and a cost section (no Python needed)."""
    model = load_mjcf(path)
    terms: list[tuple[str, np.ndarray, np.ndarray, float]] = []  # (kind, index array, target, weight)
    site_ids: list[int] = []
    for i, t in enumerate(cost.targets):
        where = f"cost.targets[{i}]"
        idx = _element(model, t.kind, t.name, where)
        if t.kind == "joint":
            cols = np.array([model.jnt_qposadr[idx]])
        elif t.kind == "site":
            cols = np.arange(3)
            site_ids.append(idx)
        else:
            adr, dim = model.sensor_adr[idx], model.sensor_dim[idx]
            cols = np.arange(adr, adr + dim)
        target = np.asarray(t.target, dtype=np.float64)
        if target.size != cols.size:
            raise TaskError(f"{where}.target has {target.size} entries but {t.kind} {t.name!r} has {cols.size}")
        terms.append((t.kind, cols if t.kind != "site" else np.array([idx]), target, t.weight))
    bounds = [(model.jnt_qposadr[_element(model, "joint", b.joint, f"cost.terminate[{i}]")], b.low, b.high)
              for i, b in enumerate(cost.terminate)]
    penalty = cost.action_penalty

    def reward(m, d, a) -> float:
        c = penalty * float(a @ a)
        for kind, cols, target, w in terms:
            if kind == "joint":
                v = d.qpos[cols]
            elif kind == "site":
                v = d.site_xpos[cols[0]]
            else:
                v = d.sensordata[cols]
            diff = v - target
            c += w * float(diff @ diff)
        return -c

    def terminate(m, d) -> bool:
        return any(not (lo <= d.qpos[adr] <= hi) for adr, lo, hi in bounds)

    site_names = _names(model, "site")
    extra_names = tuple(f"{site_names[s]}.pos[{k}]" for s in site_ids for k in range(3))
    return MJCFEnv(Path(path).stem, model, reward, control_period=cost.control_period,
                   episode_seconds=cost.episode_seconds, action_repeat=action_repeat,
                   terminate=terminate if bounds else None,
                   extra_obs=(lambda m, d: d.site_xpos[site_ids].reshape(-1)) if site_ids else None,
                   extra_names=extra_names, seed=seed, reward_range=(-np.inf, 0.0))
