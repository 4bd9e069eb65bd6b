"""Smoke run of ``rtmpc analyze`` on a tiny model trained on the spot (point-target)."""

import json

import pytest
from rtmpc.models.analysis import read_suggested_horizon
from tiny_run import rtmpc


def test_analyze_writes_report_plots_and_json_line(run_dir):
    res = rtmpc("analyze", str(run_dir), "--episodes", "1", "--horizon", "4")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ["state_error_by_k", "return_error_by_k", "disagreement_error_spearman", "suggested_horizon"]:
        assert key in out, key
    assert len(out["state_error_by_k"]) == 4 and len(out["return_error_by_k"]) == 4
    assert 0 <= out["suggested_horizon"] <= 4
    assert "suggested horizon" in res.stdout  # the table
    for name in ["analysis.json", "analysis_error.png", "analysis_calibration.png"]:
        assert (run_dir / name).is_file(), name
    report = json.loads((run_dir / "analysis.json").read_text())
    assert set(report["by_source"]) == {"controller", "random"}
    assert read_suggested_horizon(run_dir) == out["suggested_horizon"]


@pytest.mark.parametrize("args, message", [
    ([], "give a run directory"),
    (["/no/such/run"], "not found"),
])
def test_analyze_user_errors_are_one_line(args, message):
    res = rtmpc("analyze", *args)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert message in res.stderr.strip().splitlines()[-1]


def test_analyze_too_long_a_horizon_is_one_line(run_dir, tmp_path):
    res = rtmpc("analyze", str(run_dir), "--episodes", "0", "--random-episodes", "1", "--horizon", "40",
                "--out", str(tmp_path))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "lower --horizon" in res.stderr.strip().splitlines()[-1]
