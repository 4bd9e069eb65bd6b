"""``rtmpc bench loop``: wake-up jitter, deadline misses and plan time of the real-time loop.

Runs the loop against a wall-clock MuJoCo robot (physics in its own thread, in real time)
with a planner over an exported model, for ``--cycles`` cycles per loop mode (the task's
episode is stretched so it does not end first), and prints one row per mode plus a JSON
line. Run nothing else on the machine meanwhile: it measures the machine as much as the code.
"""

from __future__ import annotations

import json
import math
import os

from . import flags

COLUMNS = [("mode", "{:>6s}"), ("rate_hz", "{:8.2f}"), ("cycles", "{:7d}"), ("misses", "{:6d}"),
           ("miss_rate", "{:9.4f}"), ("plan_ms_p50", "{:8.2f}"), ("plan_ms_p99", "{:8.2f}"),
           ("jitter_ms_p50", "{:9.3f}"), ("jitter_ms_p99", "{:9.3f}"), ("jitter_ms_max", "{:9.3f}"),
           ("latency_ms_p99", "{:9.3f}")]


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="exported model (model.onnx)")
    p.add_argument("--task", help="task (default: the model's)")
    p.add_argument("--config", help="YAML with planner/loop/safety sections (default: the model's run config)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    p.add_argument("--rate", type=flags.rate(), help="loop rate in Hz (default: the model's step rate)")
    p.add_argument("--cycles", type=flags.count(1, 10**9), default=2000, help="cycles per mode")
    p.add_argument("--mode", choices=("async", "sync", "both"), default="both", help="loop mode(s) to measure")
    p.add_argument("--threads", type=flags.threads(), default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--json", action="store_true", help="end with one JSON line")


def run(args) -> int:
    from pathlib import Path

    from .control import control_config, run_episodes
    from .runconfig import config_or_runs

    model = Path(args.model)
    config = config_or_runs(args.config, model.parent)
    modes = ["sync", "async"] if args.mode == "both" else [args.mode]
    rows = []
    for mode in modes:
        cfg = control_config(config, [*args.overrides, f"loop.mode={mode}"], None)
        r = run_episodes(model, args.task, cfg, realtime=True, rate_hz=args.rate,
                         cycles=args.cycles, threads=args.threads, stretch_episode=True)
        r["mode"] = mode
        r["miss_rate"] = r["misses"] / r["cycles"] if r["cycles"] else math.nan
        rows.append(r)
    print(f"loop benchmark: {rows[0]['task']}, {rows[0]['planner']} K={cfg.planner.samples} H={cfg.planner.horizon} "
          f"iterations={cfg.planner.iterations}, target {rows[0]['rate_hz_target']:.1f} Hz, ORT threads "
          f"{args.threads}, {os.cpu_count()} cores")
    print(" ".join(f"{name:>{len(fmt.format(0) if 'd' in fmt or 'f' in fmt else 'xxxxxx')}s}" for name, fmt in COLUMNS))
    for r in rows:
        print(" ".join(fmt.format(r[name]) for name, fmt in COLUMNS))
    if args.json:
        out = {"task": rows[0]["task"], "rate_hz_target": rows[0]["rate_hz_target"], "threads_ort": args.threads,
               "planner": {"kind": cfg.planner.kind, "samples": cfg.planner.samples, "horizon": cfg.planner.horizon,
                           "iterations": cfg.planner.iterations}}
        for r in rows:
            for name, _ in COLUMNS[1:]:
                out[f"{r['mode']}_{name}"] = None if isinstance(r[name], float) and not math.isfinite(r[name]) \
                    else r[name]
        if len(rows) == 1:  # the plain keys rtmpc control --json has, for one mode
            out.update({k: out[f"{rows[0]['mode']}_{k}"] for k, _ in COLUMNS[1:]})
        print(json.dumps(out))
    return 0
