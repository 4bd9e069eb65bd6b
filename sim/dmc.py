"""dm_control suite tasks with state observations, as ``domain-task`` environments.

Observation order: the task's own observation spec order (dm_control returns an
OrderedDict), each entry flattened row-major; e.g. cartpole-swingup is
``position`` (cart x, pole cos, pole sin) then ``velocity`` (cart, pole).
"""

from __future__ import annotations

import numpy as np

from .base import Env, TaskError, TaskSpec

__all__ = ["DMCEnv", "suite_task_names"]

# Per-step reward range by domain: suite rewards lie in [0, 1] except lqr's, a negative cost.
_REWARD_RANGE = {"lqr": (-np.inf, 0.0)}


def _suite():
    try:
        from dm_control import suite
    except ImportError as err:  # deployment install without the [train] extra
        raise TaskError(f"dm_control suite tasks need dm-control ({err}): pip install 'rtmpc[train]'") from None
    return suite


def suite_task_names() -> list[str]:
    """``domain-task`` names of every suite task with state observations."""
    try:
        suite = _suite()
    except TaskError:
        return []
    return [f"{d}-{t}" for d, t in suite.ALL_TASKS]


class DMCEnv(Env):
    def __init__(self, name: str, action_repeat: int = 1, seed: int | np.random.Generator | None = None,
                 episode_steps: int = 0):
        suite = _suite()
        if "-" not in name:
            raise TaskError(f"task {name!r} should be written domain-task, e.g. cartpole-swingup")
        domain, task = name.split("-", 1)
        if (domain, task) not in suite.ALL_TASKS:
            raise TaskError(f"unknown dm_control task {name!r}")
        self._rng = np.random.default_rng(seed)
        self._env = suite.load(domain, task, task_kwargs={"random": self._new_random()})
        if episode_steps:  # the suite's own time limit would end a longer episode first: use ours
            self._env._step_limit = float(episode_steps * action_repeat)
        physics = self._env.physics
        spec = self._env.action_spec()
        obs_spec = self._env.observation_spec()
        names: list[str] = []
        for key, s in obs_spec.items():
            n = int(np.prod(s.shape)) if s.shape else 1
            names += [key] if n == 1 else [f"{key}[{i}]" for i in range(n)]
        limit = float(self._env._step_limit)  # control steps per episode (dm_control's own count)
        if not np.isfinite(limit):  # lqr tasks run until they converge: cap them at 1,000 steps
            limit = 1000.0
        default_steps = int(np.ceil(limit / action_repeat))
        self.spec = TaskSpec(
            name=name,
            obs_dim=len(names),
            act_dim=int(np.prod(spec.shape)),
            action_low=np.asarray(spec.minimum, dtype=np.float64).reshape(-1),
            action_high=np.asarray(spec.maximum, dtype=np.float64).reshape(-1),
            control_period=float(self._env.control_timestep()) * action_repeat,
            episode_steps=episode_steps or default_steps,
            action_repeat=action_repeat,
            obs_names=tuple(names),
            reward_range=tuple(r * action_repeat for r in _REWARD_RANGE.get(domain, (0.0, 1.0))),
        )
        self._repeat = action_repeat
        self._physics = physics
        self._t = 0

    def _new_random(self) -> np.random.RandomState:
        return np.random.RandomState(int(self._rng.integers(2**31 - 1)))

    def _flat(self, observation) -> np.ndarray:
        return np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in observation.values()])

    def reset(self, seed: int | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._env.task._random = self._new_random()
        ts = self._env.reset()
        self._t = 0
        return self._flat(ts.observation), {}

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), self.spec.action_low, self.spec.action_high)
        reward = 0.0
        terminated = False
        for _ in range(self._repeat):
            ts = self._env.step(a)
            reward += float(ts.reward or 0.0)
            if ts.last():
                terminated = ts.discount == 0.0
                break
        self._t += 1
        truncated = (not terminated) and (ts.last() or self._t >= self.spec.episode_steps)
        return self._flat(ts.observation), reward, bool(terminated), bool(truncated), {}

    def render(self, width: int = 320, height: int = 240) -> np.ndarray:
        return self._physics.render(height=height, width=width, camera_id=0)

    def get_state(self) -> np.ndarray:
        return self._physics.get_state().copy()

    def set_state(self, state: np.ndarray) -> np.ndarray:
        with self._physics.reset_context():
            self._physics.set_state(np.asarray(state, dtype=np.float64))
        return self._flat(self._env.task.get_observation(self._physics))

    def reward_of_state(self) -> float:
        """The task's reward at the current physics state (one control step's worth)."""
        return float(self._env.task.get_reward(self._physics))

    @property
    def physics_timestep(self) -> float:
        return float(self._physics.timestep())

    @property
    def physics(self):
        """The dm_control Physics (model: ``physics.model.ptr``, data: ``physics.data.ptr``)."""
        return self._physics
