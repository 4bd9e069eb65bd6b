"""rtmpc tune: a 2-trial study on a tiny model, resumed; failed and slow trials; unreachable storage."""

from __future__ import annotations

import json

import pytest
import rtmpc.scripts.control as control_cmd
import yaml
from tiny_run import rtmpc

optuna = pytest.importorskip("optuna")

SMALL_SPACE = ["--space", "horizon_max=5", "--space", "samples_max=48", "--space", "iterations_max=2"]


@pytest.fixture(scope="module")
def model(run_dir):
    return run_dir / "model.onnx"


def _states(out, name):
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")
    return [t.state.name for t in study.trials]


def test_tune_resumes_the_study_and_writes_a_loadable_best_yaml(model, tmp_path):
    out = tmp_path / "tune"
    args = ["tune", "--model", str(model), "--out", str(out), "--planner", "cem", *SMALL_SPACE, "--json"]
    first = rtmpc(*args, "--trials", "1")
    assert first.returncode == 0, first.stderr[-2000:]
    name = json.loads(first.stdout.strip().splitlines()[-1])["study"]
    assert _states(out, name) == ["COMPLETE"]
    # The same command with more trials continues the study: trial 0 is kept, one more is run.
    second = rtmpc(*args, "--trials", "2", "--check-cycles", "10")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "1 of 2 trials finished" in second.stderr and "trial 1 (2/2)" in second.stderr
    assert _states(out, name) == ["COMPLETE", "COMPLETE"]
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["trials"]["complete"] == 2 and summary["best"] is not None
    # best.yaml was then run on the wall-clock robot (--check-cycles)
    assert summary["check"]["cycles"] == 10 and 0 <= summary["check"]["misses"] <= 10
    assert "wall-clock check of best.yaml" in second.stdout
    for f in ("pareto.png", "front.csv", "trials.csv", "tune.json", "best.yaml"):
        assert (out / f).stat().st_size > 0, f
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["planner"]["kind"] == "cem" and best["planner"]["horizon"] <= 5
    assert best["loop"]["rate_hz"] == pytest.approx(summary["rate_hz"])
    assert summary["best"]["plan_ms_p99"] <= summary["limit_ms"]
    # ... and `rtmpc control --config best.yaml` runs it.
    ctl = rtmpc("control", "--model", str(model), "--config", str(out / "best.yaml"), "--cycles", "5", "--json")
    assert ctl.returncode == 0, ctl.stderr[-2000:]
    assert json.loads(ctl.stdout.strip().splitlines()[-1])["planner"] == "cem"
    # Resuming with settings that make the trials incomparable is refused.
    other = rtmpc(*args, "--trials", "2", "--episodes-per-trial", "2")
    assert other.returncode == 2 and "not comparable" in other.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("url", ["sqlite:////nonexistent-dir/sub/study.db",
                                 "postgresql://user:secret@127.0.0.1:1/rtmpc", "not a url"])
def test_unreachable_storage_is_a_one_line_error(model, tmp_path, url):
    res = rtmpc("tune", "--model", str(model), "--out", str(tmp_path / "t"), "--storage", url, "--trials", "1",
                timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert "cannot open the study storage" in last and "Traceback" not in res.stderr
    assert "secret" not in res.stderr  # the password is not printed


def _fake_result(ret, p99, p50=None, stop_reason="done"):
    return {"return_mean": ret, "return_std": 0.0, "returns": [ret], "plan_ms_p50": p99 if p50 is None else p50,
            "plan_ms_p99": p99, "plan_ms_max": p99, "misses": 0, "cycles": 15, "stop_reason": stop_reason}


def test_failed_diverged_and_slow_trials_are_recorded_and_the_study_goes_on(model, tmp_path, monkeypatch):
    """run_episodes is replaced by a script of outcomes: no simulation, only the study's bookkeeping."""
    from rtmpc.scripts.cli import main
    from rtmpc.scripts.tune import PROBE_CYCLES

    outcomes = iter([
        ("probe", _fake_result(1.0, 1.0)), ("full", _fake_result(10.0, 5.0)),  # 0: complete
        ("probe", _fake_result(1.0, 1.0)), ("full", RuntimeError("model blew up")),  # 1: failed
        ("probe", _fake_result(1.0, 1.0)), ("full", _fake_result(float("nan"), 5.0)),  # 2: diverged -> failed
        ("probe", _fake_result(1.0, 1e6)),  # 3: probe far over the budget -> pruned, no full run
        ("probe", _fake_result(1.0, 1.0)), ("full", _fake_result(20.0, 1e6)),  # 4: complete, too slow for best
    ])

    def fake_run_episodes(model_path, task, cfg, *, cycles=0, **kw):
        what, result = next(outcomes)
        assert (cycles == PROBE_CYCLES) == (what == "probe")
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(control_cmd, "run_episodes", fake_run_episodes)
    out = tmp_path / "tune"
    rc = main(["tune", "--model", str(model), "--out", str(out), "--trials", "5", "--study", "s", "--json"])
    assert rc == 0
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "FAIL", "PRUNED", "COMPLETE"]
    assert "model blew up" in study.trials[1].user_attrs["error"]
    assert "TrialDiverged" in study.trials[2].user_attrs["error"]
    summary = json.loads((out / "tune.json").read_text())
    assert summary["trials"] == {"complete": 2, "pruned": 1, "failed": 2, "running": 0, "interrupted": 0}
    assert summary["best"]["trial"] == 0  # trial 4 has more return but does not fit
    assert [r["trial"] for r in summary["front"]] == [0, 4]
    assert next(outcomes, None) is None  # the study stopped at 5 finished trials


def test_no_trial_fits_exits_1_without_best_yaml(model, tmp_path, monkeypatch):
    from rtmpc.scripts.cli import main

    monkeypatch.setattr(control_cmd, "run_episodes", lambda *a, **kw: _fake_result(1.0, 1e4, p50=1.0))
    out = tmp_path / "tune"
    (out).mkdir()
    (out / "best.yaml").write_text("planner: {}\n")  # stale: must not survive
    assert main(["tune", "--model", str(model), "--out", str(out), "--trials", "1"]) == 1
    assert not (out / "best.yaml").exists() and (out / "pareto.png").exists()


def test_analysis_json_beside_the_model_caps_the_horizon(model, tmp_path, monkeypatch, caplog):
    import shutil

    from rtmpc.scripts.cli import main
    from rtmpc.scripts.tune import read_horizon_cap

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(model, run / "model.onnx")
    assert read_horizon_cap(run / "model.onnx") is None
    (run / "analysis.json").write_text("{not json")
    assert read_horizon_cap(run / "model.onnx") is None  # unreadable: ignored with a warning
    (run / "analysis.json").write_text(json.dumps({"suggested_horizon": 4, "other": 1}))
    assert read_horizon_cap(run / "model.onnx") == 4
    monkeypatch.setattr(control_cmd, "run_episodes", lambda *a, **kw: _fake_result(1.0, 1.0))
    with caplog.at_level("INFO", logger="rtmpc.scripts.tune"):
        assert main(["tune", "--model", str(run / "model.onnx"), "--trials", "6", "--study", "s"]) == 0
    assert "horizon searched up to 4" in caplog.text and "analysis.json" in caplog.text
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{run / 'tune' / 'study.db'}")
    assert len(study.trials) == 6 and max(t.params["horizon"] for t in study.trials) <= 4


def test_a_config_error_inside_a_trial_fails_that_trial_only(model, tmp_path, monkeypatch):
    from rtmpc.configs import ConfigError
    from rtmpc.scripts.cli import main

    def refuse(*a, **kw):
        raise ConfigError("loop.rate_hz = 1e9 cannot be kept")

    monkeypatch.setattr(control_cmd, "run_episodes", refuse)
    out = tmp_path / "tune"
    rc = main(["tune", "--model", str(model), "--out", str(out), "--trials", "2", "--study", "s"])
    assert rc == 1  # nothing to choose from
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    assert all("cannot be kept" in t.user_attrs["error"] for t in study.trials)


def test_fewer_samples_than_the_base_prior_are_searched_with_a_smaller_prior(model, tmp_path, monkeypatch):
    # A base with 50 of 100 samples from the policy prior; every trial draws 16..40 samples.
    from rtmpc.scripts.cli import main

    seen = []
    monkeypatch.setattr(control_cmd, "run_episodes",
                        lambda model, task, cfg, **kw: seen.append(cfg.planner) or _fake_result(1.0, 1.0))
    out = tmp_path / "tune"
    rc = main(["tune", "--model", str(model), "--out", str(out), "--trials", "3", "--study", "s",
               "--set", "planner.samples=100", "--set", "planner.prior_samples=50", "--space", "samples_max=40",
               "--probe-factor", "0"])
    assert rc == 0
    assert len(seen) == 3 and all(1 <= p.prior_samples < p.samples <= 40 for p in seen)
    assert seen[0].prior_samples == round(0.5 * seen[0].samples)  # the base's share (clipped into the space)


def test_a_base_config_over_the_limit_is_tried_next_with_fewer_iterations(model, tmp_path, monkeypatch):
    # plan time proportional to iterations x samples: the base (6 x 100) takes 60 ms against 31.5
    from rtmpc.scripts.cli import main

    seen = []

    def fake(model, task, cfg, **kw):
        seen.append(cfg.planner)
        return _fake_result(1.0, 0.1 * cfg.planner.iterations * cfg.planner.samples)

    monkeypatch.setattr(control_cmd, "run_episodes", fake)
    out = tmp_path / "tune"
    rc = main(["tune", "--model", str(model), "--out", str(out), "--trials", "3", "--study", "s", "--rate", "20",
               "--set", "planner.iterations=6", "--set", "planner.samples=100", "--probe-factor", "0"])
    assert rc == 0
    assert (seen[0].iterations, seen[0].samples) == (6, 100)
    assert (seen[1].iterations, seen[1].samples, seen[1].horizon) == (2, 100, seen[0].horizon)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{out / 'study.db'}")
    assert study.trials[1].user_attrs.get("baseline_shrunk") is True
    assert "baseline_shrunk" not in study.trials[2].user_attrs


def test_with_a_servo_the_plan_budget_is_the_replanning_period(model, tmp_path):
    """`--servo HZ`: trials run the two-rate loop at that servo rate, and a plan is budgeted the
    replanning period (the model's step), not the servo's much shorter tick."""
    out = tmp_path / "tune"
    res = rtmpc("tune", "--model", str(model), "--out", str(out), "--planner", "cem", *SMALL_SPACE, "--trials", "1",
                "--servo", "50", "--json")  # the tiny task's physics step is 20 ms
    # exit 1: the one trial did not fit its budget (a fresh clone's first plans compile Numba kernels)
    assert res.returncode in (0, 1), res.stderr[-2000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["servo_hz"] == 50 and summary["study"].endswith("-servo50hz")
    assert summary["trials"]["complete"] == 1
    assert summary["period_ms"] > 20.0  # the model's step, not the servo's 20 ms tick
    assert summary["budget_ms"] == pytest.approx(0.9 * summary["period_ms"])  # the default 10% deadline margin
    if res.returncode == 0:
        best = yaml.safe_load((out / "best.yaml").read_text())
        assert best["loop"]["servo_hz"] == 50  # what `rtmpc control --config best.yaml` will run
    # A servo period that is no whole number of physics steps cannot run in lockstep: refused up front.
    bad = rtmpc("tune", "--model", str(model), "--out", str(tmp_path / "bad"), "--planner", "cem", "--trials", "1",
                "--servo", "30")
    assert bad.returncode == 2 and "whole number of the task's physics steps" in bad.stderr.strip().splitlines()[-1]
