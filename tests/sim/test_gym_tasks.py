"""Gymnasium environments as rtmpc tasks: gym:ID and package.module:factory names, from_gymnasium.

The contract test in test_tasks.py also runs over gym:Pendulum-v1, gym:CartPole-v1 and gym:HalfCheetah-v5.
"""

import sys
import textwrap

import numpy as np
import pytest
from rtmpc.sim.base import TaskError, TaskSpec

from rtmpc import sim

gym = pytest.importorskip("gymnasium")


class Counter(gym.Env):
    """Reward = the step's index (1, 2, ...); terminates after ``end`` steps; the observation counts steps."""

    metadata = {"render_modes": []}

    def __init__(self, end: int = 5, high: float = 1.0):
        self.end = end
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,))
        self.action_space = gym.spaces.Box(-high, high, shape=(1,))
        self.n = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.n = 0
        return np.array([0.0, self.np_random.uniform()], dtype=np.float32), {}

    def step(self, action):
        self.n += 1
        return np.array([self.n, 0.0], dtype=np.float32), float(self.n), self.n >= self.end, False, {}


def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg
    return msg


def test_specs_come_from_the_env():
    p = sim.make("gym:Pendulum-v1", seed=0)
    assert (p.spec.obs_dim, p.spec.act_dim, p.spec.n_actions, p.spec.episode_steps) == (3, 1, 0, 200)
    assert p.spec.control_period == pytest.approx(0.05) and p.physics_timestep == pytest.approx(0.05)
    np.testing.assert_array_equal(p.spec.action_high, [2.0])
    assert p.spec.obs_names == ("cos(theta)", "sin(theta)", "theta_dot")
    c = sim.make("gym:CartPole-v1", seed=0)
    assert (c.spec.n_actions, c.spec.act_dim, c.spec.episode_steps) == (2, 1, 500)
    np.testing.assert_array_equal([c.spec.action_low, c.spec.action_high], [[0.0], [1.0]])
    assert c.spec.control_period == pytest.approx(0.02)  # 1 / render_fps = CartPole's tau
    assert c.spec.describe()["n_actions"] == 2 and "n_actions" not in p.spec.describe()
    h = sim.make("gym:HalfCheetah-v5", seed=0, action_repeat=2)
    assert (h.spec.obs_dim, h.spec.act_dim, h.spec.episode_steps) == (17, 6, 500)
    assert h.spec.control_period == pytest.approx(0.1) and h.physics_timestep == pytest.approx(0.01)
    assert h.spec.obs_names[0] == "obs[0]"


def test_discrete_action_is_rounded_and_clipped():
    env = sim.make("gym:CartPole-v1", seed=0)
    raw = gym.make("CartPole-v1")
    env.reset(seed=4)
    raw.reset(seed=4)
    for a, index in [(0.7, 1), (-3.0, 0), (0.2, 0), (9.0, 1)]:
        np.testing.assert_allclose(env.step(np.array([a]))[0], raw.step(index)[0])


def test_action_repeat_sums_reward_and_stops_at_termination():
    env = sim.from_gymnasium(Counter(end=5), action_repeat=2)
    env.reset(seed=0)
    assert env.step(np.zeros(1))[1] == 1 + 2
    assert env.step(np.zeros(1))[1] == 3 + 4
    obs, reward, term, trunc, _ = env.step(np.zeros(1))  # step 5 terminates: step 6 is not taken
    assert (reward, term, trunc, obs[0]) == (5, True, False, 5)
    assert env.spec.episode_steps == 500  # no TimeLimit: the default 1,000 env steps, halved


def test_action_repeat_matches_single_steps():
    e1 = sim.make("gym:Pendulum-v1", seed=0)
    e3 = sim.make("gym:Pendulum-v1", seed=0, action_repeat=3)
    assert e3.spec.control_period == pytest.approx(0.15) and e3.spec.episode_steps == 67  # ceil(200 / 3)
    e1.reset(seed=2)
    e3.reset(seed=2)
    a = np.array([0.8])
    steps = [e1.step(a) for _ in range(3)]
    obs3, r3, *_ = e3.step(a)
    assert r3 == pytest.approx(sum(s[1] for s in steps))
    np.testing.assert_allclose(obs3, steps[-1][0])


def test_truncation_at_the_time_limit_and_episode_steps():
    env = sim.make("gym:Pendulum-v1", seed=0, action_repeat=3)
    env.reset(seed=0)
    flags = [env.step(np.zeros(1))[3] for _ in range(67)]  # the last agent step holds only 2 env steps
    assert flags == [False] * 66 + [True]
    longer = sim.make("gym:Pendulum-v1", seed=0, episode_steps=250)  # beyond the registered 200
    longer.reset(seed=0)
    flags = [longer.step(np.zeros(1))[3] for _ in range(250)]
    assert flags == [False] * 249 + [True]
    with pytest.raises(TaskError, match="max_episode_steps=250"):
        sim.from_gymnasium(gym.make("Pendulum-v1"), episode_steps=250)


def test_same_seed_same_episode():
    def episode(env, seed=None):
        obs = [env.reset(seed=seed)[0]]
        obs += [env.step(np.array([0.5 * np.sin(t)]))[0] for t in range(5)]
        return np.stack(obs)

    a, b = sim.make("gym:Pendulum-v1", seed=7), sim.make("gym:Pendulum-v1", seed=7)
    np.testing.assert_array_equal(episode(a), episode(b))  # the constructor's seed seeds the first reset
    np.testing.assert_array_equal(episode(a), episode(b))  # later resets continue the same stream
    np.testing.assert_array_equal(episode(a, seed=3), episode(b, seed=3))
    assert not np.array_equal(episode(a, seed=3)[0], episode(a, seed=4)[0])
    raw = gym.make("Pendulum-v1")
    np.testing.assert_allclose(a.reset(seed=3)[0], raw.reset(seed=3)[0])  # reset(seed=s) is Gymnasium's


def test_mujoco_state_roundtrip_and_render():
    env = sim.make("gym:HalfCheetah-v5", seed=0)
    env.reset(seed=0)
    env.step(np.full(6, 0.5))
    state = env.get_state()
    assert state.shape == (1 + 9 + 9,)
    a = env.step(np.full(6, -0.3))[0]
    obs = env.set_state(state)
    b = env.step(np.full(6, -0.3))[0]
    np.testing.assert_allclose(a, b)
    env.set_state(state)
    np.testing.assert_allclose(env.set_state(state), obs)
    frame = env.render(64, 48)
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    env.close()


def test_no_state_or_render_is_a_one_line_error():
    cart = sim.make("gym:CartPole-v1")
    with pytest.raises(TaskError) as err:
        cart.get_state()
    assert "MuJoCo" in one_line(err)
    bare = sim.from_gymnasium(gym.make("Pendulum-v1"))  # built without render_mode
    with pytest.raises(TaskError) as err:
        bare.render()
    assert "render_mode='rgb_array'" in one_line(err)
    with pytest.raises(TaskError) as err:
        sim.from_gymnasium(Counter()).render()
    assert "no rgb_array" in one_line(err)


def test_name_and_space_errors_are_one_line():
    with pytest.raises(TaskError) as err:
        sim.make("gym:Pendulm-v1")
    assert "Pendulum" in one_line(err) and "pprint_registry" in str(err.value)
    with pytest.raises(TaskError) as err:
        sim.from_gymnasium(Counter(high=np.inf), name="counter")
    assert "infinite bounds" in one_line(err) and "counter" in str(err.value)
    with pytest.raises(TaskError) as err:
        sim.make("no_such_module_xyz.tasks:make_env")
    assert "cannot import module 'no_such_module_xyz.tasks'" in one_line(err)
    with pytest.raises(TaskError) as err:
        sim.make("rtmpc.sim.tasks:no_such_factory")
    assert "point_target" in one_line(err)
    dict_obs = gym.make("Pendulum-v1")
    dict_obs.observation_space = gym.spaces.Dict({"x": gym.spaces.Box(-1, 1, (2,))})
    with pytest.raises(TaskError) as err:
        sim.from_gymnasium(dict_obs)
    assert "FlattenObservation" in one_line(err)


def test_missing_gymnasium_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # import gymnasium raises ImportError
    with pytest.raises(TaskError) as err:
        sim.make("gym:Pendulum-v1")
    assert "pip install 'rtmpc[sim]'" in one_line(err)


def test_factory_tasks(tmp_path, monkeypatch):
    (tmp_path / "rtmpc_test_factories.py").write_text(textwrap.dedent("""
        import gymnasium
        from rtmpc import sim

        def pendulum():
            return gymnasium.make("Pendulum-v1")

        def point(seed=None):
            return sim.make("point-target", seed=seed)

        def not_an_env():
            return 42
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    env = sim.make("rtmpc_test_factories:pendulum", seed=0, action_repeat=2)
    assert env.spec.name == "rtmpc_test_factories:pendulum" and env.spec.episode_steps == 100
    obs, _ = env.reset(seed=1)
    assert obs.shape == (3,) and env.step(np.zeros(1))[0].shape == (3,)
    point = sim.make("rtmpc_test_factories:point", seed=3, episode_steps=9)
    assert point.spec.name == "point-target" and point.spec.episode_steps == 9
    np.testing.assert_array_equal(point.reset()[0], sim.make("point-target", seed=3).reset()[0])  # got the seed
    with pytest.raises(TaskError) as err:
        sim.make("rtmpc_test_factories:point", action_repeat=2)
    assert "action_repeat = 1" in one_line(err)
    with pytest.raises(TaskError) as err:
        sim.make("rtmpc_test_factories:not_an_env")
    assert "returned a value of type int" in one_line(err)


def test_discrete_spec_is_checked():
    with pytest.raises(TaskError, match="n_actions = 3"):
        TaskSpec("bad", 2, 2, np.zeros(2), np.ones(2), 0.1, 10, n_actions=3)
    spec = TaskSpec("ok", 2, 1, np.zeros(1), np.array([2.0]), 0.1, 10, n_actions=3)
    assert spec.safe_action.tolist() == [0.0]
