"""rtmpc is one package: its stages import as rtmpc.<stage>, a user's own top-level `configs`,
`models`, `scripts` or `sim` packages shadow nothing, and deployment imports no torch or MuJoCo."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _python(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_a_user_project_with_its_own_configs_models_scripts_and_sim_uses_rtmpc(tmp_path):
    for name in ("configs", "models", "scripts", "sim", "planners", "controller"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"OWNER = 'user {name}'\n")
    res = _python("""
        import configs, models, scripts, sim
        import rtmpc.sim, rtmpc.models.runtime, rtmpc.planners, rtmpc.controller
        from rtmpc.scripts.cli import main
        assert configs.OWNER == "user configs" and models.OWNER == "user models", (configs, models)
        assert sim.OWNER == "user sim" and scripts.OWNER == "user scripts"
        env = rtmpc.sim.make("point-target", seed=0)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (env.spec.obs_dim,)
        raise SystemExit(main(["tasks"]))
    """, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "point-target" in res.stdout


def test_deployment_imports_neither_torch_nor_mujoco(tmp_path):
    res = _python("""
        import sys
        import rtmpc, rtmpc.planners, rtmpc.controller, rtmpc.models.base, rtmpc.models.runtime
        heavy = [m for m in ("torch", "mujoco", "dm_control") if m in sys.modules]
        assert not heavy, heavy
        print(rtmpc.__version__)
    """, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
