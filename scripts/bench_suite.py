"""The latent model across the dm_control suite at one configuration, against TD-MPC2.

Not a test (hours). Run from the repository root, one run at a time (the machine has two
cores; nothing else should train meanwhile)::

    python -m rtmpc.scripts.bench_suite --steps 100000 --seeds 0
    python -m rtmpc.scripts.bench_suite --tasks cartpole-swingup,walker-walk --seeds 0,1,2
    python -m rtmpc.scripts.bench_suite --report              # table and plot of every run in OUT

Each (task, seed) trains ``configs/tdmpc.yaml`` (``--config``) with ``task.name`` set, its
evaluation every ``--eval-every`` environment steps over ``--eval-episodes`` episodes, into
``OUT/TASK-sSEED`` (``rtmpc train ... --resume``: a stopped suite continues where it was,
a finished run is not run again). Then, from every run's metrics.csv:

- ``OUT/results.csv``: task, seed, env_steps, eval_return, wall_s (one row per evaluation) of
  every run in OUT, whichever tasks this call trained;
- a table: per task, rtmpc's last return per seed and their mean, TD-MPC2's mean at 100k
  (3 seeds, its published results, carried in scripts/reference/tdmpc2_dmcontrol.csv with
  their source) and the ratio, and each run's wall clock;
- ``OUT/suite.png``: the learning curves, one panel per task, rtmpc's seeds against
  TD-MPC2's seeds (its published points: 0 and 100k steps);
- one JSON line: the mean over the tasks that ran, TD-MPC2's mean over the same tasks, the
  tasks more than 10% below TD-MPC2, the longest run.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

# The issue-24 suite: TD-MPC2's mean at 100k over these eight tasks is 863.5.
TASKS = ("cartpole-swingup", "cartpole-balance", "pendulum-swingup", "reacher-easy", "walker-walk",
         "cheetah-run", "finger-spin", "ball_in_cup-catch")
REFERENCE = Path(__file__).resolve().parent / "reference" / "tdmpc2_dmcontrol.csv"
FIELDS = ("task", "seed", "env_steps", "eval_return", "wall_s")


def reference(path: Path = REFERENCE) -> dict[str, dict[int, dict[int, float]]]:
    """TD-MPC2's published returns: task -> seed -> env steps -> return."""
    out: dict[str, dict[int, dict[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(line for line in f if not line.startswith("#")):
            out.setdefault(row["task"], {}).setdefault(int(row["seed"]), {})[int(row["step"])] = float(row["reward"])
    return out


def run_dir(out: Path, task: str, seed: int) -> Path:
    return out / f"{task}-s{seed}"


def read_metrics(path: Path) -> list[dict]:
    """A run's evaluations (env_steps, eval_return, wall_s); [] before the first one."""
    f = path / "metrics.csv"
    if not f.is_file():
        return []
    with open(f, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{"env_steps": int(r["env_steps"]), "eval_return": float(r["eval_return"]),
             "wall_s": float(r.get("wall_s") or "nan")} for r in rows if r.get("eval_return") not in (None, "")]


def finished(path: Path, steps: int) -> bool:
    rows = read_metrics(path)
    return bool(rows) and rows[-1]["env_steps"] >= steps


def train_one(args, task: str, seed: int) -> None:
    from rtmpc.scripts.train import train_run

    overrides = [f"task.name={task}", f"latent.loop.eval_every={args.eval_every}",
                 f"latent.loop.eval_episodes={args.eval_episodes}", *args.overrides]
    train_run(args.config, out=run_dir(args.out, task, seed), overrides=overrides, seed=seed, resume=True,
              steps=args.steps)


def runs_in(out: Path) -> list[tuple[str, int]]:
    """Every (task, seed) with a run folder ``TASK-sSEED`` in ``out``: the suite's tasks in their
    order first, then any other task by name."""
    found = []
    for d in out.iterdir() if out.is_dir() else ():
        task, sep, seed = d.name.rpartition("-s")
        if d.is_dir() and sep and task and seed.isdigit():
            found.append((task, int(seed)))
    order = {t: i for i, t in enumerate(TASKS)}
    return sorted(found, key=lambda ts: (order.get(ts[0], len(order)), ts[0], ts[1]))


def collect(args, runs: list[tuple[str, int]]) -> list[dict]:
    rows = []
    for task, seed in runs:
        rows += [{"task": task, "seed": seed, **r} for r in read_metrics(run_dir(args.out, task, seed))]
    return rows


def summarize(rows: list[dict], ref: dict, steps: int) -> dict:
    """Per task: rtmpc's last return per seed, their mean, TD-MPC2's mean at 100k, wall clock."""
    per_task: dict[str, dict] = {}
    for r in rows:
        t = per_task.setdefault(r["task"], {"task": r["task"], "last": {}, "wall_min": {}, "steps": {}})
        t["last"][r["seed"]] = r["eval_return"]  # rows are in order: the last one wins
        t["wall_min"][r["seed"]] = r["wall_s"] / 60.0
        t["steps"][r["seed"]] = r["env_steps"]
    table = []
    for name, t in per_task.items():
        ours = sum(t["last"].values()) / len(t["last"])
        theirs = [s[100000] for s in ref.get(name, {}).values() if 100000 in s]
        td = sum(theirs) / len(theirs) if theirs else None
        table.append({"task": name, "seeds": t["last"], "mean": ours, "tdmpc2_100k": td,
                      "ratio": ours / td if td is not None else None, "env_steps": t["steps"],
                      "wall_min": t["wall_min"],
                      "complete": all(s >= steps for s in t["steps"].values())})
    done = [t for t in table if t["complete"] and t["tdmpc2_100k"] is not None]
    return {"tasks": table,
            "mean_rtmpc": sum(t["mean"] for t in done) / len(done) if done else None,
            "mean_tdmpc2": sum(t["tdmpc2_100k"] for t in done) / len(done) if done else None,
            "tasks_complete": [t["task"] for t in done],
            "below_90pct_of_tdmpc2": [t["task"] for t in done if t["ratio"] < 0.9],
            "longest_run_min": max((m for t in table for m in t["wall_min"].values()), default=None)}


def write_results(path: Path, rows: list[dict]) -> None:
    from rtmpc.configs.rundir import write_csv

    write_csv(path, [{k: r[k] for k in FIELDS} for r in rows])


def plot(path: Path, rows: list[dict], ref: dict) -> None:
    from rtmpc.configs.plots import pyplot, save_png

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    if not tasks:
        return
    cols = min(4, len(tasks))
    nrows = (len(tasks) + cols - 1) // cols
    fig, axes = pyplot().subplots(nrows, cols, figsize=(3.6 * cols, 2.8 * nrows), dpi=100, squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for seed in sorted({r["seed"] for r in rows if r["task"] == task}):
            pts = [(r["env_steps"], r["eval_return"]) for r in rows if r["task"] == task and r["seed"] == seed]
            ax.plot(*zip(*pts), "o-", ms=3, color="C0", alpha=0.8, label="rtmpc" if seed == min(
                r["seed"] for r in rows if r["task"] == task) else None)
        for i, curve in enumerate(ref.get(task, {}).values()):  # published at 0 and 100k only: no lines
            xs = sorted(curve)
            ax.plot(xs, [curve[x] for x in xs], "s", ms=5, color="C3", alpha=0.6,
                    label="TD-MPC2 seeds (published)" if i == 0 else None)
        ax.set_title(task, fontsize=9)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.supxlabel("environment steps (action repeat counted)", fontsize=9)
    fig.supylabel("evaluation return", fontsize=9)
    fig.tight_layout()
    save_png(fig, path)


def print_table(summary: dict) -> None:
    print(f"{'task':<20} {'rtmpc per seed':<28} {'mean':>7} {'TD-MPC2':>8} {'ratio':>6} {'wall min':>16} {'steps':>8}")
    for t in summary["tasks"]:
        seeds = ", ".join(f"s{s} {v:.1f}" for s, v in t["seeds"].items())
        wall = ", ".join(f"{m:.0f}" for m in t["wall_min"].values())
        td = f"{t['tdmpc2_100k']:.1f}" if t["tdmpc2_100k"] is not None else "-"
        ratio = f"{t['ratio']:.2f}" if t["ratio"] is not None else "-"
        steps = min(t["env_steps"].values())
        print(f"{t['task']:<20} {seeds:<28} {t['mean']:>7.1f} {td:>8} {ratio:>6} {wall:>16} {steps:>8}")
    if summary["mean_rtmpc"] is not None:
        print(f"mean over the {len(summary['tasks_complete'])} complete task(s): rtmpc {summary['mean_rtmpc']:.1f}, "
              f"TD-MPC2 {summary['mean_tdmpc2']:.1f}; more than 10% below TD-MPC2: "
              f"{', '.join(summary['below_90pct_of_tdmpc2']) or 'none'}")


def _list(text: str, cast, name: str) -> list:
    try:
        items = [cast(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        items = []
    if not items:
        from rtmpc.configs import ConfigError

        raise ConfigError(f"--{name} {text!r}: expected a comma list, e.g. --{name} "
                          f"{'cartpole-swingup,walker-walk' if cast is str else '0,1,2'}")
    return items


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rtmpc.scripts.bench_suite", description=__doc__.splitlines()[0])
    p.add_argument("--tasks", help="dm_control tasks, comma list (default: the eight of issue 24; with --report: "
                                   "every run in --out)")
    p.add_argument("--seeds", default="0", help="seeds, comma list")
    p.add_argument("--steps", type=int, default=100_000, help="environment steps per run (action repeat counted)")
    p.add_argument("--config", default="configs/tdmpc.yaml", help="the one latent configuration")
    p.add_argument("--out", type=Path, default=Path("runs/suite"), help="parent folder of the runs and results")
    p.add_argument("--eval-every", type=int, default=10_000, help="environment steps between evaluations")
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="more config overrides for every run")
    p.add_argument("--report", action="store_true", help="train nothing: table, CSV and plot of what has run")
    p.add_argument("--no-plot", action="store_true", help="skip suite.png")
    p.add_argument("--json", action="store_true", help="print only the summary JSON line")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.json else logging.INFO,
                        format="%(levelname).1s %(name)s: %(message)s")
    for noisy in ("absl", "OpenGL", "matplotlib", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from rtmpc.scripts.cli import run_reporting

    return run_reporting("bench_suite", lambda: _run(args))


def _run(args) -> int:
    from rtmpc.configs import ConfigError

    tasks, seeds = _list(args.tasks or ",".join(TASKS), str, "tasks"), _list(args.seeds, int, "seeds")
    if args.steps < 1 or args.eval_every < 1 or args.eval_episodes < 1:
        raise ConfigError(f"--steps {args.steps}, --eval-every {args.eval_every}, --eval-episodes "
                          f"{args.eval_episodes}: all must be >= 1")
    if not args.report:
        from rtmpc import sim

        unknown = [t for t in tasks if t not in sim.task_names()]
        if unknown:
            raise ConfigError(f"--tasks: unknown task(s) {', '.join(unknown)}: `rtmpc tasks` lists them")
        for task in tasks:
            for seed in seeds:
                path = run_dir(args.out, task, seed)
                if finished(path, args.steps):
                    log.info("%s: finished (%d env steps), not run again", path, read_metrics(path)[-1]["env_steps"])
                    continue
                t0 = time.perf_counter()
                train_one(args, task, seed)
                log.info("%s: %.1f min in this call", path, (time.perf_counter() - t0) / 60)
    # results.csv holds every run in --out (a call for one task keeps the others' rows); the
    # table and plot show the tasks and seeds asked for, or with --report and no --tasks, all
    args.out.mkdir(parents=True, exist_ok=True)
    everything = runs_in(args.out)
    write_results(args.out / "results.csv", collect(args, everything))
    shown = everything if args.report and not args.tasks else \
        [(t, s) for t in tasks for s in seeds if (t, s) in set(everything)]
    rows = collect(args, shown)
    ref = reference()
    summary = summarize(rows, ref, args.steps)
    if not args.no_plot and rows:
        plot(args.out / "suite.png", rows, ref)
    if not args.json:
        print_table(summary)
    print(json.dumps({**summary, "results_csv": str(args.out / "results.csv"), "steps": args.steps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
