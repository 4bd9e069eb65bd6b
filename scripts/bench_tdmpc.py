"""Benchmarks of the TD-MPC latent model: training speed, planning speed, 100k-step runs.

Not a test (minutes to hours). Run from the repository root::

    python -m rtmpc.scripts.bench_tdmpc speed [--hidden 64 128] [--latent 64] [--threads 1 2]
    python -m rtmpc.scripts.bench_tdmpc train cartpole [walker] [--steps 100000] [--out runs/bench]

``speed``: for each size, gradient updates per second at the run config's batch and
horizon (synthetic batch, ``torch.set_num_threads(t)``), and the plan time of MPPI at
TD-MPC2's setting (512 samples, 6 iterations, horizon 3, 64 elites, 24 policy-prior
trajectories) over the exported ONNX model with ``t`` ONNX Runtime threads; then the time
of one agent step of the training loop (a plan and an update) with the update in turn
at ``t`` threads, in turn at 1 torch + max(t) ONNX Runtime threads (the loop's old
default), and overlapped with the next plan (one thread each, the loop's default).
Prints tables and one JSON line per measurement. Needs no simulator.

``train``: ``rtmpc train configs/tdmpc_<task>.yaml --steps N`` for each task, one after the
other (never two at once: the machine has two cores), then prints the wall-clock time,
the final and best evaluation returns and the TD-MPC2 reference, and one JSON line per
task. ``--resume`` continues runs that were stopped.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

# Published returns at 100k environment steps (TD-MPC2 paper's curves / its results/*.csv,
# TD-MPC paper Table 1), for the summary.
REFERENCE = {"cartpole": {"task": "cartpole-swingup", "target": 850, "tdmpc2": 839, "tdmpc": 863},
             "walker": {"task": "walker-walk", "target": 900, "tdmpc2": 962, "tdmpc": None}}
PLANNER = {"kind": "mppi", "samples": 512, "iterations": 6, "horizon": 3, "elites": 64, "prior_samples": 24,
           "alpha": 0.0, "init_std": 2.0, "min_std": 0.05, "temperature": 0.5}


def _median_ms(fn, repeats: int, warmup: int = 3) -> tuple[float, float, float]:
    """Median and p99 wall-clock ms of ``fn()``, and its median process CPU ms (on a shared
    machine the CPU time of a one-thread call estimates its wall time on a free core)."""
    import numpy as np

    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(1e3 * (time.perf_counter() - t0))
        cpu.append(1e3 * (time.process_time() - c0))
    return float(np.median(wall)), float(np.percentile(wall, 99)), float(np.median(cpu))


def _step_ms(planner, learner, batch, obs, steps: int, overlap: bool) -> float:
    """Mean ms of one agent step of the training loop (a plan, then one update),
    the update made in turn or on a second thread beside the next plan
    (models.tdmpc.train.Background, as ``latent.loop.overlap`` does)."""
    from rtmpc.models.tdmpc.train import Background

    worker = Background(overlap)

    def run(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            planner.plan(obs)
            worker.start(learner.update, *batch)
        worker.wait()
        return time.perf_counter() - t0

    try:
        run(3)  # warm-up
        return 1e3 * run(steps) / steps
    finally:
        worker.close()


def speed(args) -> int:
    import numpy as np
    import torch
    from rtmpc.configs import from_dict
    from rtmpc.models.runtime import load_model
    from rtmpc.models.tdmpc.config import LatentModelConfig, LatentTrainConfig
    from rtmpc.models.tdmpc.export import export_latent
    from rtmpc.models.tdmpc.model import LatentLearner, LatentWorldModel
    from rtmpc.planners import make_planner, planner_config

    obs_dim, act_dim = args.obs_dim, args.act_dim
    train_cfg = LatentTrainConfig()
    results, steps = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for latent in args.latent:
            for hidden in args.hidden:
                mcfg = from_dict(LatentModelConfig, {"latent_dim": latent, "hidden": hidden, "enc_hidden": hidden,
                                                     "activation": args.activation})
                model = LatentWorldModel(obs_dim, act_dim, mcfg, [-1.0] * act_dim, [1.0] * act_dim, seed=0)
                path = export_latent(model, Path(tmp) / f"m{latent}_{hidden}.onnx", gamma=0.99)
                h, b = train_cfg.horizon, train_cfg.batch_size
                gen = torch.Generator().manual_seed(0)
                batch = (torch.randn(h + 1, b, obs_dim, generator=gen),
                         torch.rand(h, b, act_dim, generator=gen) * 2 - 1, torch.rand(h, b, generator=gen),
                         torch.zeros(h, b))
                for threads in args.threads:
                    torch.set_num_threads(threads)
                    learner = LatentLearner(model, train_cfg, 0.99, seed=0)
                    up_ms, _, up_cpu = _median_ms(lambda: learner.update(*batch), args.updates)  # noqa: B023
                    rm = load_model(path, threads=threads, rng=0, allow_spinning=args.spin and threads > 1)
                    pcfg = planner_config(**{**PLANNER, "samples": args.samples, "iterations": args.iterations})
                    planner = make_planner(pcfg, rm, rng=0)
                    obs = np.random.default_rng(0).standard_normal(obs_dim)
                    plan_ms, plan_p99, plan_cpu = _median_ms(lambda: planner.plan(obs), args.plans)  # noqa: B023
                    row = {"latent_dim": latent, "hidden": hidden, "activation": args.activation,
                           "params": model.num_params(), "threads": threads, "updates_per_s": round(1e3 / up_ms, 1),
                           "update_ms": round(up_ms, 2), "plan_ms_p50": round(plan_ms, 2),
                           "plan_ms_p99": round(plan_p99, 2), "plan_hz": round(1e3 / plan_ms, 1),
                           "update_cpu_ms": round(up_cpu, 2), "plan_cpu_ms": round(plan_cpu, 2),
                           "ort_spinning": bool(args.spin and threads > 1),
                           "obs_dim": obs_dim, "act_dim": act_dim, "batch": b, "horizon": h,
                           "planner": {**PLANNER, "samples": args.samples, "iterations": args.iterations},
                           "machine": platform.processor() or platform.machine()}
                    results.append(row)
                    print(json.dumps(row), flush=True)
                # One agent step of the training loop (a plan, then an update), with the update in
                # turn or overlapped, at (torch threads, ONNX Runtime threads):
                modes = [(False, t, t) for t in args.threads]
                if max(args.threads) > 1:
                    modes.append((False, 1, max(args.threads)))  # the loop's default before the overlap
                modes.append((True, 1, 1))  # the default: one core each
                planners = {}
                for overlap, torch_t, ort_t in modes:
                    torch.set_num_threads(torch_t)
                    if ort_t not in planners:
                        pcfg = planner_config(**{**PLANNER, "samples": args.samples, "iterations": args.iterations})
                        planners[ort_t] = make_planner(pcfg, load_model(path, threads=ort_t, rng=0), rng=0)
                    learner = LatentLearner(model, train_cfg, 0.99, seed=0)
                    ms = _step_ms(planners[ort_t], learner, batch, obs, args.steps, overlap)
                    steps.append({"latent_dim": latent, "hidden": hidden, "overlap": overlap,
                                  "torch_threads": torch_t, "ort_threads": ort_t,
                                  "mode": f"{'overlap' if overlap else 'in turn'}, torch {torch_t} / ORT {ort_t}",
                                  "step_ms": round(ms, 2)})
                    print(json.dumps(steps[-1]), flush=True)
    print(f"\n{'latent':>6} {'hidden':>6} {'params':>8} {'threads':>7} {'updates/s':>9} {'update cpu ms':>13} "
          f"{'plan p50 ms':>11} {'plan p99 ms':>11} {'plan cpu ms':>11}")
    for r in results:
        print(f"{r['latent_dim']:>6} {r['hidden']:>6} {r['params']:>8} {r['threads']:>7} {r['updates_per_s']:>9} "
              f"{r['update_cpu_ms']:>13} {r['plan_ms_p50']:>11} {r['plan_ms_p99']:>11} {r['plan_cpu_ms']:>11}")
    print(f"\none agent step of the training loop (a plan and one update), mean of {args.steps}")
    print(f"{'latent':>6} {'hidden':>6} {'mode':<28} {'step ms':>8} {'steps/s':>8}")
    for r in steps:
        print(f"{r['latent_dim']:>6} {r['hidden']:>6} {r['mode']:<28} {r['step_ms']:>8} {1e3 / r['step_ms']:>8.1f}")
    return 0


def train(args) -> int:
    import csv

    from rtmpc.scripts import train as train_cmd

    summaries = []
    for name in args.tasks:
        ref = REFERENCE[name]
        out = Path(args.out) / f"tdmpc-{name}-s{args.seed}"
        t0 = time.perf_counter()
        train_cmd.train_run(f"tdmpc_{name}", overrides=list(args.overrides), seed=args.seed, out=out,
                            resume=args.resume, steps=args.steps)
        wall = time.perf_counter() - t0
        with open(out / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        last = rows[-1]
        summary = {"task": ref["task"], "env_steps": int(last["env_steps"]), "final_return": float(last["eval_return"]),
                   "best_return": max(float(r["eval_return"]) for r in rows), "target": ref["target"],
                   "tdmpc2_100k": ref["tdmpc2"], "tdmpc_100k": ref["tdmpc"],
                   "wall_s_this_call": round(wall, 1), "wall_s_run": float(last["wall_s"]),
                   "updates_per_s_last": last.get("updates_per_s"), "plan_ms_p50_last": last.get("plan_ms_median"),
                   "run_dir": str(out)}
        summaries.append(summary)
        print(f"{ref['task']}: {summary['env_steps']} env steps in {summary['wall_s_run'] / 60:.1f} min, final return "
              f"{summary['final_return']:.1f} (best {summary['best_return']:.1f}; target >= {ref['target']}, "
              f"TD-MPC2 {ref['tdmpc2']} at 100k)", flush=True)
        print(json.dumps(summary), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench_tdmpc", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed", help="updates/s and MPPI plan time at TD-MPC2's setting")
    s.add_argument("--latent", type=int, nargs="+", default=[64], help="latent sizes")
    s.add_argument("--hidden", type=int, nargs="+", default=[64], help="hidden sizes (encoder too)")
    s.add_argument("--activation", default="silu")
    s.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch / ONNX Runtime threads")
    s.add_argument("--obs-dim", type=int, default=5, help="observation size (cartpole 5, walker 24)")
    s.add_argument("--act-dim", type=int, default=1, help="action size (cartpole 1, walker 6)")
    s.add_argument("--spin", action="store_true", help="let idle ONNX Runtime threads spin (with > 1 thread)")
    s.add_argument("--samples", type=int, default=PLANNER["samples"], help="MPPI samples (TD-MPC2: 512)")
    s.add_argument("--iterations", type=int, default=PLANNER["iterations"], help="MPPI iterations (TD-MPC2: 6)")
    s.add_argument("--updates", type=int, default=50, help="timed updates per point")
    s.add_argument("--plans", type=int, default=50, help="timed plans per point")
    s.add_argument("--steps", type=int, default=40, help="timed agent steps (plan + update) per point")
    t = sub.add_parser("train", help="100k-step runs: wall-clock time and final return")
    t.add_argument("tasks", nargs="+", choices=sorted(REFERENCE))
    t.add_argument("--steps", type=int, default=100_000, help="environment steps per run (action repeat counted)")
    t.add_argument("--out", default="runs/bench", help="parent folder of the run directories")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--resume", action="store_true", help="continue stopped runs")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    args = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    for noisy in ("absl", "OpenGL", "matplotlib", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from rtmpc.scripts.cli import run_reporting

    return run_reporting(f"bench_tdmpc {args.what}", lambda: speed(args) if args.what == "speed" else train(args))


if __name__ == "__main__":
    sys.exit(main())
