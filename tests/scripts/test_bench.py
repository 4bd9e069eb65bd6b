"""Smoke run of ``rtmpc bench planner`` with a tiny shape (a few seconds)."""

import json
import subprocess

import numpy as np
from rtmpc.scripts.cli import main
from tiny_run import RTMPC

TINY = ["--hidden", "8", "--layers", "1", "--ensemble", "2", "--obs-dim", "3", "--samples", "16", "--horizon", "3",
        "--repeats", "2", "--warmup", "1"]


def bench(*args, timeout=120):
    return subprocess.run([*RTMPC, "bench", "planner", *args], capture_output=True, text=True, timeout=timeout)


def test_bench_planner_json_has_the_promised_keys():
    planner = "mppi"
    res = bench(*TINY, "--planner", planner, "--threads", "2", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1  # --json: one line and nothing else
    out = json.loads(lines[0])
    for key in ["ms_per_plan_median", "ms_per_plan_p90", "model_evals_per_s", "flop_bound_fraction",
                "speedup_vs_torch", "flop_bound_ms", "overhead_fraction", "gemm", "machine", "command"]:
        assert key in out, key
    assert out["ms_per_plan_p90"] >= out["ms_per_plan_median"] > 0
    assert out["evals_per_plan"] == 3 * 16 * 2  # H * K * P, one iteration
    assert 0 < out["flop_bound_fraction"] and out["flop_bound_ms"] > 0
    assert [r["mode"] for r in out["results"] if r["impl"] == "rtmpc"] == ["default", "lanes", "intra", "intra-spin"]
    assert out["parity_max_abs"] <= 1e-4
    assert "rtmpc bench planner" in out["command"] and f"--planner {planner}" in out["command"]
    if any(r["impl"] == "pytorch_mppi" for r in out["results"]):
        assert out["speedup_vs_pytorch_mppi"] > 0
    # Equal work: every implementation counted the model evaluations its plans ran, and each
    # ran exactly the workload's I * H * K * P per plan; per-FLOP speedups for each baseline.
    assert out["equal_work"] is True
    counted = {(r["impl"], r["mode"]): r["evals_per_plan"] for r in out["results"]}
    assert {"torch", "torch-bmm"} <= {impl for impl, _ in counted}
    assert set(counted.values()) == {out["evals_per_plan"]}, counted
    for name in {r["impl"] for r in out["results"] if r["impl"] != "rtmpc"}:
        assert out[f"speedup_per_flop_vs_{name}"] > 0
    # The per-step timeline: the calling thread's plan time split into parts that add up to it.
    for r in out["results"]:
        if r["impl"] == "rtmpc":
            parts = r["timeline_ms"]
            assert set(parts) == {"onnx", "noise", "step", "join", "planner"}
            assert min(parts.values()) > -1e-6 and parts["onnx"] > 0
            assert r["ms_min"] * 0.999 <= sum(parts.values())
    assert out["speedup_per_flop_vs_best"] == min(out[f"speedup_per_flop_vs_{n}"]
                                                  for n in {r["impl"] for r in out["results"]} - {"rtmpc"})


def test_bench_planner_table_without_baselines():
    res = bench(*TINY, "--planner", "cem", "--no-baselines", "--threads", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("planner benchmark: cem K=16 H=3")
    assert "FLOP bound" in lines[1] and lines[2].split()[:3] == ["impl", "threads", "mode"]
    out = json.loads(lines[-1])
    assert not any(key.startswith("speedup_vs_") for key in out)


    assert [r["mode"] for r in out["results"]] == ["default"]  # one thread: one mode


def test_bench_planner_bad_option_is_one_line(capsys):
    assert main(["bench", "planner", *TINY, "--modes", "warp"]) == 2
    err = capsys.readouterr().err
    assert "unknown mode" in err and len(err.strip().splitlines()) == 1


def test_bench_planner_latent_json_has_the_same_keys():
    res = bench("--model", "latent", "--latent-dim", "8", "--hidden", "16", "--num-q", "2", "--samples", "32",
                "--prior-samples", "4", "--elites", "4", "--iterations", "2", "--repeats", "2", "--warmup", "1",
                "--threads", "1", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("ms_per_plan_median", "ms_per_plan_p90", "model_evals_per_s", "flop_bound_fraction",
                "speedup_vs_torch"):
        assert np.isfinite(out[key]) and out[key] > 0, key
    assert out["workload"]["model"] == "latent" and out["workload"]["horizon"] == 3  # TD-MPC2's default H
    assert out["evals_per_plan"] == 32 * 3 * 2 and "--model latent" in out["command"]


def test_bench_activation_json_has_shares_of_the_matmul():
    res = subprocess.run([*RTMPC, "bench", "activation", "--rows", "32", "--width", "16", "--seconds", "0.02",
                          "--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(out["ns_per_element"]) == {"matmul", "matmul_op", "layer", "quickgelu", "relu", "in_matmul", "in_layer"}
    assert out["share_of_matmul"]["matmul"] == 1.0
    assert np.isclose(out["ceiling_layer"], 1.0 / out["share_of_matmul"]["layer"])
    assert 0 < out["ceiling_network"] and out["hidden_layers"] == 2 and out["inputs"] == 6
    assert all(v > 0 for v in out["ns_per_element"].values())


def test_bench_activation_bad_option_is_one_line(capsys):
    assert main(["bench", "activation", "--rows", "0"]) == 2
    err = capsys.readouterr().err
    assert "argument --rows: 0 is out of range: must be >= 1" in err and len(err.strip().splitlines()) == 1


def grid(out, *args, timeout=300):
    return subprocess.run([*RTMPC, "bench", "planner-grid", "--horizons", "2", "--planners", "mppi", "--threads", "1",
                           "--repeats", "2", "--warmup", "1", "--out", str(out), *args, "--json", "--",
                           "--hidden", "8", "--layers", "1"], capture_output=True, text=True, timeout=timeout)


def test_planner_grid_runs_each_point_once_and_resumes(tmp_path):
    out = tmp_path / "grid.jsonl"
    res = grid(out, "--rows", "10")
    assert res.returncode == 0, res.stderr[-2000:]
    first = json.loads(res.stdout.strip().splitlines()[-1])
    assert first["points"] == 1 and first["all_equal_work"] is True
    assert first["rows"][0]["samples"] == 2 and first["rows"][0]["rtmpc_ms"] > 0
    # A killed run leaves a torn last line; the next run drops it, keeps the finished point
    # and runs only the new one.
    with out.open("a") as f:
        f.write('{"point": {"planner": "mppi", "ro')
    res = grid(out, "--rows", "10,20")
    assert res.returncode == 0, res.stderr[-2000:]
    second = json.loads(res.stdout.strip().splitlines()[-1])
    assert [r["rows"] for r in second["rows"]] == [10, 20]
    assert second["rows"][0] == first["rows"][0]  # the first point was read back, not rerun
    records = [json.loads(line) for line in out.read_text().splitlines() if not line.endswith('"ro')]
    assert [r["point"]["rows"] for r in records] == [10, 20]
    # Nothing left to run: a third run only reads the file back.
    res = grid(out, "--rows", "10,20")
    assert res.returncode == 0 and len(out.read_text().splitlines()) == 3


def test_planner_grid_bad_rows_is_one_line(tmp_path):
    res = grid(tmp_path / "g.jsonl", "--rows", "12")
    assert res.returncode != 0
    assert "--rows 12 is not a multiple of --particles 5" in res.stderr
    assert "Traceback" not in res.stderr
