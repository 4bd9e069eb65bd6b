"""``rtmpc bench bridge``: round-trip latency of the bridge over loopback, at the control rate.

Starts ``rtmpc robot`` (the task's physics in wall-clock time, publishing at its control
rate) in its own process on a free 127.0.0.1 port, and answers each observation at once
with a command (no planning: what is measured is the bridge). The robot times each
round trip on its own clock, from publishing an observation to receiving the first
command that answers it; this side times ``read()`` and ``send()``. That round trip is
what the bridge adds to a control cycle (the observation's way in plus the command's way
out). Prints a table and a JSON line. Run nothing else on the machine meanwhile.
"""

from __future__ import annotations

import gc
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np

from . import flags

COLUMNS = ("p50", "p99", "max")


def add_arguments(p) -> None:
    p.add_argument("--task", default="cartpole-swingup", help="robot task (default cartpole-swingup, 100 Hz)")
    p.add_argument("--cycles", type=flags.count(1, 10**9), default=3000, help="observations to answer (default 3000)")
    p.add_argument("--port", type=flags.count(0, 65535), default=0, help="loopback port (default: a free one)")
    p.add_argument("--json", action="store_true", help="end with one JSON line")


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stats(x: np.ndarray, scale: float) -> dict[str, float]:
    if x.size == 0:
        return dict.fromkeys(COLUMNS, math.nan)
    p50, p99 = np.percentile(x, [50, 99])
    return {"p50": scale * p50, "p99": scale * p99, "max": scale * float(x.max())}


def run(args) -> int:
    from importlib.metadata import version

    from rtmpc.controller.bridge import BridgeConfig, BridgeRobot

    from rtmpc import sim

    spec = sim.make(args.task).spec
    endpoint = f"tcp/127.0.0.1:{args.port or _free_port()}"
    seconds = args.cycles * spec.control_period
    cmd = [sys.executable, "-m", "rtmpc.scripts.cli", "robot", "--task", args.task, "--endpoint", endpoint, "--json",
           "--episode-steps", str(int(2 * args.cycles + 1000)), "--duration", f"{seconds + 60:.0f}"]
    robot_proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    read_s, send_s = np.zeros(args.cycles), np.zeros(args.cycles)
    timeouts = 0
    try:
        robot = BridgeRobot(spec.obs_dim, spec.act_dim, spec.control_period,
                            BridgeConfig(endpoint=endpoint, connect_timeout_s=60.0))
        action = np.zeros(spec.act_dim)
        switch, gc_on = sys.getswitchinterval(), gc.isenabled()
        sys.setswitchinterval(0.0005)  # as the control loop runs
        gc.disable()
        try:
            robot.read()
            robot.send(action)  # starts the episode
            for i in range(args.cycles):
                if not robot.wait_new(1.0):
                    timeouts += 1
                t0 = time.perf_counter()
                robot.read()
                t1 = time.perf_counter()
                robot.send(action)
                t2 = time.perf_counter()
                read_s[i], send_s[i] = t1 - t0, t2 - t1
            bridge_stats = robot.stats
        finally:
            sys.setswitchinterval(switch)
            if gc_on:
                gc.enable()
            robot.close()
        robot_proc.send_signal(signal.SIGTERM)
        out, err = robot_proc.communicate(timeout=30)
    finally:
        if robot_proc.poll() is None:
            robot_proc.kill()
            robot_proc.wait()
    if robot_proc.returncode != 0:
        print(err[-3000:], file=sys.stderr)
        raise RuntimeError(f"rtmpc robot exited with status {robot_proc.returncode}")
    r = json.loads(out.strip().splitlines()[-1])
    rows = {"round trip": r["rtt_ms"], "read()": _stats(read_s, 1e3), "send()": _stats(send_s, 1e3),
            "robot wake jitter": r["jitter_ms"]}
    c = r["commands"]
    print(f"bridge benchmark: {args.task} at {1.0 / spec.control_period:.4g} Hz, {args.cycles} observations answered, "
          f"eclipse-zenoh {version('eclipse-zenoh')}, {endpoint}, {os.cpu_count()} cores")
    print(f"{'':18s} {'p50':>8s} {'p99':>8s} {'max':>8s}  ms")
    for name, row in rows.items():
        print(f"{name:18s} " + " ".join(f"{row[k]:8.3f}" for k in COLUMNS))
    print(f"round trip: observation published -> its command received, on the robot's clock ({r['rtt_ms']['n']} "
          f"answered); lost: {bridge_stats['gaps']} observations, {c['gaps']} commands; {c['late']} late, "
          f"{timeouts} waits over 1 s, {r['skipped_periods']} robot periods skipped")
    if args.json:
        result = {"task": args.task, "rate_hz": 1.0 / spec.control_period, "cycles": args.cycles,
                  "zenoh": version("eclipse-zenoh"), "cores": os.cpu_count(), "obs_gaps": bridge_stats["gaps"],
                  "cmd_gaps": c["gaps"], "late": c["late"], "answered": r["rtt_ms"]["n"],
                  "skipped_periods": r["skipped_periods"]}
        for name, key in (("round trip", "rtt_ms"), ("read()", "read_ms"), ("send()", "send_ms"),
                          ("robot wake jitter", "robot_jitter_ms")):
            for k in COLUMNS:
                v = rows[name][k]
                result[f"{key}_{k}"] = None if v is None or not math.isfinite(v) else v
        print(json.dumps(result))
    return 0
