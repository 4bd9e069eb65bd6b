"""The planner benchmark's arithmetic: FLOP counts, the bound, timing statistics."""

import numpy as np
import pytest
from rtmpc.models.tdmpc.bench import latent_plan_gemms
from rtmpc.planners.bench import (
    best_seconds,
    flop_bound_seconds,
    format_table,
    mlp_flops,
    mlp_shapes,
    plan_evaluations,
    plan_flops,
    summarize_ms,
    time_calls,
)


def test_mlp_shapes_of_a_pets_member():
    # O = 5, A = 1, 3 x 200 hidden, head = mean and log-variance of 5 deltas and the reward.
    assert mlp_shapes(6, 200, 3, 12) == [(6, 200), (200, 200), (200, 200), (200, 12)]
    assert mlp_shapes(3, 8, 1, 4) == [(3, 8), (8, 4)]
    with pytest.raises(ValueError, match="layers = 0"):
        mlp_shapes(6, 200, 0, 12)


def test_flops_count_two_per_multiply_add():
    shapes = mlp_shapes(6, 200, 3, 12)
    per_row = 2 * (6 * 200 + 200 * 200 + 200 * 200 + 200 * 12)
    assert per_row == 167_200
    assert mlp_flops(shapes) == per_row
    assert mlp_flops(shapes, rows=1000) == 1000 * per_row
    # A plan: I * H * K * P particle-steps, each one row through one member.
    assert plan_evaluations(samples=1000, horizon=30, iterations=2, particles=5) == 300_000
    assert plan_flops(shapes, 1000, 30, 2, 5) == 300_000 * per_row


def test_bound_sums_the_layer_gemms_per_member_step_and_iteration():
    # 3 layers at 1, 2, 3 ms per member-step, each run E 5 * H 10 * I 2 = 100 times: 0.6 s.
    assert flop_bound_seconds([(1e-3, 100), (2e-3, 100), (3e-3, 100)]) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="positive"):
        flop_bound_seconds([(1e-3, 1), (0.0, 1)])


def test_latent_plan_counts_every_product_of_a_td_mpc_plan():
    layers = {"dynamics": [(65, 64), (64, 64)], "reward": [(65, 64), (64, 101)], "pi": [(64, 64), (64, 2)],
              "q": [(65, 64), (64, 101)]}
    gemms = latent_plan_gemms(layers, samples=512, horizon=3, iterations=6, prior_samples=24)
    rows = {}
    for r, i, o, c in gemms:
        if r == 512:
            rows[(r, i, o)] = rows.get((r, i, o), 0) + c
    assert rows[(512, 65, 64)] == 6 * 3 + 6 * 3 + 6 * 2  # dynamics + reward per step; 2 Q heads at the end
    assert rows[(512, 64, 2)] == 6  # the policy's head at the terminal latent, once per iteration
    prior = [(i, o, c) for r, i, o, c in gemms if r == 24]  # policy and dynamics along H, once per plan
    assert sorted(prior) == sorted([(64, 64, 3), (64, 2, 3), (65, 64, 3), (64, 64, 3)])
    assert not [g for g in latent_plan_gemms(layers, 512, 3, 6, 0) if g[0] != 512]


def test_time_calls_uses_the_injected_clock():
    ticks = iter(np.arange(0.0, 100.0, 0.5))
    calls = []
    out = time_calls(lambda: calls.append(1), repeats=4, warmup=2, clock=lambda: next(ticks))
    assert len(calls) == 6 and out.shape == (4,)
    np.testing.assert_allclose(out, 0.5)
    with pytest.raises(ValueError, match="repeats = 0"):
        time_calls(lambda: None, repeats=0)


def test_best_seconds_is_the_fastest_batch_per_call():
    # Each call advances the clock by 1 ms, except those of the second batch (0.5 ms).
    state = {"now": 0.0, "calls": 0}

    def fn():
        state["calls"] += 1
        state["now"] += 0.0005 if 5 < state["calls"] <= 8 else 0.001

    per_call = best_seconds(fn, budget_s=0.0093, trials=3, clock=lambda: state["now"])
    assert per_call == pytest.approx(0.0005)  # batches of 3 calls after 2 sizing calls
    assert state["calls"] == 2 + 3 * 3


def test_summary_in_milliseconds():
    s = summarize_ms(np.array([0.001, 0.002, 0.003, 0.004, 0.010]))
    assert s["median"] == pytest.approx(3.0) and s["min"] == pytest.approx(1.0)
    assert s["p90"] == pytest.approx(np.percentile([1, 2, 3, 4, 10], 90))
    assert s["mean"] == pytest.approx(4.0)


def test_table_aligns_and_marks_missing_values():
    text = format_table([("impl", "s"), ("ms", ".1f")], [{"impl": "rtmpc", "ms": 12.34}, {"impl": "torch"}])
    lines = text.splitlines()
    assert lines[0].split() == ["impl", "ms"]
    assert lines[1].split() == ["rtmpc", "12.3"] and lines[2].split() == ["torch", "-"]
    assert len({len(line) for line in lines}) == 1
