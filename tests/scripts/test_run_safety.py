"""A run directory has one writer, and an existing run is never silently overwritten."""

from __future__ import annotations

import os

from rtmpc.configs.rundir import RunDir
from tiny_run import TINY, rtmpc


def test_an_existing_run_needs_resume_or_overwrite(run_dir):
    res = rtmpc("train", "pets_cartpole", "--out", str(run_dir), *TINY)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "already holds a run: --resume to continue it, --overwrite to start over" in res.stderr
    metrics = (run_dir / "metrics.csv").read_text()
    assert metrics  # untouched
    res = rtmpc("train", "pets_cartpole", "--out", str(run_dir), *TINY, "--overwrite")
    assert res.returncode == 0, res.stderr[-2000:]


def test_a_second_writer_is_refused_with_the_holder_s_pid(run_dir):
    with RunDir(run_dir).lock():
        res = rtmpc("train", "pets_cartpole", "--out", str(run_dir), *TINY, "--resume")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"is being written by pid {os.getpid()}" in res.stderr.strip().splitlines()[-1]
    res = rtmpc("train", "pets_cartpole", "--out", str(run_dir), *TINY, "--resume")  # released
    assert res.returncode == 0, res.stderr[-2000:]
