"""``rtmpc quickstart`` end to end through the installed console script, at a tiny budget:
train, export with its parity line, one wall-clock episode with its JSON summary, the
telemetry plot and the video; run again, it resumes and still exits 0."""

from __future__ import annotations

import json

import pytest
from tiny_run import TINY, rtmpc


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "run"
    res = rtmpc("quickstart", "--out", str(out), *TINY, "--servo", "50", "--json", timeout=600)
    return out, res


def test_quickstart_makes_every_stage_s_product(quickstart):
    out, res = quickstart
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    # stage 2: the parity line, and the model it checked
    parity = next(ln for ln in res.stdout.splitlines() if ln.startswith("exported "))
    assert "ONNX Runtime vs PyTorch" in parity and str(out / "model.onnx") in parity
    assert (out / "model.onnx").stat().st_size > 0
    # stage 3: the loop's summary as JSON
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["mode"] == "realtime" and summary["episodes"] == 1 and summary["cycles"] > 0
    assert summary["parity_max_abs"] <= 1e-4 and summary["rate_hz_target"] == pytest.approx(6.25)
    # the loop runs a servo (pets_cartpole's 100 Hz; point-target's 20 ms physics step takes 50), the
    # planner the model's 6.25 Hz; both rates are printed
    assert summary["servo_hz"] == 50 and summary["loop_mode"] == "servo" and summary["replans"] >= 1
    assert "servo         50 Hz" in res.stdout
    for key in ("return_mean", "misses", "plan_ms_p99", "jitter_ms_p99", "safety_events"):
        assert key in summary, key
    assert (out / "control" / "episode0" / "telemetry.png").read_bytes()[:4] == b"\x89PNG"
    video = out / "episode.mp4"
    assert summary["video"] == str(video) and video.stat().st_size > 1000


def test_quickstart_run_again_resumes(quickstart):
    out, first = quickstart
    assert first.returncode == 0, first.stderr[-3000:]
    res = rtmpc("quickstart", "--out", str(out), *TINY, "--json", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["cycles"] > 0
