"""How the command smoke tests run rtmpc: as a user does, in a subprocess, with a tiny
PETS run (point-target, 2 members of 2 x 16, 2 episodes of 15 steps) trained once per session."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

# The installed console script, as a user runs it (make test installs it into .venv): a wiring
# error between the entry point and the commands shows here, not only under `python -m`.
_SCRIPT = shutil.which("rtmpc", path=str(Path(sys.executable).parent))
if _SCRIPT is None:
    raise RuntimeError(f"no rtmpc console script beside {sys.executable}: install rtmpc first (make test does)")
RTMPC = [_SCRIPT]
TINY = ["--set", "task.name=point-target", "--set", "task.episode_steps=15", "--set", "model.members=2",
        "--set", "model.hidden=16", "--set", "model.layers=2", "--set", "train.epochs=2",
        "--set", "planner.samples=16", "--set", "planner.elites=4", "--set", "planner.horizon=3",
        "--set", "planner.iterations=1", "--set", "pets.episodes=2", "--set", "pets.threads=1",
        # one rate and one ORT thread (pets_cartpole's own loop: a 100 Hz servo, which point-target's
        # 20 ms physics step does not divide, on 2 threads); the servo tests ask for theirs
        "--set", "loop.servo_hz=null", "--set", "loop.threads=1"]


def rtmpc(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*RTMPC, *args], capture_output=True, text=True, timeout=timeout)
