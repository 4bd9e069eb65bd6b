"""Tasks from a user's MJCF file with a cost section, and their errors."""

import numpy as np
import pytest
from rtmpc.configs import ConfigError, from_dict
from rtmpc.sim.base import TaskError

from rtmpc import sim

ARM = """
<mujoco>
  <option timestep="0.01"/>
  <worldbody>
    <body name="link">
      <joint name="hinge" type="hinge" axis="0 0 1" damping="0.1"/>
      <geom type="capsule" fromto="0 0 0 .2 0 0" size=".02" mass=".2"/>
      <site name="tip" pos=".2 0 0"/>
    </body>
  </worldbody>
  <actuator><motor joint="hinge" ctrlrange="-1 1" ctrllimited="true"/></actuator>
</mujoco>
"""


@pytest.fixture
def arm(tmp_path):
    p = tmp_path / "arm.xml"
    p.write_text(ARM)
    return p


def _cost(**kw):
    data = {"targets": [{"kind": "joint", "name": "hinge", "target": [1.0], "weight": 1.0}]}
    data.update(kw)
    return from_dict(sim.CostConfig, data, prefix="task.cost")


def test_cost_task_builds_and_rewards_closeness(arm):
    env = sim.make(str(arm), cost=_cost(), seed=0)
    assert env.spec.act_dim == 1 and env.spec.obs_dim == 2
    env.reset(seed=0)
    r_push = sum(env.step(np.array([1.0]))[1] for _ in range(20))
    env.reset(seed=0)
    r_away = sum(env.step(np.array([-1.0]))[1] for _ in range(20))
    assert r_push > r_away  # pushing towards the 1 rad target costs less


def test_site_target_adds_site_position_to_observation(arm):
    cost = from_dict(sim.CostConfig, {"targets": [{"kind": "site", "name": "tip", "target": [0, .2, 0]}]})
    env = sim.make(str(arm), cost=cost, seed=0)
    assert env.spec.obs_names[-3:] == ("tip.pos[0]", "tip.pos[1]", "tip.pos[2]")
    assert env.spec.obs_names[0] == "qpos[0]"
    obs, _ = env.reset(seed=0)
    for _ in range(2):  # the tip of a 0.2 m link on a hinge about z, at reset and after turning it (the
        # same instant: before 2026-12-06 the site lagged the joint by one physics step)
        np.testing.assert_allclose(obs[-3:], [0.2 * np.cos(obs[0]), 0.2 * np.sin(obs[0]), 0.0], atol=1e-6)
        for _ in range(30):
            obs = env.step(np.array([1.0]))[0]
    assert obs[0] > 0.5  # it did turn


def test_termination_bounds(arm):
    env = sim.make(str(arm), cost=_cost(terminate=[{"joint": "hinge", "low": -0.05, "high": 0.05}]), seed=0)
    obs, _ = env.reset(seed=0)
    assert abs(obs[0]) <= 0.05
    for step in range(1, 51):  # the episode ends at the first state outside [-0.05, 0.05], not before
        obs, _, terminated, *_ = env.step(np.array([0.02]))
        assert terminated == (abs(obs[0]) > 0.05), (step, obs[0])
        if terminated:
            break
    assert terminated and step > 1


def test_unknown_joint_lists_what_the_model_has(arm):
    cost = from_dict(sim.CostConfig, {"targets": [{"kind": "joint", "name": "elbow", "target": [0]}]})
    with pytest.raises(TaskError, match="no joint named 'elbow'.*hinge"):
        sim.make(str(arm), cost=cost)


def test_model_without_actuators_is_an_error(tmp_path):
    p = tmp_path / "rock.xml"
    p.write_text('<mujoco><worldbody><body><joint name="j" type="free"/><geom size=".1"/></body>'
                 '</worldbody></mujoco>')
    with pytest.raises(TaskError, match="no actuators.*joints: j"):
        sim.make(str(p), cost=_cost())


def test_malformed_mjcf_is_one_line(tmp_path):
    p = tmp_path / "bad.xml"
    p.write_text("<mujoco><worldbody><body></mujoco>")
    with pytest.raises(TaskError) as err:
        sim.make(str(p), cost=_cost())
    assert "could not be loaded" in str(err.value) and "\n" not in str(err.value)


def test_mjcf_without_cost_is_an_error(arm):
    with pytest.raises(TaskError, match="cost section"):
        sim.make(str(arm))


def test_empty_cost_is_a_config_error():
    with pytest.raises(ConfigError, match="targets is empty"):
        sim.CostConfig()
