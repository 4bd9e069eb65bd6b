"""Bad command-line values: one line on stderr naming the flag, the value and the allowed range,
exit status 2, no traceback; and the one resolution of the control rate."""

from __future__ import annotations

import os

import pytest
from tiny_run import rtmpc

CORES4 = 4 * (os.cpu_count() or 1)


@pytest.mark.parametrize("args, flag, shown, allowed", [
    (["control", "--model", "m.onnx", "--rate", "0"], "--rate", "0.0", "> 0 and <= 100000"),
    (["control", "--model", "m.onnx", "--rate", "-1"], "--rate", "-1.0", "> 0 and <= 100000"),
    (["control", "--model", "m.onnx", "--rate", "nan"], "--rate", "'nan' is not a finite number", ""),
    (["control", "--model", "m.onnx", "--rate", "1e6"], "--rate", "1000000.0", "> 0 and <= 100000"),
    (["control", "--model", "m.onnx", "--episodes", "0"], "--episodes", "0", ">= 1"),
    (["control", "--model", "m.onnx", "--cycles", "-1"], "--cycles", "-1", ">= 0"),
    (["control", "--model", "m.onnx", "--seed", "-1"], "--seed", "-1", ">= 0 and <= 4294967295"),
    (["control", "--model", "m.onnx", "--threads", "0"], "--threads", "0", f">= 1 and <= {CORES4}"),
    (["control", "--model", "m.onnx", "--threads", str(CORES4 + 1)], "--threads", str(CORES4 + 1),
     f"<= {CORES4}"),
    (["control", "--model", "m.onnx", "--rate", "fast"], "--rate", "'fast' is not a number", ""),
    (["bench", "loop", "--model", "m.onnx", "--rate", "0"], "--rate", "0.0", "> 0"),
    (["tune", "--model", "m.onnx", "--rate", "inf"], "--rate", "'inf' is not a finite number", ""),
    (["train", "pets_cartpole", "--seed", "-3"], "--seed", "-3", ">= 0"),
    (["train", "pets_cartpole", "--steps", "0"], "--steps", "0", ">= 1"),
    (["export", "run", "--samples", "0"], "--samples", "0", ">= 1"),
    (["bench", "planner", "--samples", "1"], "--samples", "1", ">= 2"),
    (["bench", "planner", "--horizon", "0"], "--horizon", "0", ">= 1 and <= 1000"),
    (["analyze", "run", "--horizon", "-2"], "--horizon", "-2", ">= 0 and <= 1000"),
    (["robot", "--task", "point-target", "--drop", "1.5"], "--drop", "1.5", "<= 1"),
])
def test_bad_flag_values_are_one_line(args, flag, shown, allowed):
    res = rtmpc(*args, timeout=60)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"argument {flag}" in lines[0] and shown in lines[0] and allowed in lines[0], lines[0]


def test_version_is_the_one_stamped_into_models():
    from rtmpc.models.common.fileio import rtmpc_version

    res = rtmpc("--version", timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == f"rtmpc {rtmpc_version()}"
