"""Planner benchmark arithmetic: FLOP counts, the GEMM bound, timing statistics. numpy only.

The workload of one plan over a PETS ensemble (E members, P particles per candidate, K
candidates, H steps, I iterations) is ``I * H * K * P`` *model evaluations*: one
particle's step through one member's MLP. Each step evaluates every member on
``M = K * P / E`` rows, one GEMM per member and layer of shape ``[M, in] @ [in, out]``.

The *FLOP bound* of a plan is the time the machine's fastest fp32 GEMM needs for exactly
those products and nothing else (no bias, activation, sampling or Python)::

    bound = I * H * E * sum over layers of t_gemm(M, in_l, out_l)

where ``t_gemm`` is measured on the machine, in the same run, with the same thread count
(:func:`flop_bound_seconds`). ``flop_bound_fraction = bound / plan time``: 1.0 would be
a planner whose every cycle goes into matrix products at the best measured rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BenchImpl", "mlp_shapes", "mlp_flops", "plan_evaluations", "plan_flops", "flop_bound_seconds",
           "planner_config", "time_calls", "best_seconds", "summarize_ms", "format_table"]


@dataclass(frozen=True)
class BenchImpl:
    """One implementation ``rtmpc bench planner`` times: ``plan(obs)``, with optional
    counters read before and after each timed plan: ``eval_seconds()`` (seconds the calling
    thread spent in model calls, for the overhead share), ``evaluations()`` (model
    evaluations run, for the equal-work check and per-FLOP speedups) and ``timeline()``
    (cumulative seconds per part of the model's rollouts, e.g. the PETS runtime's
    :meth:`~rtmpc.models.pets.runtime.PETSRolloutModel.timeline`; the plan's time outside
    ``rollout`` is reported as ``planner``)."""

    impl: str
    mode: str
    plan: Callable[[object], object]
    eval_seconds: Callable[[], float] | None = None
    evaluations: Callable[[], int] | None = None
    timeline: Callable[[], dict[str, float]] | None = None  # cumulative seconds per part of a rollout


def mlp_shapes(in_dim: int, hidden: int, layers: int, out_dim: int) -> list[tuple[int, int]]:
    """(in, out) of every affine layer of an MLP: ``layers`` hidden layers of ``hidden``
    units, then the head. A PETS member: in = O + A, out = 2 * (O + 1) with a learned
    reward (mean and log-variance of delta obs and reward), 2 * O without."""
    for name, v in (("in_dim", in_dim), ("hidden", hidden), ("layers", layers), ("out_dim", out_dim)):
        if int(v) < 1:
            raise ValueError(f"{name} = {v} must be >= 1")
    sizes = [in_dim] + [hidden] * layers + [out_dim]
    return list(zip(sizes[:-1], sizes[1:], strict=True))


def mlp_flops(shapes: Sequence[tuple[int, int]], rows: int = 1) -> int:
    """FLOPs of the matrix products of ``rows`` inputs through the layers (2 per
    multiply-add: ``2 * rows * sum(in * out)``); bias and activation not counted."""
    return 2 * int(rows) * sum(int(a) * int(b) for a, b in shapes)


def plan_evaluations(samples: int, horizon: int, iterations: int, particles: int) -> int:
    """Model evaluations (particle-steps through one member) of one plan: I * H * K * P."""
    return int(iterations) * int(horizon) * int(samples) * int(particles)


def plan_flops(shapes: Sequence[tuple[int, int]], samples: int, horizon: int, iterations: int,
               particles: int) -> int:
    """Matrix-product FLOPs of one plan."""
    return mlp_flops(shapes, plan_evaluations(samples, horizon, iterations, particles))


def flop_bound_seconds(gemms: Sequence[tuple[float, int]]) -> float:
    """The FLOP bound of one plan: ``sum(count * seconds)`` over its matrix products, each
    given as (measured seconds of one ``[rows, in] @ [in, out]`` product, how many of them
    a plan runs). A PETS plan runs each layer's product (M rows per member) I * H * E times;
    other families count theirs in their ``bench`` module."""
    if any(not (sec > 0.0) or int(n) < 0 for sec, n in gemms):
        raise ValueError(f"GEMM times must be positive and counts >= 0, got {list(gemms)}")
    return float(sum(sec * int(n) for sec, n in gemms))


def planner_config(args, **extra):
    """The benchmarked planner's config from the bench's options (planner, samples, horizon,
    iterations) and a family's ``extra`` settings (those the planner's config has not, such as
    MPPI's temperature for CEM, are left out)."""
    from rtmpc.planners.registry import config_class

    cls = config_class(args.planner)
    extra = {k: v for k, v in extra.items() if k in cls.field_names()}
    return cls(samples=args.samples, horizon=args.horizon, iterations=args.iterations, **extra)


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 2,
               clock: Callable[[], float] = time.perf_counter) -> np.ndarray:
    """Seconds of ``repeats`` calls of fn (after ``warmup`` untimed ones), one per call."""
    if repeats < 1:
        raise ValueError(f"repeats = {repeats} must be >= 1")
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return out


def best_seconds(fn: Callable[[], object], budget_s: float = 0.01, trials: int = 3,
                 clock: Callable[[], float] = time.perf_counter) -> float:
    """Per-call seconds of a short call (a GEMM): the best of ``trials`` batches of
    back-to-back calls, the batch sized so that all trials take about ``budget_s``."""
    fn()
    t0 = clock()
    fn()
    one = max(clock() - t0, 1e-7)
    n = max(1, min(10_000, int(budget_s / trials / one)))
    best = float("inf")
    for _ in range(trials):
        t0 = clock()
        for _ in range(n):
            fn()
        best = min(best, (clock() - t0) / n)
    return best


def summarize_ms(seconds: np.ndarray) -> dict[str, float]:
    """Median, 90th percentile, minimum and mean of per-call times, in milliseconds."""
    ms = np.asarray(seconds, np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no timings to summarise")
    return {"median": float(np.median(ms)), "p90": float(np.percentile(ms, 90)),
            "min": float(ms.min()), "mean": float(ms.mean())}


def format_table(columns: Sequence[tuple[str, str]], rows: Sequence[dict]) -> str:
    """Right-aligned plain-text table: columns are (key, format spec) pairs, a missing or
    None value prints as '-'."""
    cells = [[key for key, _ in columns]]
    for row in rows:
        cells.append([("-" if row.get(key) is None else format(row[key], spec)) for key, spec in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells)
