"""Benchmark deep Dyna-Q against plain double DQN: env steps and wall-clock seconds to a solved task.

Not a test (minutes). Run from the repository root::

    python -m rtmpc.scripts.bench_dynaq cartpole --seeds 0 1 2 [--steps 10000] [--dqn-steps 30000]
        [--agents dynaq dqn] [--threads 1] [--set key=value ...]

For each seed in turn (the agents interleaved, same seeds): deep Dyna-Q with the defaults of
:class:`rtmpc.models.dynaq.deep.DeepDynaQConfig` (``--set`` overrides, e.g. ``--set
rollout_length=5``) for up to ``--steps`` env steps, then the same agent with
``planning_ratio = 0`` (plain double DQN: same network, schedule and updates, no model) for up
to ``--dqn-steps``. A run stops at the first greedy evaluation (the mean of ``eval_episodes`` =
10 episodes, every ``eval_every`` env steps) that reaches the task's target (500 on
CartPole-v1, its maximum); it reports the env steps at that evaluation ("not reached" when
the budget runs out first), the wall-clock and process CPU seconds to there (evaluations
included) and, per seed, DQN's steps divided by Dyna-Q's. Prints one table and one JSON line.
Runs one at a time with ``--threads`` torch threads (the machine has two cores).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

TASKS = {"cartpole": {"task": "gym:CartPole-v1", "target": 500.0}}


def _run(task: str, target: float, cfg, verbose: bool) -> dict:
    from rtmpc.models.dynaq.deep import train_deep_dynaq

    from rtmpc import sim

    best = {"eval_return": float("-inf")}
    reached: dict = {}
    t0, c0 = time.perf_counter(), time.process_time()

    def progress(row: dict) -> bool:
        if row["eval_return"] > best["eval_return"]:
            best.update(row)
        if verbose:
            print(f"    {row['env_steps']:>6} steps  eval {row['eval_return']:6.1f}  train "
                  f"{row['train_return'] if row['train_return'] is not None else float('nan'):6.1f}  "
                  f"eps {row['epsilon']:.3f}  {row['seconds']:6.1f} s", file=sys.stderr, flush=True)
        if row["eval_return"] >= target:
            reached.update(steps=row["env_steps"], seconds=time.perf_counter() - t0,
                           cpu_seconds=time.process_time() - c0)
            return True
        return False

    _, rows = train_deep_dynaq(lambda: sim.make(task, seed=cfg.seed), cfg, progress=progress)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"steps_to_target": reached.get("steps"), "seconds": round(reached.get("seconds", wall), 1),
            "cpu_seconds": round(reached.get("cpu_seconds", cpu), 1), "budget": cfg.total_steps,
            "env_steps_run": rows[-1]["env_steps"] if rows else 0,
            "best_eval": round(best["eval_return"], 1), "best_eval_at": best.get("env_steps"),
            "final_eval": rows[-1]["eval_return"] if rows else None}


def bench(args) -> int:
    import torch
    from rtmpc.configs import from_dict, parse_overrides, to_dict
    from rtmpc.models.dynaq.deep import DeepDynaQConfig

    torch.set_num_threads(args.threads)
    task, target = TASKS[args.task]["task"], TASKS[args.task]["target"]
    base = from_dict(DeepDynaQConfig, {**parse_overrides(args.overrides), "threads": args.threads})
    budgets = {"dynaq": args.steps, "dqn": args.dqn_steps}
    results: list[dict] = []
    for seed in args.seeds:
        for agent in args.agents:
            cfg = base.replace(seed=seed, total_steps=budgets[agent])
            if agent == "dqn":
                cfg = cfg.replace(planning_ratio=0.0)
            print(f"{agent} seed {seed}: up to {cfg.total_steps} env steps", file=sys.stderr, flush=True)
            res = {"agent": agent, "seed": seed, **_run(task, target, cfg, args.verbose)}
            results.append(res)
            print(json.dumps(res), file=sys.stderr, flush=True)

    def fmt(v):
        return "not reached" if v is None else str(v)

    print(f"\n{task}: env steps until the mean of {base.eval_episodes} greedy episodes first reaches {target:g} "
          f"(evaluated every {base.eval_every} steps), torch threads {args.threads}")
    head = (f"{'seed':>4}  {'agent':<6} {'steps to target':>15} {'budget':>7} {'wall s':>7} {'cpu s':>7} "
            f"{'best eval':>9}")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['seed']:>4}  {r['agent']:<6} {fmt(r['steps_to_target']):>15} {r['budget']:>7} {r['seconds']:>7.1f} "
              f"{r['cpu_seconds']:>7.1f} {r['best_eval']:>9.1f}")
    ratios = {}
    for seed in args.seeds:
        by = {r["agent"]: r for r in results if r["seed"] == seed}
        if "dynaq" in by and "dqn" in by and by["dynaq"]["steps_to_target"]:
            d, q = by["dynaq"]["steps_to_target"], by["dqn"]["steps_to_target"]
            ratios[seed] = round(q / d, 2) if q else f"> {round(by['dqn']['budget'] / d, 2)}"
    if ratios:
        print("DQN steps / Dyna-Q steps: " + ", ".join(f"seed {s}: {v}" for s, v in ratios.items()))
    summary = {"bench": "dynaq", "task": task, "target": target, "threads": args.threads,
               "machine": platform.node(), "config": to_dict(base), "overrides": list(args.overrides),
               "runs": results, "dqn_over_dynaq_steps": {str(k): v for k, v in ratios.items()}}
    print(json.dumps(summary), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rtmpc.scripts.bench_dynaq", description=__doc__.splitlines()[0])
    p.add_argument("task", choices=sorted(TASKS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--agents", nargs="+", choices=("dynaq", "dqn"), default=["dynaq", "dqn"])
    p.add_argument("--steps", type=int, default=10_000, help="env steps budget of Dyna-Q")
    p.add_argument("--dqn-steps", type=int, default=30_000, help="env steps budget of plain double DQN")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a DeepDynaQConfig field for both agents (repeatable)")
    p.add_argument("--verbose", "-v", action="store_true", help="print every evaluation to stderr")
    args = p.parse_args(argv)
    from rtmpc.scripts.cli import run_reporting

    return run_reporting("bench_dynaq", lambda: bench(args))


if __name__ == "__main__":
    sys.exit(main())
