"""Dyna-Q as a user runs it: the tabular maze experiment through rtmpc train (and a clear
refusal to export it)."""

from __future__ import annotations

import csv

from tiny_run import rtmpc


def test_the_dyna_maze_experiment_writes_the_figure_and_refuses_export(tmp_path):
    out = tmp_path / "maze"
    res = rtmpc("train", "dyna_maze", "--out", str(out), "--set", "dynaq.tabular.runs=3",
                "--set", "dynaq.tabular.agent.episodes=6")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "no model file (nothing to export)" in res.stdout
    assert (out / "dyna_maze.png").read_bytes()[:4] == b"\x89PNG"
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {"steps_n0", "steps_n5", "steps_n50", "eval_return"} <= set(rows[0])
    assert float(rows[-1]["steps_n50"]) < float(rows[0]["steps_n50"])  # it learns
    bad = rtmpc("export", str(out))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "tabular Dyna-Q run: there is no model file to export" in bad.stderr.strip().splitlines()[-1]
