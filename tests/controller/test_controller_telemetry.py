"""Telemetry ring, summary and files; the lockstep clocks."""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pytest
from rtmpc.controller import FastForwardClock, Observation, Telemetry, VirtualClock
from rtmpc.controller.safety import CLIPPED, STALE_OBS
from rtmpc.controller.telemetry import FALLBACK, PLAN, SAFE


def fill(tel, n, start=0):
    for c in range(start, start + n):
        ob = Observation(values=np.array([c, -c], float), stamp=0.1 * c, seq=c, reward=1.0)
        tel.record(c, 0.1 * c, 0.1 * c + 0.001 * (c % 3), 0.1 * c + 0.02, ob, np.array([0.5]),
                   np.array([0.25]), 0.01 + 0.001 * c, c % 4 == 0, (PLAN, FALLBACK, SAFE)[c % 3],
                   float(c), 0.0, CLIPPED if c % 5 == 0 else (STALE_OBS if c == 7 else 0))


def test_records_and_summary():
    tel = Telemetry(100, 2, 1)
    fill(tel, 10)
    r = tel.records()
    assert r["cycle"].tolist() == list(range(10)) and r["obs"].shape == (10, 2)
    s = tel.summary()
    assert s["cycles"] == 10 and s["dropped"] == 0
    assert s["misses"] == 3  # cycles 0, 4, 8
    assert s["fallbacks"] == 3 and s["safe_actions"] == 3
    assert s["safety_events"] == {"total": 3, "clipped": 2, "rate_limited": 0, "nonfinite_action": 0,
                                  "nonfinite_obs": 0, "stale_obs": 1, "nonfinite_model": 0,
                                  "plan_starved": 0}
    assert s["plan_ms_max"] == pytest.approx(19.0) and s["plan_ms_p50"] == pytest.approx(14.5)
    assert s["jitter_ms_max"] == pytest.approx(2.0)
    assert s["latency_ms_p50"] == pytest.approx(np.percentile(r["sent"] - r["wake"], 50) * 1e3)
    assert s["episode_return"] == 10.0 and s["skipped_slots"] == 0


def test_ring_keeps_the_newest_rows_in_order():
    tel = Telemetry(4, 2, 1)
    fill(tel, 10)
    r = tel.records()
    assert r["cycle"].tolist() == [6, 7, 8, 9] and r["seq"].tolist() == [6, 7, 8, 9]
    assert tel.summary()["dropped"] == 6 and tel.summary()["cycles"] == 4
    tel.set_plan_time(8, 0.5)
    tel.set_plan_time(2, 0.5)  # overwritten already: ignored
    assert tel.records()["plan_s"].tolist()[2] == 0.5


def test_empty_summary_is_nan_not_an_error():
    s = Telemetry(4, 2, 1).summary()
    assert s["cycles"] == 0 and math.isnan(s["plan_ms_p50"]) and math.isnan(s["rate_hz"])


def test_save_is_atomic_and_json_has_no_nan(tmp_path):
    tel = Telemetry(8, 2, 1)
    fill(tel, 5)
    summary = tel.summary()
    summary["note"] = math.nan
    path = tel.save(tmp_path / "run", summary)
    data = np.load(path)
    assert data["cycle"].tolist() == [0, 1, 2, 3, 4] and "clipped" in data["safety_kinds"].tolist()
    js = json.loads((tmp_path / "run" / "telemetry_summary.json").read_text())
    assert js["note"] is None and js["cycles"] == 5
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["telemetry.npz",
                                                                   "telemetry_summary.json"]


def test_virtual_clock_jumps_forward_only():
    c = VirtualClock(5.0)
    c.sleep_until(7.0)
    c.sleep_until(6.0)
    assert c.now() == 7.0
    ev = threading.Event()
    ev.set()
    assert c.wait_for(ev, 100.0) and c.now() == 7.0


def test_virtual_clock_gives_up_on_a_hung_planner():
    c = VirtualClock(0.0, real_timeout_s=0.01)
    assert not c.wait_for(threading.Event(), 3.0) and c.now() == 3.0


def test_fast_forward_clock_skips_idle_time():
    c = FastForwardClock(0.0)
    start = time.monotonic()
    c.sleep_until(1000.0)
    assert 1000.0 <= c.now() < 1001.0 and time.monotonic() - start < 1.0
    c.sleep_until(10.0)  # in the past: no jump back
    assert c.now() >= 1000.0


def test_episode_plot_is_a_png_and_an_empty_run_is_a_clear_error(tmp_path):
    from rtmpc.controller.plot import plot_episode

    tel = Telemetry(16, 2, 1)
    fill(tel, 12)  # misses, fallbacks, safe actions
    r = tel.records()
    r["action"][3] = np.nan  # a cycle that sent nothing
    r["plan_s"][5] = np.nan  # a plan that never finished
    path = plot_episode(r, tmp_path / "ep" / "telemetry.png", title="t", obs_names=("x", "theta"),
                        action_low=[-1.0], action_high=[1.0], budget_s=0.015)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["telemetry.png"]  # no temporary file left
    with pytest.raises(ValueError, match="no telemetry rows"):
        plot_episode(Telemetry(4, 2, 1).records(), tmp_path / "empty.png")
