"""MBPO's terminations against Gymnasium's own, on random-action episodes.

Not a test (tests/models/test_mbpo_termination.py checks the same at 1,500 steps). For each task,
``--steps`` random-action steps (uniform in the bounds, episodes reset with seeds from
``--seed``)::

    python -m rtmpc.scripts.diag_mbpo_termination [--steps 3000] [--tasks gym:Hopper-v5 ...] [--inputs all]

- ``known``: where the task has a known function (``mbpo.termination: known``), the steps at
  which it disagrees with the environment's ``terminated``;
- ``learned``: the default learned head (``mbpo.termination: learned``,
  :mod:`rtmpc.models.mbpo.termination`; ``--inputs`` as ``termination_model.inputs``) refitted
  ``--refits`` times on those steps: recall on held-out terminal rows and false-positive rate on
  held-out others (every fifth row held out).

One table and one JSON line.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def episodes(task: str, steps: int, seed: int):
    """obs, act, next_obs, terminated of ``steps`` random-action steps of ``task``."""
    from rtmpc import sim

    env, rng = sim.make(task), np.random.default_rng(seed)
    rows: list[tuple] = []
    while len(rows) < steps:
        obs, _ = env.reset(seed=int(rng.integers(1 << 30)))
        while True:
            a = rng.uniform(env.spec.action_low, env.spec.action_high).astype(np.float32)
            nxt, _, terminated, truncated, _ = env.step(a)
            rows.append((obs, a, nxt, bool(terminated)))
            obs = nxt
            if terminated or truncated:
                break
    env.close()
    obs, act, nxt, done = (np.asarray(x) for x in zip(*rows, strict=True))
    return obs.astype(np.float32), act.astype(np.float32), nxt.astype(np.float32), done


def main(argv=None) -> int:
    import torch
    from rtmpc.models.mbpo.config import TerminationConfig
    from rtmpc.models.mbpo.known_termination import KNOWN, known_termination
    from rtmpc.models.mbpo.termination import TerminationHead, fit_termination

    p = argparse.ArgumentParser(prog="python -m rtmpc.scripts.diag_mbpo_termination",
                                description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=sorted(KNOWN), help="gym:ID tasks (default: those with a known "
                                                                       "function)")
    p.add_argument("--steps", type=int, default=3000, help="random-action steps per task")
    p.add_argument("--refits", type=int, default=3, help="refits of the learned head on the same steps")
    p.add_argument("--inputs", choices=("next", "all"), default="next",
                   help="what the learned head reads (mbpo.termination_model.inputs)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.steps < 10 or args.refits < 1:
        p.error("--steps must be >= 10 and --refits >= 1")
    torch.set_num_threads(1)
    out = []
    for task in args.tasks:
        obs, act, nxt, done = episodes(task, args.steps, args.seed)
        fn = known_termination(task)
        row = {"task": task, "steps": len(done), "terminal": int(done.sum()),
               "known_mismatches": None if fn is None else int((fn.done(obs, act, nxt) != done).sum())}
        cfg = TerminationConfig(inputs=args.inputs)
        torch.manual_seed(args.seed)
        head = TerminationHead(obs.shape[1], act.shape[1], cfg, seed=args.seed)
        opt = torch.optim.Adam(head.parameters(), lr=cfg.lr)
        rng = np.random.default_rng(args.seed)
        fits = [fit_termination(head, opt, obs, act, nxt, done, cfg, rng) for _ in range(args.refits)]
        row["held_out_terminal"] = int(done[np.arange(len(done)) % 5 == 0].sum())
        row["learned_recall"] = [round(f["term_recall"], 3) if "term_recall" in f else None for f in fits]
        row["learned_fpr"] = [round(f["term_fpr"], 4) if "term_fpr" in f else None for f in fits]
        out.append(row)
    print(f"{'task':26s} {'steps':>6s} {'terminal':>8s} {'known: mismatches':>18s} {'held-out terminal':>18s} "
          f"{'learned recall per refit':>26s} {'learned false-positive rate':>28s}")
    for r in out:
        km = "-" if r["known_mismatches"] is None else str(r["known_mismatches"])
        print(f"{r['task']:26s} {r['steps']:6d} {r['terminal']:8d} {km:>18s} {r['held_out_terminal']:18d} "
              f"{str(r['learned_recall']):>26s} {str(r['learned_fpr']):>28s}")
    print(json.dumps({"diag": "mbpo_termination", "steps": args.steps, "seed": args.seed, "inputs": args.inputs,
                      "tasks": out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
