"""``rtmpc bench BENCH``: the benchmarks, one sub-command each.

A bench is a module in scripts/ with ``add_arguments(parser)`` and ``run(args) -> int``,
registered in :data:`BENCHES` below; adding one is adding an entry.
"""

from __future__ import annotations

import importlib

# name -> (module, one-line help)
BENCHES = {
    "planner": (".bench_planner", "time plan() against the FLOP bound and PyTorch baselines "
                                         "(pytorch_mppi when installed)"),
    "planner-grid": (".bench_planner_grid", "rtmpc bench planner over rows per step x horizon x planner x threads, "
                                            "at equal work, resumable"),
    "loop": (".bench_loop", "wake-up jitter, deadline misses and plan time of the loop on a wall-clock robot"),
    "activation": (".bench_activation", "what SiLU costs next to a hidden layer's matrix product (the "
                                               "FLOP bound counts it as free)"),
    "ops": (".bench_ops", "where one call of an exported model spends its time, per ONNX Runtime operator"),
    "bridge": (".bench_bridge", "round-trip latency of the robot bridge over loopback at the control rate"),
}


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, (module, help_text) in BENCHES.items():
        q = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(module, __package__)
        mod.add_arguments(q)
        q.set_defaults(_bench=mod.run)


def run(args) -> int:
    return int(args._bench(args) or 0)
