"""Telemetry streamed to MCAP while the loop runs: every cycle is in the file, a killed run
leaves what reached the disk readable, and a second run gets its own file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
from controller_fakes import FakeClock, FakePlanner, FakeRobot
from rtmpc.controller import ControlLoop, LoopConfig, MonotonicClock, SafetyConfig, SafetyFilter
from rtmpc.controller.mcap_log import read_cycles, records_from_mcap


def run_loop(tmp_path, cycles, clock=None, **loop):
    clock = clock if clock is not None else FakeClock()
    cfg = LoopConfig(rate_hz=200.0, warmup_plans=0, telemetry_size=64, **loop)
    filt = SafetyFilter(np.array([-1.0]), np.array([1.0]), 0.005, SafetyConfig())
    control = ControlLoop(FakeRobot(clock), FakePlanner(clock), filt, cfg, clock=clock, run_dir=tmp_path,
                          obs_names=("cart", "pole"), act_names=("force",))
    return control.run(max_cycles=cycles), control


def test_every_cycle_is_in_the_mcap_file_even_past_the_ring(tmp_path):
    # wall clock at 200 Hz, a 64-row ring (0.32 s): the stream drains it in time and keeps all 300
    summary, control = run_loop(tmp_path, 300, clock=MonotonicClock())
    cycles = read_cycles(summary["mcap"])
    assert [c["cycle"] for c in cycles] == list(range(300))
    r = control.telemetry.records()  # the ring's last 64 rows match the file's
    for c, a, o in zip(cycles[-64:], r["action"], r["obs"]):
        assert c["action"]["force"] == a[0] and [c["obs"]["cart"], c["obs"]["pole"]] == o.tolist()
    assert cycles[5]["source"] in ("plan", "fallback", "safe") and isinstance(cycles[5]["safety"], list)
    # The plot's columns read back from the file: all 300 cycles, the ring's 64 equal to memory.
    back = records_from_mcap(summary["mcap"])
    assert back["cycle"].tolist() == list(range(300)) and back["obs"].shape == (300, 2)
    for key in ("obs", "action", "source", "missed", "scheduled", "plan_s", "reward"):
        np.testing.assert_allclose(back[key][-64:], r[key], rtol=1e-12, err_msg=key)


def test_a_second_run_gets_its_own_file_and_the_stream_can_be_off(tmp_path):
    a, _ = run_loop(tmp_path, 10)
    b, _ = run_loop(tmp_path, 20)
    assert a["mcap"] != b["mcap"] and len(read_cycles(a["mcap"])) == 10 and len(read_cycles(b["mcap"])) == 20
    c, _ = run_loop(tmp_path / "off", 10, mcap=False)
    assert "mcap" not in c and not list((tmp_path / "off").glob("*.mcap"))


def test_a_killed_run_leaves_the_cycles_that_reached_the_disk(tmp_path):
    """SIGKILL in the middle of a wall-clock run at 200 Hz, once 100 cycles are on disk: the
    file reads up to its last flush (every 0.5 s), with no cycle out of order."""
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from controller_fakes import FakePlanner, FakeRobot
        from rtmpc.controller import ControlLoop, LoopConfig, MonotonicClock, SafetyConfig, SafetyFilter
        clock = MonotonicClock()
        planner = FakePlanner(clock)
        loop = ControlLoop(FakeRobot(clock), planner, SafetyFilter(np.array([-1.0]), np.array([1.0]), 0.005,
                           SafetyConfig()), LoopConfig(rate_hz=200.0, warmup_plans=0), clock=clock,
                           run_dir={str(tmp_path)!r})
        print("started", flush=True)
        loop.run(max_cycles=10**6)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 30.0  # wait (polling the file) until 100 cycles reached the disk
    while time.monotonic() < deadline:
        files = list(tmp_path.glob("telemetry-*.mcap"))
        if files and len(read_cycles(files[0])) >= 100:
            break
        try:
            proc.wait(timeout=0.1)  # polls the file every 0.1 s (the run itself never ends)
        except subprocess.TimeoutExpired:
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    files = list(tmp_path.glob("telemetry-*.mcap"))
    assert len(files) == 1
    cycles = read_cycles(files[0])
    assert len(cycles) >= 100  # ~2 s at 200 Hz, less up to one flush
    assert [c["cycle"] for c in cycles] == list(range(len(cycles)))
