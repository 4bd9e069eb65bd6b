"""How the command smoke tests run rtmpc: as a user does, in a subprocess, with a tiny
PETS run (point-target, 2 members of 2 x 16, 2 episodes of 15 steps) trained once per session."""

from __future__ import annotations

import subprocess
import sys

RTMPC = [sys.executable, "-m", "scripts.cli"]
TINY = ["--set", "task.name=point-target", "--set", "task.episode_steps=15", "--set", "model.members=2",
        "--set", "model.hidden=16", "--set", "model.layers=2", "--set", "train.epochs=2",
        "--set", "planner.samples=16", "--set", "planner.elites=4", "--set", "planner.horizon=3",
        "--set", "planner.iterations=1", "--set", "pets.episodes=2", "--set", "pets.threads=1"]


def rtmpc(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*RTMPC, *args], capture_output=True, text=True, timeout=timeout)
