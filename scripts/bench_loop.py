"""``rtmpc bench loop``: wake-up jitter, deadline misses and plan time of the real-time loop.

Runs the loop against a wall-clock MuJoCo robot (physics in its own thread, in real time)
with a planner over an exported model, for ``--cycles`` cycles per loop mode (the task's
episode is stretched so it does not end first), and prints one row per mode plus a JSON
line. Run nothing else on the machine meanwhile: it measures the machine as much as the code.

``--bare`` (default on): after each mode, the machine's floor at the same rate and cycle count: a
loop thread that only sleeps until each tick (the loop's clock, SCHED_FIFO at
``loop.rt_priority``, the garbage collector off, the same switch interval) and counts the wakes
later than the tick's budget as misses. No robot, no planner: its misses are the machine's
(another process, the hypervisor), not the loop's. On this 2-core VM two such 20 s runs at
500 Hz, back to back, missed 15 and 0 of 10,000 ticks (worst wake 12.4 ms late).

``--soak``: one long run (async unless --mode says otherwise) with the process's resident
memory, threads and open files sampled every 5 s by a side thread
(:mod:`rtmpc.controller.soak`); prints them at every 10,000 cycles, the memory growth per
hour (a least-squares fit after the first minute) and the misses. The loop keeps the garbage
collector off only inside its hot loop (``ControlLoop.run``), as in deployment.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile

from . import flags

SOAK_SAMPLE_S = 5.0  # --soak: seconds between resource samples
COLUMNS = [("mode", "{:>10s}"), ("rate_hz", "{:8.2f}"), ("cycles", "{:7d}"), ("misses", "{:6d}"),
           ("skipped_slots", "{:13d}"),
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
    p.add_argument("--threads", type=flags.threads(), help="ONNX Runtime intra-op threads (default: the "
                                                           "config's loop.threads)")
    p.add_argument("--soak", action="store_true",
                   help="one long run (e.g. --cycles 360000 at 100 Hz: an hour) sampling memory, threads and open "
                        "files every 10,000 cycles")
    p.add_argument("--mcap", choices=("off", "on", "both"), default="off",
                   help="stream every cycle to an MCAP file (into a temporary folder) as rtmpc control does; both: "
                        "each mode without then with it, and the stream's cost (tick latency with / without)")
    p.add_argument("--bare", action=argparse.BooleanOptionalAction, default=True,
                   help="after each mode, the same ticks with no work: the machine's own misses (default: on)")
    p.add_argument("--json", action="store_true", help="end with one JSON line")


def run(args) -> int:
    from pathlib import Path

    from .control import control_config, run_episodes
    from .runconfig import config_or_runs

    model = Path(args.model)
    config = config_or_runs(args.config, model.parent)
    if args.soak:
        return _soak(args, model, config)
    modes = ["sync", "async"] if args.mode == "both" else [args.mode]
    streams = {"off": [False], "on": [True], "both": [False, True]}[args.mcap]
    rows = []
    for mode in modes:
        cfg = control_config(config, [*args.overrides, f"loop.mode={mode}"], None)
        for stream in streams:  # without then with, one after the other: a ratio on the same machine state
            with tempfile.TemporaryDirectory(prefix="rtmpc-bench-mcap-") as tmp:
                r = run_episodes(model, args.task, cfg, realtime=True, rate_hz=args.rate, cycles=args.cycles,
                                 threads=args.threads, stretch_episode=True, out=Path(tmp) if stream else None)
            r["mode"] = f"{mode}+mcap" if stream else mode
            r["miss_rate"] = r["misses"] / r["cycles"] if r["cycles"] else math.nan
            rows.append(r)
        if args.bare:  # right after the mode, at its rate: the machine's floor in the same minute
            rows.append(bare_ticks(rows[-1].get("servo_hz") or rows[-1]["rate_hz_target"], rows[-1]["cycles"],
                                   cfg.loop, mode=f"{mode}:bare"))
    what = (f"{rows[0]['planner']} K={cfg.planner.samples} H={cfg.planner.horizon} iterations={cfg.planner.iterations}"
            if rows[0]["planner"] != "policy" else "policy")
    servo = f"servo {rows[0]['servo_hz']:g} Hz, " if rows[0].get("servo_hz") else ""
    print(f"loop benchmark: {rows[0]['task']}, {what}, {servo}target {rows[0]['rate_hz_target']:.1f} Hz, ORT threads "
          f"{rows[0]['threads_ort']}, {os.cpu_count()} cores")
    print(" ".join(f"{name:>{len(fmt.format(0) if 'd' in fmt or 'f' in fmt else fmt.format(''))}s}"
                   for name, fmt in COLUMNS))
    for r in rows:
        print(" ".join(fmt.format(r[name]) for name, fmt in COLUMNS))
    costs = {}
    if args.mcap == "both":  # the stream's cost to the loop thread: tick latency (wake to send) with / without
        for mode in modes:
            off, on = (next(r for r in rows if r["mode"] == m) for m in (mode, f"{mode}+mcap"))
            for q in ("p50", "p99"):
                costs[f"{mode}_mcap_latency_{q}_ratio"] = on[f"latency_ms_{q}"] / off[f"latency_ms_{q}"]
            costs[f"{mode}_mcap_latency_p50_share_of_period"] = \
                (on["latency_ms_p50"] - off["latency_ms_p50"]) / (1e3 / (off.get("servo_hz") or off["rate_hz_target"]))
            print(f"MCAP stream, {mode}: tick latency p50 {off['latency_ms_p50']:.4f} -> {on['latency_ms_p50']:.4f} ms "
                  f"(x{costs[f'{mode}_mcap_latency_p50_ratio']:.3f}, "
                  f"{100 * costs[f'{mode}_mcap_latency_p50_share_of_period']:+.2f}% of the period), p99 "
                  f"{off['latency_ms_p99']:.4f} -> {on['latency_ms_p99']:.4f} ms; misses {off['misses']} -> "
                  f"{on['misses']}")
    if args.json:
        out = {"task": rows[0]["task"], "rate_hz_target": rows[0]["rate_hz_target"],
               "threads_ort": rows[0]["threads_ort"],
               "planner": {"kind": cfg.planner.kind, "samples": cfg.planner.samples, "horizon": cfg.planner.horizon,
                           "iterations": cfg.planner.iterations}}
        out.update(costs)
        for r in rows:
            for name, _ in COLUMNS[1:]:
                value = r[name]
                out[f"{r['mode'].replace('+', '_').replace(':', '_')}_{name}"] = \
                    None if isinstance(value, float) and not math.isfinite(value) else value
        if len(modes) == 1 and len(streams) == 1:  # the plain keys rtmpc control --json has, for one mode
            out.update({k: out[f"{rows[0]['mode']}_{k}"] for k, _ in COLUMNS[1:]})
        print(json.dumps(out))
    return 0


def bare_ticks(rate_hz: float, cycles: int, loop_cfg, *, mode: str = "bare") -> dict:
    """``cycles`` ticks at ``rate_hz`` on a thread that does nothing but wake (the loop's clock,
    priority, switch interval, garbage collector off), in a thread of its own as the loop runs;
    a bench row (the COLUMNS' keys): misses are wakes later than the loop's tick budget
    (``LoopTiming``), skipped_slots wakes a whole period or more late (the loop would skip)."""
    import gc
    import sys
    import threading

    import numpy as np
    from rtmpc.controller import priority
    from rtmpc.controller.base import MonotonicClock
    from rtmpc.controller.config import LoopTiming

    timing = LoopTiming.resolve(loop_cfg, rate_hz=rate_hz)
    clock, late = MonotonicClock(), np.empty(cycles)
    late.fill(0.0)  # touch every page before the ticks, as the servo does with its ages

    def ticks():
        saved = priority.raise_to_fifo(loop_cfg.rt_priority)
        try:
            t0 = clock.now() + 0.01
            for k in range(cycles):
                scheduled = t0 + k * timing.period_s
                clock.sleep_until(scheduled)
                late[k] = clock.now() - scheduled
        finally:
            priority.restore(saved)

    switch, enabled = sys.getswitchinterval(), gc.isenabled()
    if loop_cfg.switch_interval_s is not None:
        sys.setswitchinterval(loop_cfg.switch_interval_s)
    gc.collect()
    gc.disable()
    try:
        t = threading.Thread(target=ticks, name="bare-ticks")
        t.start()
        t.join()
    finally:
        sys.setswitchinterval(switch)
        if enabled:
            gc.enable()
    ms = late * 1e3
    p50, p99 = np.percentile(ms, [50, 99]) if cycles else (math.nan, math.nan)
    misses = int(np.count_nonzero(late > timing.budget_s))
    return {"mode": mode, "rate_hz": rate_hz, "cycles": cycles, "misses": misses,
            "skipped_slots": int(np.count_nonzero(late >= timing.period_s)),
            "miss_rate": misses / cycles if cycles else math.nan, "plan_ms_p50": math.nan, "plan_ms_p99": math.nan,
            "jitter_ms_p50": float(p50), "jitter_ms_p99": float(p99), "jitter_ms_max": float(ms.max(initial=0.0)),
            "latency_ms_p99": math.nan}


def _soak(args, model, config) -> int:
    from rtmpc.controller.soak import ResourceSampler, growth_per_hour

    from .control import control_config, run_episodes

    mode = "async" if args.mode == "both" else args.mode
    overrides = [*args.overrides, f"loop.mode={mode}"]
    if not any(o.split("=", 1)[0].strip() == "loop.telemetry_size" for o in args.overrides):
        # keep every cycle: the misses and percentiles are the whole run's, not the last ring's
        overrides.append(f"loop.telemetry_size={args.cycles + 16}")
    cfg = control_config(config, overrides, None)
    with ResourceSampler(SOAK_SAMPLE_S) as sampler:
        r = run_episodes(model, args.task, cfg, realtime=True, rate_hz=args.rate, cycles=args.cycles,
                         threads=args.threads, stretch_episode=True)
    rate, every = r.get("servo_hz") or r["rate_hz_target"], 10_000  # cycles are servo ticks with a servo
    # the samples nearest each 10,000 cycles (the sampler wakes every SOAK_SAMPLE_S seconds), and the last
    marks = sorted({min(range(len(sampler.samples)), key=lambda i: abs(sampler.samples[i]["t_s"] * rate - c))
                    for c in range(0, int(sampler.samples[-1]["t_s"] * rate) + 1, every)} | {len(sampler.samples) - 1})
    s = [sampler.samples[i] for i in marks]
    during = sampler.samples[:-1]  # the last sample is taken after the run (its memory freed)
    growth = growth_per_hour(during, skip_s=min(60.0, during[-1]["t_s"] / 4))
    print(f"soak: {r['task']}, {mode}, {r['cycles']} cycles at {r['rate_hz']:.2f} Hz (target "
          f"{rate:.1f}), ORT threads {r['threads_ort']}, {os.cpu_count()} cores")
    print(f"{'cycles':>9s} {'t_s':>9s} {'rss_mib':>9s} {'threads':>8s} {'native':>7s} {'files':>6s}")
    for x in s:
        print(f"{int(round(x['t_s'] * rate)):9d} {x['t_s']:9.1f} {x['rss_mib']:9.2f} {x['threads']:8d} "
              f"{x['native_threads']:7d} {x['open_files']:6d}")
    print(f"memory growth {growth:+.2f} MiB/hour (fit after the first minute); misses {r['misses']} of "
          f"{r['cycles']} ({r['misses'] / max(r['cycles'], 1):.4%}); plan p99 {r['plan_ms_p99']:.2f} ms; "
          f"jitter p99 {r['jitter_ms_p99']:.3f} ms")
    if r.get("dropped"):
        print(f"statistics of the last {r['cycles']} cycles only: {r['dropped']} earlier ones left the telemetry "
              f"ring (raise loop.telemetry_size)")
    if args.json:
        print(json.dumps({"soak": True, "mode": mode, "task": r["task"], "cycles": r["cycles"],
                          "rate_hz": r["rate_hz"], "rate_hz_target": r["rate_hz_target"], "misses": r["misses"],
                          "dropped": int(r.get("dropped", 0)), "plan_ms_p99": r["plan_ms_p99"],
                          "jitter_ms_p99": r["jitter_ms_p99"],
                          "rss_growth_mib_per_hour": None if math.isnan(growth) else round(growth, 3),
                          "threads_ort": r["threads_ort"], "samples": s}))
    return 0
