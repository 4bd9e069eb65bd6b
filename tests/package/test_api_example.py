"""docs/api.md's example runs as written, on a tiny trained model."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_the_documented_example_runs(tmp_path):
    from rtmpc.models import registry
    from rtmpc.scripts.train import train_run

    run = tmp_path / "run"
    train_run("pets_cartpole", out=run, overrides=list(registry.family("pets").SMOKE_OVERRIDES))
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert "runs/quickstart" in code and '"cartpole-swingup"' in code
    # the tiny model: trained on point-target, same action repeat
    code = code.replace("runs/quickstart", str(run)).replace('"cartpole-swingup"', '"point-target"')
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(r"return over [\d.]+ s: -?[\d.]+", res.stdout), res.stdout


def test_a_bad_override_names_the_setting(tmp_path):
    from rtmpc.configs import ConfigError

    import rtmpc

    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ConfigError, match="planner.horizon = 0 is out of range"):
        rtmpc.load_planner(tmp_path / "model.onnx", horizon=0)
