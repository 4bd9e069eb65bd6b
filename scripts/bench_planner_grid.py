"""``rtmpc bench planner-grid``: ``rtmpc bench planner`` over a grid of workloads, at equal work.

Runs one ``rtmpc bench planner --json`` per point of rows per step x horizon x planner x
threads, each in its own process (so that no point inherits another's allocations or
thread pools), with the default PETS workload unless options after ``--`` say otherwise.
Rows per step are candidates times particles: ``--samples`` is rows / P (P = 5, one
particle per member, by default), so every implementation pushes the same rows through
the ensemble per step.

Each point's JSON line is appended to ``--out`` as it finishes; a second run with the same
``--out`` skips the points already there (resume after a stop). Ends with a table (plan
ms of rtmpc and of each baseline, rtmpc's fraction of the FLOP bound, its per-FLOP speedup
over each baseline and over the best of them, and the *ceiling*: the most any planner could be
ahead of the best baseline, 1 / that baseline's fraction of the FLOP bound, since no plan
takes less than the bound) and one summary JSON line.

    rtmpc bench planner-grid --rows 250,750,2500,5000 --horizons 3,12,30 --planners mppi,cem \\
        --threads 1,2 --out runs/bench/planner_grid.jsonl
    rtmpc bench planner-grid --rows 250 --horizons 3 -- --hidden 64     # other options: after --
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from rtmpc.configs import ConfigError

from . import flags

log = logging.getLogger(__name__)

BASELINES = ("torch-bmm", "torch", "pytorch_mppi")


def add_arguments(p) -> None:
    p.add_argument("--rows", default="250,750,2500,5000", help="rows per step (samples x particles), comma list")
    p.add_argument("--horizons", default="3,12,30", help="horizons H, comma list")
    p.add_argument("--planners", default="mppi,cem", help="planners, comma list")
    p.add_argument("--threads", dest="thread_counts", default="1,2", help="thread counts, comma list")
    p.add_argument("--particles", type=flags.count(1, 1000), default=5, help="particles per candidate P")
    p.add_argument("--repeats", type=flags.count(1, 10**6), default=10, help="timed plans per implementation")
    p.add_argument("--warmup", type=flags.count(0, 10**6), default=2, help="untimed plans first")
    p.add_argument("--out", type=Path, default=Path("runs/bench/planner_grid.jsonl"),
                   help="JSON lines, one per point (appended; points already there are skipped)")
    p.add_argument("--timeout", type=flags.count(1, 10**6), default=900, help="seconds per point")
    p.add_argument("--json", action="store_true", help="end with one summary JSON line")
    p.add_argument("extra", nargs="*", help="after --: more `rtmpc bench planner` options for every point")


def _ints(text: str, name: str, low: int = 1) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--{name} {text!r}: expected a comma list of integers, e.g. 250,750") from None
    if not values or min(values) < low:
        raise ConfigError(f"--{name} {text!r}: every value must be >= {low}")
    return values


def points(args) -> list[dict]:
    """The grid's points: planner, rows, horizon, threads and the samples that give the rows."""
    from rtmpc.planners import registry

    planners = [p.strip() for p in args.planners.split(",") if p.strip()]
    bad = [p for p in planners if p not in registry.names()]
    if bad or not planners:
        raise ConfigError(f"--planners {args.planners!r}: choose from {', '.join(registry.names())}")
    out = []
    for threads in _ints(args.thread_counts, "threads"):
        for planner in planners:
            for rows in _ints(args.rows, "rows"):
                if rows % args.particles or rows // args.particles < 2:
                    raise ConfigError(f"--rows {rows} is not a multiple of --particles {args.particles} (with at "
                                      f"least 2 candidates): choose rows = candidates x {args.particles}")
                for h in _ints(args.horizons, "horizons"):
                    out.append({"planner": planner, "rows": rows, "horizon": h, "threads": threads,
                                "samples": rows // args.particles})
    return out


def _key(point: dict) -> tuple:
    return point["planner"], point["rows"], point["horizon"], point["threads"]


def _done(path: Path) -> dict[tuple, dict]:
    """Points already in ``path``; a torn last line (a killed run) is dropped."""
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                done[_key(rec["point"])] = rec
            except (ValueError, KeyError, TypeError):
                continue
    return done


def _end_line(path: Path) -> None:
    """Close a torn last line (a run killed mid-write) so the next record starts a line of its own."""
    if path.is_file() and path.stat().st_size:
        with path.open("rb+") as f:
            f.seek(-1, 2)
            if f.read(1) != b"\n":
                f.write(b"\n")


def _run_point(point: dict, args) -> dict:
    cmd = [sys.executable, "-m", "rtmpc.scripts.cli", "bench", "planner", "--planner", point["planner"],
           "--samples", str(point["samples"]), "--horizon", str(point["horizon"]), "--threads", str(point["threads"]),
           "--particles", str(args.particles), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
           "--modes", "default", "--json", *args.extra]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    lines = res.stdout.strip().splitlines()
    if res.returncode != 0 or not lines:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"rtmpc bench planner failed at {point}: {last}")
    return json.loads(lines[-1])


def row(point: dict, bench: dict) -> dict:
    """One table row from a point's bench JSON."""
    by_impl = {r["impl"]: r for r in bench["results"]}
    out = {**point, "rtmpc_ms": bench["ms_per_plan_median"], "bound_ms": bench["flop_bound_ms"],
           "bound_fraction": bench["flop_bound_fraction"], "equal_work": bench.get("equal_work")}
    for name in BASELINES:
        out[f"{name}_ms"] = by_impl[name]["ms_median"] if name in by_impl else None
        out[f"vs_{name}"] = bench.get(f"speedup_per_flop_vs_{name}")
    out["vs_best"] = bench.get("speedup_per_flop_vs_best")
    out["best_baseline"] = bench.get("best_baseline")
    # The most any planner could be ahead of the best baseline: a plan takes at least the FLOP
    # bound, so the lead is at most (best baseline's time) / bound = 1 / its bound fraction.
    best = by_impl.get(out["best_baseline"] or "", {})
    out["best_baseline_fraction"] = best.get("bound_fraction")
    out["ceiling"] = 1.0 / best["bound_fraction"] if best.get("bound_fraction") else None
    return out


COLUMNS = [("planner", "s"), ("rows", "d"), ("horizon", "d"), ("threads", "d"), ("rtmpc_ms", ".2f"),
           ("torch-bmm_ms", ".2f"), ("torch_ms", ".2f"), ("pytorch_mppi_ms", ".2f"), ("bound_fraction", ".2f"),
           ("vs_torch-bmm", ".2f"), ("vs_torch", ".2f"), ("vs_pytorch_mppi", ".2f"), ("vs_best", ".2f"),
           ("ceiling", ".2f")]


def run(args) -> int:
    from rtmpc.planners.bench import format_table

    grid = points(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = _done(args.out)
    todo = [p for p in grid if _key(p) not in done]
    log.info("planner grid: %d points, %d already in %s", len(grid), len(grid) - len(todo), args.out)
    try:
        from tqdm import tqdm
    except ImportError:  # progress is optional
        def tqdm(items, **_):
            return items
    _end_line(args.out)
    for point in tqdm(todo, desc="planner grid", unit="point", disable=args.json):
        bench = _run_point(point, args)
        rec = {"point": point, "bench": bench}
        with args.out.open("a") as f:  # one line per point: a kill loses at most the point in flight
            f.write(json.dumps(rec) + "\n")
        done[_key(point)] = rec
    rows = [row(p, done[_key(p)]["bench"]) for p in grid]
    worst = min((r for r in rows if r["vs_best"] is not None), key=lambda r: r["vs_best"], default=None)
    summary = {"points": len(rows), "out": str(args.out), "min_speedup_per_flop_vs_best": worst and worst["vs_best"],
               "worst_point": worst and {k: worst[k] for k in ("planner", "rows", "horizon", "threads")},
               "all_equal_work": all(r["equal_work"] for r in rows), "rows": rows}
    if not args.json:
        print(format_table(COLUMNS, rows))
        if worst:
            print(f"lowest per-FLOP speedup over the best baseline: {worst['vs_best']:.2f} "
                  f"({worst['planner']}, {worst['rows']} rows, H {worst['horizon']}, {worst['threads']} thread(s), "
                  f"best baseline {worst['best_baseline']})")
    print(json.dumps(summary))
    return 0
