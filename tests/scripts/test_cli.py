"""The rtmpc command: subcommands listed, user errors as one line with exit code 2."""

import subprocess
import sys

RTMPC = [sys.executable, "-m", "scripts.cli"]


def run(*args):
    return subprocess.run([*RTMPC, *args], capture_output=True, text=True, timeout=120)


def test_help_lists_subcommands():
    out = run("--help")
    assert out.returncode == 0
    assert "tasks" in out.stdout


def test_tasks_lists_dimensions():
    out = run("tasks")
    assert out.returncode == 0
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("cartpole-swingup "))
    assert line.split()[1:5] == ["5", "1", "0.0100", "100.0"]
