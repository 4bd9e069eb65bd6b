"""Benchmark MBPO's model rollouts: transitions per second through the exported ONNX ensemble
(:class:`rtmpc.models.mbpo.rollout.EnsembleStep`, what training runs) against the same rollouts in
eager PyTorch, in the same process, at MBPO's batch sizes.

Not a test. Run from the repository root::

    python -m rtmpc.scripts.bench_mbpo [--rows 2000 10000 100000] [--steps 5] [--threads 2]
        [--obs 5] [--act 1] [--members 5] [--hidden 200] [--layers 4] [--repeats 3]

The model is a random-weight PETS ensemble of the elites' size (MBPO: 5 elites of 4 x 200 SiLU;
cartpole: O = 5, A = 1), its normalisers fitted on random data. For each N (rollouts started
at once; MBPO starts 100,000 every 250 steps) both implementations run ``--steps`` TS1 steps from
N random states with random actions: each step deals the N rows out to the members by a random
permutation (N / E rows per member), samples next state and reward from the member's Gaussian.
ONNX Runtime: the members layout file, a session with ``--threads`` intra-op threads, and
its int8 copy (:func:`rtmpc.models.common.quantize.quantize_int8`, hidden layers int8: what
``mbpo.rollout_precision: int8`` rolls out; its accuracy on a trained model is the run's
``int8_rel_diff`` metric, not measured here on random weights). PyTorch: the ensemble's own
batched ``predict`` ([E, N/E, .] baddbmm per layer) under ``torch.no_grad`` with
``torch.set_num_threads(--threads)``, the same dealing and sampling in torch. Each cell is the
best of ``--repeats``, the three implementations interleaved (after one warm-up each). Prints one table and one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def _torch_rollout(model, obs, act, steps: int, gen) -> None:
    import torch

    e, o = model.members, model.obs_dim
    x = torch.from_numpy(obs)
    a = torch.from_numpy(act)
    n = x.shape[0]
    m = -(-n // e)
    for _ in range(steps):
        order = torch.randperm(n, generator=gen)
        slots = torch.cat([order, order[: e * m - n]])
        dm, dlv, rm, rlv = model.predict(x[slots].reshape(e, m, o), a[slots].reshape(e, m, -1))
        nxt = dm + torch.exp(0.5 * dlv) * torch.randn(dm.shape, generator=gen)
        _ = rm + torch.exp(0.5 * rlv) * torch.randn(rm.shape, generator=gen)
        out = torch.empty_like(x)
        out[order] = x[order] + nxt.reshape(e * m, o)[:n]
        x = out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[2000, 10000, 100000])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--obs", type=int, default=5)
    p.add_argument("--act", type=int, default=1)
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    for name in ("steps", "threads", "obs", "act", "members", "hidden", "layers", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} = {getattr(args, name)} must be >= 1")
    if min(args.rows) < 1:
        p.error(f"--rows {args.rows}: every N must be >= 1")

    import torch
    from rtmpc.models.common.ensemble import ProbabilisticEnsemble
    from rtmpc.models.common.ensemble_config import EnsembleConfig
    from rtmpc.models.common.ensemble_export import export_onnx
    from rtmpc.models.common.quantize import quantize_int8
    from rtmpc.models.mbpo.rollout import EnsembleStep
    from rtmpc.models.runtime import open_session

    torch.set_num_threads(args.threads)
    o, a = args.obs, args.act
    model = ProbabilisticEnsemble(o, a, EnsembleConfig(members=args.members, hidden=args.hidden, layers=args.layers,
                                                       propagation="TS1"), seed=0).eval()
    rng = np.random.default_rng(0)
    model.fit_normalisers(rng.standard_normal((1000, o + a)), rng.standard_normal((1000, o + 1)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ensemble.onnx"
        export_onnx(model, path, action_low=-np.ones(a), action_high=np.ones(a), propagation="TS1")
        int8 = quantize_int8(path)
        step = EnsembleStep(open_session(path, args.threads), np.random.default_rng(1), str(path))
        step8 = EnsembleStep(open_session(int8, args.threads), np.random.default_rng(1), str(int8))
        gen = torch.Generator().manual_seed(0)
        for n in args.rows:
            obs = rng.standard_normal((n, o)).astype(np.float32)
            act = rng.uniform(-1, 1, (n, a)).astype(np.float32)

            def onnx_run(obs=obs, act=act, step=step):
                x = obs
                for _ in range(args.steps):
                    x, _ = step.step(x, act)

            def int8_run(obs=obs, act=act):
                onnx_run(obs, act, step8)

            def torch_run(obs=obs, act=act):
                with torch.no_grad():
                    _torch_rollout(model, obs, act, args.steps, gen)

            runs = (("onnx", onnx_run), ("int8", int8_run), ("torch", torch_run))
            times = {label: [] for label, _ in runs}
            for _, fn in runs:
                fn()  # warm-up
            for _ in range(args.repeats):  # interleaved: a drift in machine speed hits all three alike
                for label, fn in runs:
                    t0 = time.perf_counter()
                    fn()
                    times[label].append(time.perf_counter() - t0)
            tps = {k: n * args.steps / min(v) for k, v in times.items()}
            rows.append({"rows": n, "steps": args.steps, "onnx_transitions_per_s": round(tps["onnx"]),
                         "int8_transitions_per_s": round(tps["int8"]),
                         "torch_transitions_per_s": round(tps["torch"]),
                         "speedup": round(tps["onnx"] / tps["torch"], 2),
                         "int8_speedup": round(tps["int8"] / tps["torch"], 2),
                         "int8_vs_fp32": round(tps["int8"] / tps["onnx"], 2)})
    print(f"MBPO model rollouts, {args.members} members of {args.layers} x {args.hidden} SiLU, O = {o}, A = {a}, "
          f"{args.steps} TS1 steps, {args.threads} threads, best of {args.repeats}")
    print(f"{'N rollouts':>11} {'ONNX trans/s':>14} {'int8 trans/s':>14} {'torch trans/s':>14} {'ONNX/torch':>11} "
          f"{'int8/torch':>11} {'int8/ONNX':>10}")
    for r in rows:
        print(f"{r['rows']:>11} {r['onnx_transitions_per_s']:>14,} {r['int8_transitions_per_s']:>14,} "
              f"{r['torch_transitions_per_s']:>14,} {r['speedup']:>10.2f}x {r['int8_speedup']:>10.2f}x "
              f"{r['int8_vs_fp32']:>9.2f}x")
    print(json.dumps({"bench": "mbpo_rollouts", "threads": args.threads, "members": args.members,
                      "hidden": args.hidden, "layers": args.layers, "obs": o, "act": a, "torch": torch.__version__,
                      "machine": platform.machine(), "results": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
