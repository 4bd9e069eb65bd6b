"""The TD-MPC loop on a tiny budget: run files, planning over the exported model,
reproducibility of a seeded run, and resuming a killed run."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from rtmpc.configs import from_dict
from rtmpc.configs.rundir import RunDir
from rtmpc.models import load_model
from rtmpc.models.common.buffer import ReplayBuffer
from rtmpc.models.common.commit import committed_file
from rtmpc.models.tdmpc.config import LatentConfig
from rtmpc.models.tdmpc.model import load_latent
from rtmpc.models.tdmpc.train import train_latent
from rtmpc.planners import make_planner, planner_config

from rtmpc import sim

STEPS = 15  # agent steps per episode
CFG_DICT = {
    "model": {"latent_dim": 16, "hidden": 16, "enc_hidden": 16, "num_q": 2, "num_bins": 11},
    "train": {"batch_size": 16},
    "loop": {"total_steps": 4 * STEPS, "seed_steps": 20, "eval_every": 2 * STEPS, "eval_episodes": 1,
             "export_every": 100, "threads": 1, "parity_samples": 4}}
CFG = from_dict(LatentConfig, CFG_DICT)  # updates overlap planning (the default)
PLAN = planner_config(kind="mppi", horizon=3, samples=32, iterations=2, elites=8, prior_samples=4, alpha=0.0,
                     init_std=2.0)
TIMING = {"updates_per_s", "plan_ms_median", "plan_ms_p99", "collect_plan_ms_median", "export_s", "seconds",
          "wall_s"}


def make_env():
    return sim.make("point-target", seed=0, episode_steps=STEPS)


def loop(run, cfg=CFG, progress=None, resume=False, seed=0):
    return train_latent(run, make_env, lambda m, rng: make_planner(PLAN, m, rng=rng), cfg, seed=seed, resume=resume,
                        progress=progress)


def table(run):
    with open(run.metrics, newline="") as f:
        return list(csv.DictReader(f))


def test_loop_writes_run_files(tmp_path):
    run = RunDir(tmp_path / "run")
    rows = loop(run)
    assert [r["env_steps"] for r in rows] == [2 * STEPS, 4 * STEPS]
    for f in (committed_file(run, "buffer", ""), run.metrics, run.model, run.file("manifest.json"),
              committed_file(run, "latent", ""),
              run.file("learning_curve.png")):
        assert f.exists(), f
    t = table(run)
    assert [int(r["env_steps"]) for r in t] == [2 * STEPS, 4 * STEPS]
    assert all(np.isfinite(float(r["eval_return"])) for r in t)
    assert float(t[-1]["parity_max_abs"]) <= 1e-4
    # 20 seed steps, then 20 pretraining updates and one per step: 20 + 40 = 60 - 20 + 20.
    assert int(t[-1]["updates"]) == 20 + (4 * STEPS - 20)
    model = load_model(run.model)
    assert model.dims.kind == "latent" and model.dims.meta["task"] == "point-target"
    assert len(ReplayBuffer.load(committed_file(run, "buffer", ""))) == 4 * STEPS


def test_seeded_run_is_reproducible(tmp_path):
    """Two seeded runs agree, and a run whose updates overlap planning (on a second thread)
    agrees with one that makes them in turn: the updates only see transitions stored
    before they started, so the overlap changes the speed and nothing else."""
    a, b, c = RunDir(tmp_path / "a"), RunDir(tmp_path / "b"), RunDir(tmp_path / "c")
    loop(a)
    loop(b)
    loop(c, cfg=from_dict(LatentConfig, {**CFG_DICT, "loop": {**CFG_DICT["loop"], "overlap": False}}))
    ta = [{k: v for k, v in r.items() if k not in TIMING} for r in table(a)]
    ma = load_latent(committed_file(a, "latent", ""))
    for other in (b, c):
        assert [{k: v for k, v in r.items() if k not in TIMING} for r in table(other)] == ta, other.root
        mo = load_latent(committed_file(other, "latent", ""))
        for (k, v), w in zip(ma.state_dict().items(), mo.state_dict().values(), strict=True):
            assert torch.equal(v, w), (other.root, k)
        np.testing.assert_array_equal(ReplayBuffer.load(committed_file(a, "buffer", "")).act,
                                      ReplayBuffer.load(committed_file(other, "buffer", "")).act)


def test_killed_run_resumes(tmp_path):
    run = RunDir(tmp_path / "run")

    def kill_after_third(info):
        if info["episode"] == 3:
            raise KeyboardInterrupt  # as if the process were killed after episode 3

    with pytest.raises(KeyboardInterrupt):
        loop(run, progress=kill_after_third)
    assert len(ReplayBuffer.load(committed_file(run, "buffer", ""))) == 3 * STEPS and len(table(run)) == 1
    rows = loop(run, resume=True)
    assert [r["env_steps"] for r in rows] == [4 * STEPS]
    buf = ReplayBuffer.load(committed_file(run, "buffer", ""))
    assert len(buf) == 4 * STEPS and buf.num_episodes == 4
    t = table(run)
    assert [int(r["env_steps"]) for r in t] == [2 * STEPS, 4 * STEPS]
    assert int(t[-1]["updates"]) == 20 + (4 * STEPS - 20)  # no update lost or repeated
