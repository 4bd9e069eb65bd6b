"""One contract over every registered model family: a tiny train -> export with parity ->
the runtime without torch -> one `rtmpc control` episode through the console script.
A new family is covered by registering it (rtmpc.models.registry)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from rtmpc.models import registry
from rtmpc.models.base import Policy, RolloutModel

FAMILIES = registry.names()


@pytest.fixture(scope="module", params=FAMILIES)
def trained(request, tmp_path_factory):
    from rtmpc.scripts.train import train_run

    family = registry.family(request.param)
    out = tmp_path_factory.mktemp(f"family-{request.param}") / "run"
    rows = train_run(family.EXAMPLE_CONFIG, out=out, overrides=list(family.SMOKE_OVERRIDES))
    return request.param, family, out, rows


def test_the_family_provides_every_entry_point(trained):
    name, family, _, _ = trained
    assert family.NAME == name and family.PRECISIONS[0] == "fp32" and family.SECTIONS
    for entry in ("train_model", "export_model", "runtime_class", "predictor_class"):
        assert callable(getattr(family, entry)), entry
    assert issubclass(family.runtime_class(), (RolloutModel, Policy))


def test_train_writes_a_model_and_metrics(trained):
    _, _, out, rows = trained
    assert rows and (out / "model.onnx").is_file() and (out / "metrics.csv").is_file()


def test_export_checks_parity_within_the_stated_tolerance(trained):
    from rtmpc.scripts.export import export_run

    _, _, out, _ = trained
    from rtmpc.models.runtime import load_model

    dims = load_model(out / "model.onnx").dims  # the file train wrote
    result = export_run(out, samples=8)
    # the family's own check allows atol + rtol * |value|; these tiny models' outputs are O(1), so the
    # worst difference must sit under the absolute part alone (measured 0 - 1e-6 against 1e-4)
    assert 0.0 <= result["parity_max_abs"] <= result["tolerance_abs"], result
    assert (result["obs_dim"], result["act_dim"]) == (dims.obs_dim, dims.act_dim)


def test_the_runtime_plans_without_torch(trained, tmp_path):
    _, _, out, _ = trained
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import rtmpc
        planner = rtmpc.load_planner({str(out)!r})
        dims = planner.model.dims if hasattr(planner, "model") else planner.policy.dims
        action = planner.plan(np.zeros(dims.obs_dim))
        assert action.shape == (dims.act_dim,) and np.all(np.isfinite(action)), action
        heavy = [m for m in ("torch", "mujoco", "dm_control") if m in sys.modules]
        assert not heavy, heavy
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]


def test_one_control_episode_through_the_command(trained):
    from tiny_run import rtmpc

    _, _, out, _ = trained
    res = rtmpc("control", "--model", str(out / "model.onnx"), "--cycles", "5", "--json", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["cycles"] == 5
