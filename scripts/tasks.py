"""``rtmpc tasks``: the registered tasks with their sizes and control periods."""

from __future__ import annotations

import json


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="one JSON line per task")
    p.add_argument("--action-repeat", type=int, default=1, help="report periods with this action repeat")


def run(args) -> int:
    from rtmpc import sim
    rows = []
    for name in sim.task_names():
        env = sim.make(name, action_repeat=args.action_repeat)
        rows.append(env.spec.describe())
        env.close()
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    print(f"{'task':28s} {'obs':>4s} {'act':>4s} {'period s':>9s} {'rate Hz':>8s} {'steps':>6s}")
    for r in rows:
        print(f"{r['name']:28s} {r['obs_dim']:4d} {r['act_dim']:4d} {r['control_period']:9.4f} "
              f"{r['rate_hz']:8.1f} {r['episode_steps']:6d}")
    return 0
