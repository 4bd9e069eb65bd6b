"""Gymnasium environments as rtmpc tasks: ``gym:ID`` names, ``package.module:factory`` names and
:func:`from_gymnasium`.

Any ``gymnasium.Env`` with a 1-D Box observation and a Box (finite bounds) or Discrete action
space becomes an :class:`~rtmpc.sim.base.Env`; Gymnasium's step semantics are already rtmpc's.
What the :class:`~rtmpc.sim.base.TaskSpec` takes from the env (times ``action_repeat`` where
it is per step):

- ``control_period``: ``env.unwrapped.dt`` where the env has one (MuJoCo envs: timestep x
  frame_skip; Pendulum, Acrobot), else ``1 / metadata["render_fps"]`` (classic-control envs
  draw one frame per step, so this is their simulated step: CartPole's tau = 0.02 s at 50 fps),
  else :data:`DEFAULT_PERIOD` = 0.05 s (a guess: the env states no time step at all).
- ``episode_steps``: the env's TimeLimit (``spec.max_episode_steps``), else
  :data:`DEFAULT_EPISODE_STEPS` = 1,000 env steps; divided by action_repeat, rounded up.
- ``reward_range``: (-inf, inf), since Gymnasium 1.x envs declare none, unless the unwrapped
  env still has a ``reward_range`` attribute.
- ``obs_names``: labels for the classic-control envs, else ``obs[0]``, ``obs[1]``, ...
- ``Discrete(n, start=s)`` actions: ``n_actions = n``, act_dim 1 with bounds [0, n - 1]; the
  entry is rounded and clipped to an index i and the env gets ``s + i``.

Seeding: ``reset(seed=s)`` is the env's own ``reset(seed=s)`` (the initial state Gymnasium
gives for s); ``reset()`` continues the env's random stream, which the first reset seeds
from the constructor's ``seed``. State (get_state/set_state) exists for MuJoCo envs
(``env.unwrapped.model`` and ``.data``): [time, qpos (nq), qvel (nv), act (na)], as in MJCFEnv.
"""

from __future__ import annotations

import importlib
import inspect

import numpy as np

from .base import Env, TaskError, TaskSpec

__all__ = ["GymEnv", "from_gymnasium", "make_gym", "make_from_factory", "DEFAULT_PERIOD", "DEFAULT_EPISODE_STEPS"]

DEFAULT_PERIOD = 0.05  # seconds per env step for an env with neither ``dt`` nor ``render_fps``
DEFAULT_EPISODE_STEPS = 1000  # env steps per episode for an env without a TimeLimit

# Observation labels of Gymnasium's classic-control envs (by class), from their documentation.
_OBS_NAMES = {
    "CartPoleEnv": ("cart.x", "cart.vx", "pole.angle", "pole.angvel"),
    "PendulumEnv": ("cos(theta)", "sin(theta)", "theta_dot"),
    "MountainCarEnv": ("car.x", "car.vx"),
    "Continuous_MountainCarEnv": ("car.x", "car.vx"),
    "AcrobotEnv": ("cos(theta1)", "sin(theta1)", "cos(theta2)", "sin(theta2)", "theta1_dot", "theta2_dot"),
}

_INSTALL = "pip install 'rtmpc[sim]'"


def _gymnasium():
    try:
        import gymnasium
    except ImportError as err:
        raise TaskError(f"Gymnasium tasks need gymnasium ({err}): {_INSTALL}") from None
    return gymnasium


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _wrappers(env) -> list:
    """The wrapper chain of ``env``, outermost first (empty for a bare env)."""
    gym = _gymnasium()
    chain = []
    while isinstance(env, gym.Wrapper):
        chain.append(env)
        env = env.env
    return chain


def _time_limit(env) -> int | None:
    """Env steps per episode by the env's TimeLimit wrappers (the tightest), else its spec, else None."""
    gym = _gymnasium()
    limits = [int(w._max_episode_steps) for w in _wrappers(env) if isinstance(w, gym.wrappers.TimeLimit)]
    if limits:
        return min(limits)
    spec = env.spec
    return int(spec.max_episode_steps) if spec is not None and spec.max_episode_steps else None


def _base_period(env) -> float:
    dt = getattr(env.unwrapped, "dt", None)
    if isinstance(dt, (int, float, np.number)) and np.isfinite(dt) and dt > 0:
        return float(dt)
    fps = (env.metadata or {}).get("render_fps")
    if isinstance(fps, (int, float, np.number)) and fps > 0:
        return 1.0 / float(fps)
    return DEFAULT_PERIOD


def _mujoco_parts(env):
    """(mujoco, model, data) of a MuJoCo-based env, else None."""
    u = env.unwrapped
    model, data = getattr(u, "model", None), getattr(u, "data", None)
    if model is None or data is None:
        return None
    import mujoco

    if isinstance(model, mujoco.MjModel) and isinstance(data, mujoco.MjData):
        return mujoco, model, data
    return None


class GymEnv(Env):
    """A ``gymnasium.Env`` as an rtmpc task (see the module docstring for what the spec holds).

    ``step(a)``: ``a`` has shape (A,) (A = 1 for a discrete task); it is clipped to the bounds,
    then applied for ``action_repeat`` env steps, summing rewards and stopping early when the
    env terminates or truncates. ``info`` is the last env step's. ``self.env`` is the wrapped env.
    """

    def __init__(self, env, *, name: str | None = None, action_repeat: int = 1, episode_steps: int = 0,
                 seed: int | np.random.Generator | None = None):
        gym = _gymnasium()
        if not isinstance(env, gym.Env):
            raise TaskError(f"from_gymnasium needs a gymnasium.Env, got a {type(env).__name__}")
        if action_repeat < 1:
            raise TaskError(f"action_repeat = {action_repeat} must be >= 1")
        if episode_steps < 0:
            raise TaskError(f"episode_steps = {episode_steps} must be >= 0 (0 = the env's own limit)")
        name = name or (f"gym:{env.spec.id}" if env.spec is not None else type(env.unwrapped).__name__)
        obs_space, act_space = env.observation_space, env.action_space
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
            raise TaskError(f"task {name}: observation space {obs_space} is not a 1-D Box: wrap the env in "
                            f"gymnasium.wrappers.FlattenObservation")
        self._start = 0
        if isinstance(act_space, gym.spaces.Discrete):
            n_actions = int(act_space.n)
            if n_actions < 2:
                raise TaskError(f"task {name}: action space {act_space} leaves nothing to choose (need n >= 2)")
            low, high = np.zeros(1), np.array([n_actions - 1.0])
            self._start = int(act_space.start)
        elif isinstance(act_space, gym.spaces.Box):
            n_actions = 0
            low = np.asarray(act_space.low, dtype=np.float64).reshape(-1)
            high = np.asarray(act_space.high, dtype=np.float64).reshape(-1)
            bad = np.flatnonzero(~(np.isfinite(low) & np.isfinite(high)))
            if bad.size:
                raise TaskError(f"task {name}: action space {act_space} has infinite bounds (entries "
                                f"{bad.tolist()}); rtmpc plans within finite bounds: give the env a Box with the "
                                f"actuators' real limits (e.g. through a gymnasium.ActionWrapper)")
        else:
            raise TaskError(f"task {name}: action space {act_space} is neither a Box nor a Discrete: "
                            f"rtmpc tasks take one of those")

        base = _base_period(env)
        limit = _time_limit(env)
        if episode_steps and limit is not None and episode_steps * action_repeat > limit:
            raise TaskError(f"task {name}: episode_steps = {episode_steps} x action_repeat = {action_repeat} is "
                            f"beyond the env's TimeLimit of {limit} steps: build it with "
                            f"gymnasium.make(ID, max_episode_steps={episode_steps * action_repeat})")
        default_steps = int(np.ceil((limit or DEFAULT_EPISODE_STEPS) / action_repeat))
        obs_dim = int(obs_space.shape[0])
        names = _OBS_NAMES.get(type(env.unwrapped).__name__, ())
        if len(names) != obs_dim or not type(env.unwrapped).__module__.startswith("gymnasium.envs."):
            names = tuple(f"obs[{i}]" for i in range(obs_dim))
        declared = getattr(env.unwrapped, "reward_range", None)
        try:
            lo, hi = (float(declared[0]), float(declared[1])) if declared is not None else (-np.inf, np.inf)
        except (TypeError, ValueError, IndexError):
            lo, hi = -np.inf, np.inf
        self.spec = TaskSpec(name=name, obs_dim=obs_dim, act_dim=low.shape[0], action_low=low, action_high=high,
                             control_period=base * action_repeat, episode_steps=episode_steps or default_steps,
                             action_repeat=action_repeat, obs_names=names,
                             reward_range=(lo * action_repeat, hi * action_repeat), n_actions=n_actions)
        self.env = env
        self._repeat = action_repeat
        self._base_period = base
        self._mj = _mujoco_parts(env)
        self._t = 0
        if isinstance(seed, np.random.Generator):
            seed = int(seed.integers(2**31 - 1))
        self._first_seed = None if seed is None else int(seed)

    def _flat(self, obs) -> np.ndarray:
        return np.asarray(obs, dtype=np.float64).reshape(-1)

    def _action(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), self.spec.action_low, self.spec.action_high)
        if self.spec.n_actions:
            return self._start + int(np.rint(a[0]))
        space = self.env.action_space
        return a.astype(space.dtype).reshape(space.shape)

    def reset(self, seed: int | None = None):
        if seed is None:
            seed, self._first_seed = self._first_seed, None
        else:
            self._first_seed = None
        obs, info = self.env.reset(seed=seed)
        self._t = 0
        return self._flat(obs), dict(info)

    def step(self, action):
        a = self._action(action)
        reward = 0.0
        terminated = env_truncated = False
        info: dict = {}
        for _ in range(self._repeat):
            obs, r, terminated, env_truncated, info = self.env.step(a)
            reward += float(r)
            if terminated or env_truncated:
                break
        self._t += 1
        terminated = bool(terminated)
        truncated = (not terminated) and (bool(env_truncated) or self._t >= self.spec.episode_steps)
        return self._flat(obs), reward, terminated, truncated, dict(info)

    def render(self, width: int = 320, height: int = 240) -> np.ndarray:
        """The env's own ``rgb_array`` frame, resampled (nearest pixel) to (height, width, 3) uint8."""
        modes = (self.env.metadata or {}).get("render_modes") or []
        if "rgb_array" not in modes:
            raise TaskError(f"task {self.spec.name} cannot render: its env has no rgb_array render mode "
                            f"(render modes: {list(modes)})")
        if self.env.render_mode != "rgb_array":
            raise TaskError(f"task {self.spec.name} cannot render: its env was built with render_mode = "
                            f"{self.env.render_mode!r}; build it with gymnasium.make(ID, render_mode='rgb_array')")
        gym = _gymnasium()
        try:
            frame = self.env.render()
        except gym.error.DependencyNotInstalled as err:
            raise TaskError(f"task {self.spec.name} cannot render: {_first_line(err)}") from None
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] < 3:
            raise TaskError(f"task {self.spec.name} rendered an array of shape {frame.shape}, not (H, W, 3)")
        frame = frame[..., :3]
        if frame.shape[:2] != (height, width):
            rows = np.arange(height) * frame.shape[0] // height
            cols = np.arange(width) * frame.shape[1] // width
            frame = frame[rows][:, cols]
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def _need_mujoco(self):
        if self._mj is None:
            raise TaskError(f"task {self.spec.name} has no MuJoCo state (env.unwrapped.model and .data): "
                            f"get_state/set_state work for Gymnasium MuJoCo envs only")
        return self._mj

    def get_state(self) -> np.ndarray:
        """[time, qpos (nq), qvel (nv), act (na)] of the MuJoCo data."""
        _, _, d = self._need_mujoco()
        return np.concatenate([[d.time], d.qpos, d.qvel, d.act]).astype(np.float64)

    def set_state(self, state: np.ndarray) -> np.ndarray:
        mujoco, m, d = self._need_mujoco()
        s = np.asarray(state, dtype=np.float64).reshape(-1)
        size = 1 + m.nq + m.nv + m.na
        if s.size != size:
            raise TaskError(f"task {self.spec.name}: state has {s.size} entries, expected {size} "
                            f"(time, {m.nq} qpos, {m.nv} qvel, {m.na} act)")
        d.time = s[0]
        d.qpos[:] = s[1:1 + m.nq]
        d.qvel[:] = s[1 + m.nq:1 + m.nq + m.nv]
        d.act[:] = s[1 + m.nq + m.nv:]
        mujoco.mj_forward(m, d)
        get_obs = getattr(self.env.unwrapped, "_get_obs", None)
        if get_obs is None:
            raise TaskError(f"task {self.spec.name}: state set, but its env has no _get_obs() to observe it")
        obs = get_obs()
        gym = _gymnasium()
        for w in reversed(_wrappers(self.env)):  # innermost first, as a step would see it
            if isinstance(w, gym.ObservationWrapper):
                obs = w.observation(obs)
        return self._flat(obs)

    @property
    def physics_timestep(self) -> float:
        """The MuJoCo model's timestep, else one env step (control_period / action_repeat)."""
        return float(self._mj[1].opt.timestep) if self._mj is not None else self._base_period

    def close(self) -> None:
        self.env.close()


def from_gymnasium(env, *, name: str | None = None, action_repeat: int = 1, episode_steps: int = 0,
                   seed: int | np.random.Generator | None = None) -> GymEnv:
    """Wrap a ``gymnasium.Env`` (1-D Box observation; Box or Discrete action) as an rtmpc task.

    ``name`` defaults to ``gym:<spec id>``; ``episode_steps`` (agent steps, 0 = the env's
    TimeLimit) may not go past the env's TimeLimit; ``seed`` seeds the first ``reset()``.
    """
    return GymEnv(env, name=name, action_repeat=action_repeat, episode_steps=episode_steps, seed=seed)


def _render_modes(gym, env_spec) -> list[str]:
    creator = env_spec.entry_point
    if isinstance(creator, str):
        from gymnasium.envs.registration import load_env_creator

        creator = load_env_creator(creator)
    metadata = getattr(creator, "metadata", None)
    return list(metadata.get("render_modes") or []) if isinstance(metadata, dict) else []


def make_gym(env_id: str, *, action_repeat: int = 1, episode_steps: int = 0,
             seed: int | np.random.Generator | None = None) -> GymEnv:
    """``gymnasium.make(env_id)`` as an rtmpc task named ``gym:<env_id>``; rendering is on where the env has it.

    ``env_id`` may name a module to import first (Gymnasium's ``module:ID`` form).
    """
    gym = _gymnasium()
    task = f"gym:{env_id}"
    module, _, bare_id = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise TaskError(f"task {task}: cannot import {module!r} to register {bare_id!r} ({_first_line(err)}): "
                            f"install the package that provides it") from None
    try:
        env_spec = gym.spec(bare_id)
        render = "rgb_array" in _render_modes(gym, env_spec)
    except (gym.error.Error, ImportError, AttributeError) as err:
        raise TaskError(f"unknown Gymnasium environment {bare_id!r} ({_first_line(err)}): "
                        f"gymnasium.pprint_registry() lists them") from None
    kwargs: dict = {"render_mode": "rgb_array"} if render else {}
    if episode_steps:  # the TimeLimit must not end our (longer) episodes first
        kwargs["max_episode_steps"] = episode_steps * action_repeat
    try:
        env = gym.make(env_spec, **kwargs)
    except gym.error.DependencyNotInstalled as err:
        raise TaskError(f"task {task} cannot be built: {_first_line(err)}") from None
    return GymEnv(env, name=task, action_repeat=action_repeat, episode_steps=episode_steps, seed=seed)


def make_from_factory(name: str, *, action_repeat: int = 1, episode_steps: int = 0,
                      seed: int | np.random.Generator | None = None) -> Env:
    """The task ``package.module:factory``: ``factory()`` (``factory(seed=seed)`` where it takes a
    ``seed`` parameter) returns a ``gymnasium.Env`` (wrapped by :func:`from_gymnasium`) or an
    rtmpc :class:`Env` (used as is: its action repeat must already be the one asked for)."""
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise TaskError(f"task {name!r} should be written package.module:factory, e.g. mytasks.arm:make_env")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise TaskError(f"task {name!r}: cannot import module {module_name!r} ({_first_line(err)}): check the name, "
                        f"and put its folder on PYTHONPATH or pip install its package") from None
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))[:8]
            raise TaskError(f"task {name!r}: module {module_name!r} has no {attr!r} (its callables: "
                            f"{', '.join(found) or 'none'})")
    if not callable(factory):
        raise TaskError(f"task {name!r}: {module_name}.{attr} is a {type(factory).__name__}, not a callable factory")
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature: just call it
        params = None
    kwargs = {"seed": seed} if params is not None and "seed" in params else {}
    if params is not None:
        try:
            inspect.signature(factory).bind(**kwargs)
        except TypeError as err:
            raise TaskError(f"task {name!r}: {module_name}.{attr} cannot be called without arguments ({err}): "
                            f"give its parameters defaults (a `seed` parameter gets make's seed)") from None
    env = factory(**kwargs)
    if isinstance(env, Env):
        if action_repeat != 1 and env.spec.action_repeat != action_repeat:
            raise TaskError(f"task {name!r}: the factory's env has action_repeat = {env.spec.action_repeat}, the "
                            f"config asks for {action_repeat}: build the repeat into the factory or set 1")
        return env
    gym = _gymnasium()
    if not isinstance(env, gym.Env):
        raise TaskError(f"task {name!r}: the factory returned a value of type {type(env).__name__}, not a "
                        f"gymnasium.Env or an rtmpc Env")
    return GymEnv(env, name=name, action_repeat=action_repeat, episode_steps=episode_steps, seed=seed)
