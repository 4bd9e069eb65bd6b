"""``rtmpc bench planner``: time ``plan()`` against the FLOP bound and PyTorch baselines.

Builds a PETS ensemble of the given shape (random weights, normalisers fitted on random
data), exports it to ONNX (parity checked), and in one process, on the same weights:

1. measures the machine's fp32 GEMM time for every layer's ``[M, in] @ [in, out]``
   (M = K * P / E rows per member), through torch (MKL) and ONNX Runtime (MLAS), with
   ``--threads`` threads, and keeps the faster: the FLOP bound (planners.bench);
2. times rtmpc's ``plan()`` (Numba planner over the ONNX Runtime model) in each
   parallel mode: ``default`` (load_model's: lanes from 64 rows per member up, else one
   single-threaded lane) and, with more than one thread, ``lanes`` (always split
   the candidates over threads), ``intra`` (ONNX Runtime's own pool) with spinning off
   and on (``intra-spin``); the JSON's headline numbers are the first mode's;
3. times the PyTorch planners (plain, careful ``torch-bmm``) and, when installed,
   pytorch_mppi's MPPI;

in rounds: each of the ``--repeats`` rounds measures the bound and then one plan of every
implementation in a shuffled order, so that every ratio (fraction of the bound, speedups: medians of the
per-round ratios) compares times taken a fraction of a second apart;

then prints a table and one JSON line (``--json``: only the JSON line) with the median
and p90 ms per plan, model evaluations per second (particle-steps through one member),
the fraction of the FLOP bound, the share of plan time outside model evaluation, and
``speedup_vs_<baseline>`` (plan time) and ``speedup_per_flop_vs_<baseline>`` (time per
model evaluation, each implementation's own count) for each baseline that ran, and
``speedup_per_flop_vs_best`` against the fastest of them.

Equal work: every implementation counts the model evaluations its plans run (rows through
one member); the bench checks that each ran the workload's ``I * H * K * P`` per plan,
says which did not (``equal_work``), and compares per evaluation, so a baseline doing less
or more work than rtmpc cannot skew a speedup. The baselines: ``torch`` (plain batched
PyTorch over the ensemble's own ``predict``), ``torch-bmm`` (the same written carefully:
``baddbmm`` per layer into preallocated buffers, in-place activation, folded normalisers,
preallocated noise, inference mode) and pytorch_mppi (``pip install -e '.[bench]'``).

glibc: large tensors are returned to the OS and faulted in again on every plan unless
its thresholds are raised; the bench raises them (mallopt, as MALLOC_MMAP_THRESHOLD_ and
MALLOC_TRIM_THRESHOLD_ would) so that the torch baselines are timed at their best;
``--no-malloc-tuning`` leaves glibc alone. The rtmpc runtime allocates nothing per plan.
Run nothing else on the machine meanwhile.

``--model NAME`` picks the model family (rtmpc.models.registry); the family's ``bench``
module (``planner_bench()``) builds its random-weight model, its rtmpc and PyTorch
planners and its plan's GEMMs: ``--model latent`` times a TD-MPC-style latent model planned
as TD-MPC2 plans (models/tdmpc/bench.py). ``--int8`` adds the int8 copy where the family
exports one.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

from rtmpc.models import registry
from rtmpc.planners import registry as planners

from . import flags

log = logging.getLogger(__name__)

COLUMNS = [("impl", "s"), ("threads", "d"), ("mode", "s"), ("ms_median", ".1f"), ("ms_p90", ".1f"),
           ("evals_per_s", ".3g"), ("bound_fraction", ".2f"), ("overhead", ".2f"), ("evals_per_plan", ".0f"),
           ("rtmpc_speedup", ".2f"), ("rtmpc_speedup_per_flop", ".2f")]


def add_arguments(p) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="pets", choices=[n for n in registry.names()
                                                         if registry.family(n).planner_bench is not None],
                   help="pets: a probabilistic ensemble; latent: a TD-MPC-style latent model planned with its "
                        "policy prior (defaults then follow TD-MPC2: MPPI K=512, H=3, 6 iterations, 64 elites, "
                        "24 prior trajectories)")
    g.add_argument("--obs-dim", type=int, default=5, help="observation size O")
    g.add_argument("--act-dim", type=int, default=1, help="action size A")
    g.add_argument("--hidden", type=int, default=None, help="units per hidden layer (default 200 pets, 64 latent)")
    g.add_argument("--latent-dim", type=int, default=64, help="latent size Z (latent)")
    g.add_argument("--num-q", type=int, default=5, help="Q heads (latent)")
    g.add_argument("--layers", type=int, default=3, help="hidden layers per member")
    g.add_argument("--ensemble", type=int, default=5, help="members E")
    g.add_argument("--activation", default="silu", choices=("silu", "relu", "tanh"))
    g.add_argument("--particles", type=int, default=0, help="particles per candidate P (0: one per member)")
    g.add_argument("--layout", default="members", choices=("members", "batched"),
                   help="ONNX graph layout (models.common.ensemble_export.LAYOUTS)")
    g = p.add_argument_group("planner")
    g.add_argument("--planner", default="mppi", choices=planners.names())
    g.add_argument("--samples", type=flags.count(2, 1_000_000), default=None,
                   help="candidate sequences K (default 1000 pets, 512 latent)")
    g.add_argument("--horizon", type=flags.count(1, 1000), default=None, help="horizon H (default 30 pets, 3 latent)")
    g.add_argument("--iterations", type=flags.count(1, 1000), default=None,
                   help="iterations per plan (default 1 pets, 6 latent)")
    g.add_argument("--elites", type=int, default=0, help="elites (0: K / 10, at least 2; 64 latent)")
    g.add_argument("--prior-samples", type=int, default=None, help="policy-prior trajectories (latent; default 24)")
    g.add_argument("--threads", type=flags.threads(), default=1,
                   help="threads for every implementation (and the bound)")
    g = p.add_argument_group("measurement")
    g.add_argument("--repeats", type=flags.count(1, 10**6), default=20, help="timed plans per implementation")
    g.add_argument("--warmup", type=flags.count(0, 10**6), default=3, help="untimed plans first")
    g.add_argument("--gap-ms", type=float, default=20.0,
                   help="idle milliseconds before each timed plan (default 20: spinning worker threads of the "
                        "implementation before go to sleep, and every plan starts as a control loop's does, "
                        "after idling; 0: back to back)")
    g.add_argument("--modes", default="all", help="rtmpc modes to time: all, or a comma list of default "
                                                   "(load_model's), lanes (always split), intra, intra-spin")
    g.add_argument("--no-baselines", action="store_true", help="time rtmpc only (no torch planners)")
    g.add_argument("--int8", action="store_true", help="also time the int8 copy of the export (models.common.quantize; "
                                                     "load_model's default mode)")
    g.add_argument("--no-malloc-tuning", action="store_true", help="leave glibc's malloc thresholds alone")
    g.add_argument("--seed", type=flags.seed(), default=0)
    g.add_argument("--json", action="store_true", help="print only one JSON line")


def _tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds (big buffers stay mapped); False off glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False


def ort_gemm(rows: int, n_in: int, n_out: int, threads: int):
    """One ONNX Runtime (MLAS) MatMul [rows, in] @ [in, out] per call, through IOBinding,
    ``threads`` intra-op threads with spinning on (its fastest)."""
    import numpy as np
    from onnx import helper, numpy_helper

    from .bench_activation import ort_call

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n_in, n_out)).astype(np.float32), "w")
    x = np.random.default_rng(1).standard_normal((rows, n_in)).astype(np.float32)
    return ort_call([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", x)], [w], (rows, n_out), threads,
                    spinning=True)


def _command(args) -> str:
    """The command line that reproduces this run, every workload option spelled out."""
    opts = registry.family(args.model).planner_bench().OPTIONS
    parts = [f"--{name.replace('_', '-')} {getattr(args, name)}" for name in opts]
    flags = [f"--{name.replace('_', '-')}" for name in ("no_baselines", "no_malloc_tuning", "int8")
             if getattr(args, name)]
    return " ".join(["rtmpc bench planner", *parts, *flags])


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy as np
    import onnxruntime as ort
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": ort.__version__, "numpy": np.__version__,
            "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def _timeline_ms(parts: dict[str, float], secs, repeats: int) -> dict[str, float]:
    """Milliseconds per plan of each part of the calling thread's time: the model's rollout
    parts, and ``planner`` (the plan outside ``rollout``: sampling, scoring, refitting)."""
    out = {key: 1e3 * value / repeats for key, value in parts.items() if key != "rollout"}
    out["planner"] = 1e3 * (float(secs.sum()) - parts["rollout"]) / repeats
    return out


def run(args) -> int:
    import numpy as np
    import torch
    from rtmpc.configs import ConfigError
    from rtmpc.models.common.torch_planner import torch_gemm
    from rtmpc.planners.bench import best_seconds, flop_bound_seconds, format_table, summarize_ms, time_calls

    all_modes = ("default", "lanes", "intra", "intra-spin")
    family = registry.family(args.model)
    bench = family.planner_bench()
    if args.int8 and "int8" not in family.PRECISIONS:
        raise ConfigError(f"--int8 is not offered for {args.model} models (precisions: "
                          f"{', '.join(family.PRECISIONS)}); drop it")
    bench.resolve_defaults(args)
    if getattr(bench, "MODES", None):
        args.modes = ",".join(bench.MODES)
    modes = list(all_modes) if args.modes == "all" else [m.strip() for m in args.modes.split(",")]
    bad = [m for m in modes if m not in all_modes]
    if bad:
        raise ConfigError(f"--modes {args.modes!r}: unknown mode(s) {bad}; use {', '.join(all_modes)} or all")
    if args.threads < 1 or args.repeats < 1 or args.samples < 2 or args.horizon < 1 or args.iterations < 1:
        raise ConfigError(f"--threads {args.threads}, --repeats {args.repeats}, --samples {args.samples}, "
                          f"--horizon {args.horizon}, --iterations {args.iterations}: need threads, repeats, "
                          f"horizon, iterations >= 1 and samples >= 2")
    if args.threads == 1:  # one thread: the modes are the same thing
        modes = modes[:1]
    malloc_tuned = False if args.no_malloc_tuning else _tune_malloc()
    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory(prefix="rtmpc-bench-")
    setup = bench.setup(args, modes, Path(tmp.name))
    impls, obs, evals, flops = setup["impls"], setup["obs"], setup["evals"], setup["flops"]
    # The FLOP bound's GEMMs: every layer's [rows, in] @ [in, out], through torch and MLAS.
    gemms = [(r, n_in, n_out, count, torch_gemm(r, n_in, n_out), ort_gemm(r, n_in, n_out, args.threads))
             for r, n_in, n_out, count in setup["gemms"]]

    def bound_now() -> tuple[float, list[dict]]:
        per_layer, timed = [], []
        for r, n_in, n_out, count, t_fn, o_fn in gemms:
            t_t, t_o = best_seconds(t_fn), best_seconds(o_fn)
            timed.append((min(t_t, t_o), count))
            per_layer.append({"shape": [r, n_in, n_out], "count": count, "torch_ms": t_t * 1e3,
                              "onnxruntime_ms": t_o * 1e3, "gflops": 2 * r * n_in * n_out / min(t_t, t_o) / 1e9})
        return flop_bound_seconds(timed), per_layer

    # Round robin: each repeat measures the bound, then one plan of every implementation,
    # so that ratios compare times taken within a second of each other (the speed of a
    # shared or virtual machine drifts by tens of percent over minutes).
    for impl in impls:
        for _ in range(args.warmup):
            impl.plan(obs)
    bounds, secs = np.empty(args.repeats), np.empty((len(impls), args.repeats))
    evals_s = np.zeros(len(impls))
    counted = np.zeros(len(impls), np.int64)  # model evaluations the timed plans ran
    parts: list[dict[str, float]] = [{} for _ in impls]  # timeline seconds over the timed plans
    order = np.random.default_rng(args.seed)
    for i in range(args.repeats):
        bounds[i], last_gemm = bound_now()
        for j in order.permutation(len(impls)):  # a new order each round: no position bias
            impl = impls[j]
            time.sleep(args.gap_ms / 1e3)  # let the last implementation's spinning worker threads go to sleep
            e0 = impl.eval_seconds() if impl.eval_seconds else 0.0
            n0 = impl.evaluations() if impl.evaluations else 0
            p0 = impl.timeline() if impl.timeline else {}
            secs[j, i] = time_calls(lambda plan=impl.plan: plan(obs), 1, warmup=0)[0]
            if impl.eval_seconds:
                evals_s[j] += impl.eval_seconds() - e0
            if impl.evaluations:
                counted[j] += impl.evaluations() - n0
            for key, value in (impl.timeline() if impl.timeline else {}).items():
                parts[j][key] = parts[j].get(key, 0.0) + value - p0[key]
    results = []
    for j, impl in enumerate(impls):
        st = summarize_ms(secs[j])
        # Work per plan as the implementation counted it (None: it does not count); per-FLOP
        # ratios divide each plan's time by its work, so unequal work cannot flatter anyone.
        per_plan = counted[j] / args.repeats if impl.evaluations else None
        per_eval = secs[j] / (per_plan or evals)
        per_eval0 = secs[0] / ((counted[0] / args.repeats) if impls[0].evaluations else evals)
        results.append({"impl": impl.impl, "threads": args.threads, "mode": impl.mode, "ms_median": st["median"],
                        "ms_p90": st["p90"], "ms_min": st["min"], "evals_per_s": evals / (st["median"] / 1e3),
                        "evals_per_plan": per_plan,
                        "bound_fraction": float(np.median(bounds / secs[j])),
                        "bound_fraction_iqr": np.percentile(bounds / secs[j], [25, 75]).tolist(),
                        "overhead": 1.0 - evals_s[j] / secs[j].sum() if impl.eval_seconds else None,
                        "rtmpc_speedup": float(np.median(secs[j] / secs[0])),
                        "rtmpc_speedup_iqr": np.percentile(secs[j] / secs[0], [25, 75]).tolist(),
                        "rtmpc_speedup_per_flop": float(np.median(per_eval / per_eval0)),
                        "timeline_ms": _timeline_ms(parts[j], secs[j], args.repeats) if parts[j] else None})
        log.info("%s %s: %.1f ms median", impl.impl, impl.mode, st["median"])
    unequal = [r["impl"] for r in results if r["evals_per_plan"] is not None and r["evals_per_plan"] != evals]
    if unequal:
        log.warning("unequal work: %s ran other than the %d model evaluations per plan the workload needs (%s); "
                    "compare their per-FLOP speedups", ", ".join(unequal), evals,
                    ", ".join(f"{r['impl']} {r['evals_per_plan']:g}" for r in results if r["impl"] in unequal))
    head = results[0]  # rtmpc in the first mode asked for (lanes by default)
    best = min((r for r in results if r["impl"] == "rtmpc"), key=lambda r: r["ms_median"])
    baselines = {r["impl"]: r for r in results if not r["impl"].startswith("rtmpc")}
    bound_s = float(np.median(bounds))

    out = {
        "ms_per_plan_median": head["ms_median"], "ms_per_plan_p90": head["ms_p90"],
        "model_evals_per_s": head["evals_per_s"], "flop_bound_fraction": head["bound_fraction"],
        "overhead_fraction": head["overhead"], "mode": head["mode"], "best_mode": best["mode"],
        **{f"speedup_vs_{name}": r["rtmpc_speedup"] for name, r in baselines.items()},
        **{f"speedup_per_flop_vs_{name}": r["rtmpc_speedup_per_flop"] for name, r in baselines.items()},
        **({"speedup_per_flop_vs_best": min(r["rtmpc_speedup_per_flop"] for r in baselines.values()),
            "best_baseline": min(baselines.values(), key=lambda r: r["rtmpc_speedup_per_flop"])["impl"]}
           if baselines else {}),
        "equal_work": not unequal,
        "flop_bound_ms": bound_s * 1e3, "flop_bound_ms_range": [float(bounds.min() * 1e3), float(bounds.max() * 1e3)],
        "bound_gflops": flops / bound_s / 1e9, "plan_gflop": flops / 1e9, "evals_per_plan": evals,
        "workload": setup["workload"],
        "threads": args.threads, "gemm": last_gemm,
        **({"int8": {**{k_: r[k_] for k_ in ("ms_median", "ms_p90", "bound_fraction", "overhead")
                        for r in results if r["impl"] == "rtmpc-int8"},
                     "speedup_vs_fp32": 1.0 / next(r["rtmpc_speedup"] for r in results if r["impl"] == "rtmpc-int8"),
                     "prediction": setup["int8_error"]}} if args.int8 else {}),
        "parity_max_abs": setup["parity"], "malloc_tuned": malloc_tuned,
        "results": results, "machine": _machine(), "command": _command(args),
    }
    if not args.json:
        w = out["workload"]
        print(f"planner benchmark: {setup['title']}; {args.threads} thread(s), {out['machine']['cores']} cores, "
              f"load {out['machine']['load_avg_1min']:.2f}")
        print(f"FLOP bound {bound_s * 1e3:.1f} ms per plan ({flops / 1e9:.2f} GFLOP at "
              f"{flops / bound_s / 1e9:.0f} GFLOP/s; per-layer GEMM "
              + ", ".join(f"{g['shape'][1]}x{g['shape'][2]} {g['gflops']:.0f}" for g in last_gemm)
              + f" GFLOP/s); {evals} model evaluations per plan" + (f"; layout {w['layout']}" if "layout" in w else ""))
        print(format_table(COLUMNS, results))
        for r in results:
            if r["timeline_ms"]:
                print(f"timeline {r['impl']} {r['mode']} (ms per plan, calling thread): "
                      + ", ".join(f"{k} {v:.2f}" for k, v in r["timeline_ms"].items()))
    print(json.dumps(out))
    tmp.cleanup()
    return 0
