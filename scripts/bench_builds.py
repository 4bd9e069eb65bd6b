"""Plan time of two (or more) builds of rtmpc on the same model file and planner settings.

"Faster than today" is measured here: each ``--build NAME=PYTHON`` is an interpreter with an
rtmpc install (e.g. a second virtual environment with a worktree of an older commit
installed editable). Each of ``--rounds`` rounds runs every build once, in a shuffled order,
as a fresh process that loads ``--model`` with ``--threads``, builds the planner, plans
``--warmup`` times untimed and ``--plans`` times timed on the same observation; the speedup of
each build over the first is the median over rounds of the per-round ratio of median plan
times (times a second or two apart, so the machine's drift cancels).

    git worktree add --detach /tmp/old COMMIT && python -m venv /tmp/oldvenv
    echo $PWD/.venv/lib/python3.11/site-packages > /tmp/oldvenv/lib/python3.11/site-packages/base.pth
    /tmp/oldvenv/bin/pip install --no-deps -e /tmp/old
    python -m rtmpc.scripts.bench_builds --build old=/tmp/oldvenv/bin/python --build new=.venv/bin/python \\
        --model runs/quickstart/model.onnx --planner cem --samples 150 --horizon 12 --iterations 2 --threads 2

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np

CHILD = r"""
import json, sys, time
import numpy as np
from rtmpc.models.runtime import load_model
from rtmpc.planners import make_planner
from rtmpc.planners.registry import planner_config
a = json.loads(sys.argv[1])
opts = {"rng": 0}
if a["particles"]:
    opts["particles"] = a["particles"]
model = load_model(a["model"], threads=a["threads"], **opts)
cfg = planner_config(a["planner"], **a["planner_options"])
planner = make_planner(cfg, model, 0)
obs = np.zeros(model.dims.obs_dim, np.float32)
for _ in range(a["warmup"]):
    planner.plan(obs)
times = []
for _ in range(a["plans"]):
    t0 = time.perf_counter()
    planner.plan(obs)
    times.append(time.perf_counter() - t0)
print(json.dumps({"ms_median": 1e3 * float(np.median(times)), "ms_p90": 1e3 * float(np.percentile(times, 90))}))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rtmpc.scripts.bench_builds", description=__doc__.splitlines()[0])
    p.add_argument("--build", action="append", required=True, metavar="NAME=PYTHON",
                   help="a build: a name and the interpreter that has it installed (repeat; the first is the "
                        "baseline)")
    p.add_argument("--model", required=True, help="exported model file")
    p.add_argument("--planner", default="cem")
    p.add_argument("--samples", type=int, required=True)
    p.add_argument("--horizon", type=int, required=True)
    p.add_argument("--iterations", type=int, default=1)
    p.add_argument("--elites", type=int, default=0)
    p.add_argument("--prior-samples", type=int, default=0)
    p.add_argument("--particles", type=int, default=0, help="PETS particles per candidate (0: the file's)")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="FIELD=VALUE",
                   help="another planner config field (a number), e.g. --set temperature=0.5")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--plans", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    args = p.parse_args(argv)
    builds = []
    for item in args.build:
        name, sep, python = item.partition("=")
        if not sep or not name or not python:
            p.error(f"--build {item!r}: expected NAME=PYTHON")
        builds.append((name, python))
    options = {"samples": args.samples, "horizon": args.horizon, "iterations": args.iterations,
               "elites": args.elites or max(2, args.samples // 10), "prior_samples": args.prior_samples}
    for item in args.extra:
        key, _, value = item.partition("=")
        options[key] = float(value)
    child = {"model": args.model, "threads": args.threads, "particles": args.particles, "planner": args.planner,
             "planner_options": options, "warmup": args.warmup, "plans": args.plans}
    order = np.random.default_rng(args.seed)
    ms = np.full((len(builds), args.rounds), np.nan)
    for r in range(args.rounds):
        for j in order.permutation(len(builds)):
            res = subprocess.run([builds[j][1], "-c", CHILD, json.dumps(child)], capture_output=True, text=True,
                                 timeout=1800)
            if res.returncode != 0:
                last = (res.stderr.strip().splitlines() or ["no output"])[-1]
                print(f"bench_builds: error: build {builds[j][0]} failed: {last}", file=sys.stderr)
                return 2
            ms[j, r] = json.loads(res.stdout.strip().splitlines()[-1])["ms_median"]
    rows = [{"build": name, "ms_median": float(np.median(ms[j])), "ms_rounds": ms[j].round(3).tolist(),
             "speedup_vs_first": float(np.median(ms[0] / ms[j]))} for j, (name, _) in enumerate(builds)]
    out = {"workload": child, "rounds": args.rounds, "builds": rows}
    if not args.json:
        print(f"{'build':<10} {'ms per plan (median of rounds)':>31} {'speedup vs ' + builds[0][0]:>16}")
        for row in rows:
            print(f"{row['build']:<10} {row['ms_median']:>31.2f} {row['speedup_vs_first']:>16.2f}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
