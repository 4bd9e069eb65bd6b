"""scripts/diag_mbpo_cartpole.py: its simulator model is the task's own step, and a bad run is one line."""

import numpy as np
import pytest
from rtmpc.scripts import diag_mbpo_cartpole as diag

from rtmpc import sim


def test_the_simulator_model_rebuilds_each_state_from_its_observation():
    env = sim.make(diag.TASK, seed=0, action_repeat=diag.REPEAT)
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    rows, acts, nexts, rewards = [], [], [], []
    for _ in range(40):  # a trajectory that reaches velocities and angles away from the start
        a = rng.uniform(-1, 1, 1).astype(np.float32)
        nxt, r, *_ = env.step(a)
        rows.append(obs), acts.append(a), nexts.append(nxt), rewards.append(r)
        obs = nxt
    model = diag.Simulator()
    pred, rew = model.step(np.asarray(rows, np.float32), np.asarray(acts, np.float32))
    np.testing.assert_allclose(pred, np.asarray(nexts), atol=1e-4)  # float32 observations
    np.testing.assert_allclose(rew, np.asarray(rewards), atol=1e-4)
    assert model.transitions == 40


def test_errors_on_a_directory_without_a_run_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        diag.main(["errors", str(tmp_path)])
    message = str(err.value)
    assert "has no committed MBPO agent" in message and "rtmpc train configs/mbpo_cartpole.yaml" in message
