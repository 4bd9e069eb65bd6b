"""The rtmpc command: subcommands listed, user errors as one line with exit code 2."""

import subprocess

import pytest
from tiny_run import RTMPC


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


def _subcommands():
    from rtmpc.scripts.bench import BENCHES
    from rtmpc.scripts.cli import COMMANDS

    return [[name] for name in COMMANDS if name != "bench"] + [["bench", name] for name in BENCHES]


@pytest.mark.parametrize("words", _subcommands(), ids=" ".join)
def test_every_subcommand_is_wired_to_the_console_script(words):
    # each also has a real smoke run with a tiny budget (test_smoke, test_quickstart, test_tune_smoke, ...)
    out = run(*words, "--help")
    assert out.returncode == 0 and "usage: rtmpc" in out.stdout, out.stderr[-2000:]
