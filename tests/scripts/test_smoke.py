"""Smoke runs of the rtmpc commands, as a user runs them, with tiny budgets."""

import json
import subprocess

import pytest
from tiny_run import RTMPC, TINY, rtmpc


def test_export_prints_parity(run_dir):
    res = rtmpc("export", str(run_dir), "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["parity_max_abs"] <= 1e-4 and out["obs_dim"] == 6


def test_int8_export_reports_its_error_and_controls(run_dir):
    res = rtmpc("export", str(run_dir), "--precision", "int8", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    q = json.loads(res.stdout.strip().splitlines()[-1])["int8"]
    assert q["model"].endswith("model.int8.onnx") and q["mse_int8"] > 0 and q["mean_rel_diff"] < 0.2
    res = rtmpc("control", "--model", q["model"], "--config", str(run_dir / "config.yaml"), "--json", "--cycles", "5")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["cycles"] == 5


def test_control_json_has_the_promised_keys(run_dir):
    res = rtmpc("control", "--model", str(run_dir / "model.onnx"), "--config", str(run_dir / "config.yaml"),
                "--json", "--cycles", "10")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ["episodes", "return_mean", "return_std", "cycles", "misses", "rate_hz", "plan_ms_p50",
                "plan_ms_p99", "jitter_ms_p50", "jitter_ms_p99", "safety_events"]:
        assert key in out, key
    assert out["cycles"] == 10
    assert (run_dir / "control" / "episode0" / "telemetry.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_with_another_config_is_refused(run_dir):
    res = rtmpc("train", "pets_cartpole", "--out", str(run_dir), "--resume", *TINY, "--set", "seed=5")
    assert res.returncode == 2 and "differs from the config given (seed 0 -> 5)" in res.stderr


@pytest.mark.parametrize("args, message", [
    (["train", "pets_cartpole", "--set", "planner.horizon=0"], "planner.horizon = 0 is out of range"),
    (["train", "pets_cartpole", "--set", "planner.horizn=3"], "unknown key planner.horizn"),
    (["train", "pets_cartpole", "--set", "task.name=cartpol-swingup"], "unknown task 'cartpol-swingup'"),
    (["train", "no_such_config"], "not found"),
])
def test_user_errors_are_one_line(args, message, tmp_path):
    res = rtmpc(*args, "--out", str(tmp_path / "x"))
    assert res.returncode == 2, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert message in last and "Traceback" not in res.stderr


def test_control_with_a_damaged_model_is_one_line(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    res = rtmpc("control", "--model", str(bad), "--task", "cartpole-swingup")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "model.onnx" in res.stderr.strip().splitlines()[-1]


def test_control_with_a_model_for_another_task_is_one_line(run_dir):
    res = rtmpc("control", "--model", str(run_dir / "model.onnx"), "--task", "cartpole-swingup")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "obs 6" in res.stderr and "obs 5" in res.stderr


@pytest.mark.parametrize("realtime", [[], ["--realtime"]])
def test_control_commit_next_runs_in_lockstep_and_realtime(run_dir, realtime):
    res = rtmpc("control", "--model", str(run_dir / "model.onnx"), "--config", str(run_dir / "config.yaml"),
                "--json", "--cycles", "10", "--commit", "next", *realtime)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["commit"] == "next" and out["cycles"] == 10 and "commit next" in res.stdout


def test_bench_loop_reports_both_modes(run_dir):
    res = rtmpc("bench", "loop", "--model", str(run_dir / "model.onnx"), "--cycles", "20", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for mode in ("sync", "async"):
        assert out[f"{mode}_cycles"] > 0
        for key in ("jitter_ms_p99", "misses", "skipped_slots", "plan_ms_p99", "rate_hz"):
            assert f"{mode}_{key}" in out
        # the machine's floor right after each mode: the same ticks, no work
        assert out[f"{mode}_bare_cycles"] == out[f"{mode}_cycles"] and out[f"{mode}_bare_plan_ms_p99"] is None
        assert 0 <= out[f"{mode}_bare_misses"] <= out[f"{mode}_bare_cycles"] and out[f"{mode}_bare_jitter_ms_max"] >= 0
    assert "sync:bare" in res.stdout and "async:bare" in res.stdout


def test_bench_loop_measures_the_mcap_stream_with_and_without(run_dir):
    res = rtmpc("bench", "loop", "--model", str(run_dir / "model.onnx"), "--cycles", "40", "--mode", "async",
                "--mcap", "both", "--set", "loop.servo_hz=50", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["async_cycles"] == 40 and out["async_mcap_cycles"] == 40 and "async+mcap" in res.stdout
    assert out["async_mcap_latency_p50_ratio"] > 0 and "MCAP stream, async: tick latency p50" in res.stdout


@pytest.mark.parametrize("realtime", [False, True])
def test_control_with_a_servo_reports_both_rates(run_dir, realtime):
    res = rtmpc("control", "--model", str(run_dir / "model.onnx"), "--servo", "50", "--cycles", "40", "--json",
                *(["--realtime"] if realtime else []))
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["servo_hz"] == 50 and out["loop_mode"] == "servo" and out["cycles"] == 40
    assert out["servo_ticks_per_step"] == 8 and out["replans"] >= 4 and "plan age p50" in res.stdout
    assert out["rt_priority"] in (0, 50) and ("loop thread at" in res.stdout)
    for key in ("replan_hz", "plans_late", "plan_starved", "plan_age_ms_p50", "plan_age_ms_p99", "misses"):
        assert key in out
    bad = rtmpc("control", "--model", str(run_dir / "model.onnx"), "--servo", "40", "--cycles", "4")  # lockstep
    assert bad.returncode == 2 and "whole number of the task's physics steps" in bad.stderr.strip().splitlines()[-1]


def test_control_takes_its_ort_threads_from_the_config_and_the_flag_wins(run_dir):
    """loop.threads is what the run's config deploys with (pets_cartpole: 2); --threads overrides it."""
    model = str(run_dir / "model.onnx")
    for extra, expected in ((["--set", "loop.threads=2"], 2), (["--set", "loop.threads=2", "--threads", "1"], 1)):
        res = rtmpc("control", "--model", model, "--cycles", "3", "--json", *extra)
        assert res.returncode == 0, res.stderr[-2000:]
        assert json.loads(res.stdout.strip().splitlines()[-1])["threads_ort"] == expected
        assert f"({expected} ONNX Runtime thread{'s' if expected > 1 else ''})" in res.stdout
    bad = rtmpc("control", "--model", model, "--cycles", "3", "--set", "loop.threads=0")
    assert bad.returncode == 2 and "loop.threads" in bad.stderr.strip().splitlines()[-1]


def test_bench_loop_soak_samples_memory_threads_and_files(run_dir):
    res = rtmpc("bench", "loop", "--model", str(run_dir / "model.onnx"), "--cycles", "60", "--soak", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["soak"] and out["mode"] == "async" and out["cycles"] == 60 and "memory growth" in res.stdout
    assert out["dropped"] == 0 and "statistics of the last" not in res.stdout
    first, last = out["samples"][0], out["samples"][-1]
    assert len(out["samples"]) >= 2 and last["t_s"] > first["t_s"] >= 0
    for s in out["samples"]:
        assert s["rss_mib"] > 10 and s["threads"] >= 1 and s["native_threads"] >= s["threads"] and s["open_files"] > 2


def test_bench_loop_soak_says_when_its_statistics_miss_cycles(run_dir):
    # the soak sizes the telemetry ring to its cycles; a ring set smaller loses the oldest
    # rows, and then the report says its misses and percentiles cover the last rows only
    res = rtmpc("bench", "loop", "--model", str(run_dir / "model.onnx"), "--cycles", "60", "--soak", "--json",
                "--set", "loop.telemetry_size=20")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["cycles"] == 20 and out["dropped"] == 40
    assert "statistics of the last 20 cycles only: 40 earlier ones" in res.stdout


def test_bench_ops_profiles_the_exported_graph(run_dir):
    # the tiny run: 2 members of 2 x 16 SiLU units, so 2 x (2 + 1) Gemms and 2 x 2 SiLU passes
    res = rtmpc("bench", "ops", "--model", str(run_dir / "model.onnx"), "--rows", "32", "--calls", "3", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    ops = {o["op"]: o for o in out["ops"]}
    assert out["kind"] == "pets" and ops["Gemm"]["nodes"] == 6 and ops["QuickGelu"]["nodes"] == 4
    assert abs(sum(o["share"] for o in out["ops"]) - 1) < 1e-9 and out["call_ms"] > 0


def test_bench_ops_names_an_unknown_dimension_in_one_line(run_dir):
    res = rtmpc("bench", "ops", "--model", str(run_dir / "model.onnx"), "--dim", "K=3")
    assert res.returncode == 2
    assert res.stderr.strip() == ("rtmpc bench: error: --dim K: the model's inputs have no such dimension "
                                  "(free dimensions: N)")


def test_output_into_a_closed_pipe_ends_quietly(run_dir):
    # `rtmpc bench ops ... | head -1`: the reader is gone before rtmpc prints
    proc = subprocess.Popen([*RTMPC, "bench", "ops", "--model", str(run_dir / "model.onnx"), "--rows", "8",
                             "--calls", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and b"Traceback" not in err and b"Exception ignored" not in err, err[-2000:]


def test_the_bare_baseline_counts_wakes_past_the_budget_and_whole_periods(monkeypatch):
    """bench loop's machine floor: a wake later than the tick budget (0.9 of the period) is a
    miss, one a whole period late is also a skipped slot. A clock that wakes tick 3 0.95 periods
    late and tick 7 2.5 periods late: tick 8 (due 1 period after 7) then wakes 1.5 periods late
    and tick 9 0.5 (in budget), as on a real machine."""
    from rtmpc.controller import base
    from rtmpc.controller.config import LoopConfig
    from rtmpc.scripts.bench_loop import bare_ticks

    period = 0.01
    lateness = {3: 0.0095, 7: 0.025}

    class Clock:
        def __init__(self):
            self.t, self.k = 100.0, -1

        def now(self):
            return self.t

        def sleep_until(self, t):
            self.k += 1
            self.t = max(self.t, t) + lateness.get(self.k, 0.0)

    monkeypatch.setattr(base, "MonotonicClock", Clock)
    row = bare_ticks(1 / period, 10, LoopConfig(rt_priority=0))
    assert (row["cycles"], row["misses"], row["skipped_slots"]) == (10, 3, 2)
    assert abs(row["jitter_ms_max"] - 25.0) < 1e-6 and row["jitter_ms_p50"] == 0.0
