"""scripts/bench_mbpo.py with a tiny model: one row per N, all three implementations measured, one JSON line."""

from __future__ import annotations

import json

from rtmpc.scripts import bench_mbpo


def test_bench_mbpo_reports_both_implementations_per_batch_size(capsys):
    assert bench_mbpo.main(["--rows", "40", "300", "--steps", "2", "--members", "3", "--hidden", "8", "--layers", "2",
                            "--repeats", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert result["bench"] == "mbpo_rollouts" and [r["rows"] for r in result["results"]] == [40, 300]
    for r in result["results"]:
        assert r["onnx_transitions_per_s"] > 0 and r["torch_transitions_per_s"] > 0
        assert r["int8_transitions_per_s"] > 0
        assert abs(r["speedup"] - r["onnx_transitions_per_s"] / r["torch_transitions_per_s"]) < 0.01
        assert abs(r["int8_vs_fp32"] - r["int8_transitions_per_s"] / r["onnx_transitions_per_s"]) < 0.01
    assert any("ONNX/torch" in line and "int8/ONNX" in line for line in out)
