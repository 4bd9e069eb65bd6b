"""The PETS loop on a tiny budget: files written, planner episodes over the exported model,
and a killed run resumes without losing a transition."""

import csv

import numpy as np
import pytest
from rtmpc.configs.rundir import RunDir
from rtmpc.models.common.buffer import ReplayBuffer
from rtmpc.models.common.commit import committed_file
from rtmpc.models.common.ensemble_config import EnsembleConfig, TrainConfig
from rtmpc.models.pets.config import PETSLoopConfig
from rtmpc.models.pets.train import train_pets
from rtmpc.planners import make_planner, planner_config

from rtmpc import sim

ENS = EnsembleConfig(members=2, hidden=16, layers=2)
FIT = TrainConfig(epochs=3, batch_size=32)
PLAN = planner_config(horizon=3, samples=16, iterations=1, elites=4)
STEPS = 15


def make_env():
    return sim.make("point-target", seed=0, episode_steps=STEPS)


def loop(run, episodes, progress=None, resume=False):
    return train_pets(run, make_env, lambda m: make_planner(PLAN, m, rng=0), ENS, FIT,
                      PETSLoopConfig(seed_episodes=1, episodes=episodes, threads=1), seed=0, resume=resume,
                      progress=progress)


def test_loop_writes_run_files(tmp_path):
    run = RunDir(tmp_path / "run")
    rows = loop(run, episodes=2)
    assert [r["kind"] for r in rows] == ["random", "planner"]
    for f in (committed_file(run, "buffer", ""), run.metrics, run.model, run.file("manifest.json"),
              committed_file(run, "ensemble", ""),
              run.file("learning_curve.png")):
        assert f.exists(), f
    with open(run.metrics) as f:
        table = list(csv.DictReader(f))
    assert [int(r["env_steps"]) for r in table] == [STEPS, 2 * STEPS]
    assert all(np.isfinite(float(r["eval_return"])) for r in table)
    assert float(table[1]["parity_max_abs"]) <= 1e-4


def test_killed_run_resumes_without_losing_transitions(tmp_path):
    run = RunDir(tmp_path / "run")

    def kill_after_second(row):
        if row["episode"] == 2:
            raise KeyboardInterrupt  # as if the process were killed after episode 2

    with pytest.raises(KeyboardInterrupt):
        loop(run, episodes=3, progress=kill_after_second)
    assert len(ReplayBuffer.load(committed_file(run, "buffer", ""))) == 2 * STEPS
    rows = loop(run, episodes=3, resume=True)
    assert [r["episode"] for r in rows] == [3]
    buf = ReplayBuffer.load(committed_file(run, "buffer", ""))
    assert len(buf) == 3 * STEPS and buf.num_episodes == 3
    with open(run.metrics) as f:
        assert [int(r["episode"]) for r in csv.DictReader(f)] == [1, 2, 3]
