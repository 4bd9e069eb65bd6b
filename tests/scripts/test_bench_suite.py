"""``python -m rtmpc.scripts.bench_suite`` on two tasks for a few hundred steps: its results
CSV, its summary, and that a stopped suite resumes without running a finished run again."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--steps", "300", "--eval-every", "100", "--eval-episodes", "1", "--config", str(ROOT / "configs/tdmpc.yaml"),
        "--set", "latent.loop.seed_steps=100", "--set", "latent.model.hidden=16", "--set",
        "latent.model.enc_hidden=16", "--set", "latent.model.latent_dim=16", "--set", "planner.samples=16",
        "--set", "planner.prior_samples=4", "--set", "planner.elites=4", "--set", "task.episode_steps=25",
        "--no-plot"]


def suite(out, *args, **kw):
    cmd = [sys.executable, "-m", "rtmpc.scripts.bench_suite", "--out", str(out), *TINY, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def results(out) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_suite_trains_each_task_and_resumes_after_a_kill(tmp_path):
    out = tmp_path / "suite"
    # A kill while the first run trains: at least one evaluation is on disk, the run unfinished.
    cmd = [sys.executable, "-m", "rtmpc.scripts.bench_suite", "--out", str(out), *TINY,
           "--tasks", "cartpole-swingup,pendulum-swingup", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    metrics = out / "cartpole-swingup-s0" / "metrics.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:  # header + the first evaluation
            break
        try:
            proc.wait(timeout=0.05)  # polls the file every 50 ms, or ends the wait if the suite ended
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is not None:
        pytest.fail("the suite ended before it could be killed mid-run")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "results.csv").exists()

    res = suite(out, "--tasks", "cartpole-swingup,pendulum-swingup", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    rows = results(out)
    by_run = {}
    for r in rows:
        by_run.setdefault((r["task"], r["seed"]), []).append(int(r["env_steps"]))
    # Every evaluation once, in order, up to the run's length: the killed run was resumed, not restarted
    # or duplicated. Evaluations come at the end of the episode that crosses each 100 env steps: an
    # episode is 25 agent steps, 200 env steps for cartpole (action repeat 8 by domain), 100 for
    # pendulum (4); a run ends at the agent step that reaches 300.
    assert by_run == {("cartpole-swingup", "0"): [200, 304], ("pendulum-swingup", "0"): [100, 200, 300]}, rows
    assert summary["tasks_complete"] == ["cartpole-swingup", "pendulum-swingup"]
    assert summary["mean_tdmpc2"] == pytest.approx((839.4 + 724.0) / 2, abs=0.05)  # the published 100k means
    assert all(t["tdmpc2_100k"] is not None and t["ratio"] is not None for t in summary["tasks"])

    # A finished suite is not trained again.
    before = metrics.stat().st_mtime_ns
    res = suite(out, "--tasks", "cartpole-swingup,pendulum-swingup")
    assert res.returncode == 0 and metrics.stat().st_mtime_ns == before
    assert "TD-MPC2" in res.stdout and "cartpole-swingup" in res.stdout

    # A call about one task keeps every run's rows in results.csv (its table shows the one task);
    # --report with no --tasks reports every run in the folder.
    res = suite(out, "--tasks", "cartpole-swingup", "--report", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    assert [t["task"] for t in json.loads(res.stdout.strip().splitlines()[-1])["tasks"]] == ["cartpole-swingup"]
    assert results(out) == rows
    res = suite(out, "--report", "--json")
    assert [t["task"] for t in json.loads(res.stdout.strip().splitlines()[-1])["tasks"]] == \
        ["cartpole-swingup", "pendulum-swingup"]


def test_suite_unknown_task_is_one_line(tmp_path):
    res = suite(tmp_path / "s", "--tasks", "cartpole-swingdown")
    assert res.returncode == 2
    assert "unknown task(s) cartpole-swingdown" in res.stderr and "Traceback" not in res.stderr
