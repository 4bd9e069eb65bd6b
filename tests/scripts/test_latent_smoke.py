"""Smoke runs of rtmpc train / export / control for the latent (TD-MPC) model, as a user
runs them, with tiny budgets: the same flags as for PETS."""

import json
import subprocess
import sys

import pytest
from tiny_run import rtmpc

TINY_LATENT = ["--set", "task.name=point-target", "--set", "task.episode_steps=15", "--set", "task.action_repeat=1",
        "--set", "latent.model.latent_dim=16", "--set", "latent.model.hidden=16", "--set", "latent.model.enc_hidden=16",
        "--set", "latent.model.num_q=2", "--set", "latent.model.num_bins=11", "--set", "latent.train.batch_size=16",
        "--set", "latent.loop.seed_steps=15", "--set", "latent.loop.eval_every=30",
        "--set", "latent.loop.eval_episodes=1", "--set", "latent.loop.threads=1",
        "--set", "latent.loop.parity_samples=4",
        "--set", "planner.samples=32", "--set", "planner.elites=8", "--set", "planner.prior_samples=4",
        "--set", "planner.iterations=2", "--steps", "30"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    res = rtmpc("train", "tdmpc_cartpole", "--out", str(out), *TINY_LATENT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "trained" in res.stdout and "30 env steps" in res.stdout
    return out


def test_export_prints_parity(run_dir):
    res = rtmpc("export", str(run_dir), "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["kind"] == "latent" and out["parity_max_abs"] <= 1e-4 and out["obs_dim"] == 6


def test_int8_export_of_a_latent_run_is_a_one_line_error(run_dir):
    res = rtmpc("export", str(run_dir), "--precision", "int8")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--precision int8 is not offered for latent models (only fp32)" in res.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("config", [True, False], ids=["--config", "run's config by default"])
def test_control_runs_the_latent_model(run_dir, config):
    """With or without --config, a model in a run directory plans with the run's planner
    (MPPI with prior samples; the defaults without a config would be CEM)."""
    flags = ["--config", str(run_dir / "config.yaml")] if config else []
    res = rtmpc("control", "--model", str(run_dir / "model.onnx"), *flags, "--json", "--cycles", "10")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["cycles"] == 10 and out["planner"] == "mppi" and out["task"] == "point-target"
    for key in ["return_mean", "misses", "rate_hz", "plan_ms_p50", "plan_ms_p99", "safety_events"]:
        assert key in out, key
    assert config or "settings from" in res.stderr


def test_resume_needs_the_same_config(run_dir):
    res = rtmpc("train", "tdmpc_cartpole", "--out", str(run_dir), "--resume", *TINY_LATENT[:-1], "60")
    assert res.returncode == 2 and "differs from the config given" in res.stderr  # --steps is part of the config
    before = (run_dir / "metrics.csv").read_text()
    res = rtmpc("train", "tdmpc_cartpole", "--out", str(run_dir), "--resume", *TINY_LATENT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resuming" in res.stderr and (run_dir / "metrics.csv").read_text() == before  # already complete


@pytest.mark.parametrize("args, message", [
    (["--set", "latent.model.latent_dim=20"], "latent.model.latent_dim = 20 is not a multiple of simnorm_dim"),
    (["--set", "latent.loop.utd=0"], "latent.loop.utd = 0.0 is out of range"),
    (["--set", "planner.prior_samples=600"], "prior_samples = 600 must be below samples = 512"),
])
def test_user_errors_are_one_line(args, message, tmp_path):
    res = rtmpc("train", "tdmpc_cartpole", "--out", str(tmp_path / "x"), *args)
    assert res.returncode == 2, res.stderr[-2000:]
    assert message in res.stderr.strip().splitlines()[-1] and "Traceback" not in res.stderr


def test_bench_tdmpc_speed_times_steps_in_turn_and_overlapped():
    res = subprocess.run([sys.executable, "-m", "rtmpc.scripts.bench_tdmpc", "speed", "--latent", "16",
                          "--hidden", "16", "--threads", "1", "--updates", "2", "--plans", "2", "--steps", "2"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert lines[0]["updates_per_s"] > 0 and lines[0]["plan_ms_p50"] > 0
    modes = {r["mode"]: r["step_ms"] for r in lines if "mode" in r}
    assert set(modes) == {"in turn, torch 1 / ORT 1", "overlap, torch 1 / ORT 1"} and all(v > 0 for v in modes.values())
