"""rtmpc: real-time model predictive control with learned models.

The stages are subpackages: ``rtmpc.sim`` (tasks, the simulated robot), ``rtmpc.models``
(model families, export, the ONNX runtime), ``rtmpc.planners`` (CEM, MPPI), ``rtmpc.controller``
(the fixed-rate loop, safety filter, telemetry, bridge), ``rtmpc.configs`` and ``rtmpc.scripts``
(the ``rtmpc`` command). Importing ``rtmpc`` imports none of them.

The Python API, for a planner in your own loop::

    import rtmpc
    planner = rtmpc.load_planner("runs/quickstart")      # a run directory or a model.onnx
    action = planner.plan(obs)                           # (A,) for an observation (O,)

    policy = rtmpc.load_policy("runs/x/policy.onnx")      # a trained actor (MBPO, Dyna-Q, ...)
    action, state = policy.act(obs, policy.initial_state())
"""

from __future__ import annotations

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("rtmpc")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__", "load_planner", "load_policy"]


def load_planner(model_or_run_dir, *, config=None, threads: int = 1, seed: int | None = 0, **overrides):
    """A planner over an exported model, ready to ``plan(obs) -> action``.

    model_or_run_dir: a ``model.onnx`` file, or a run directory holding one; config: a run
    config YAML (default: the run's ``config.yaml`` beside the model, else the defaults);
    threads: ONNX Runtime threads; seed: the planner's random seed; overrides: planner
    settings, e.g. ``kind="mppi", horizon=12, samples=200``. Imports neither torch nor the
    simulator. Bad values raise ``rtmpc.configs.ConfigError`` naming the setting.
    """
    from pathlib import Path

    import numpy as np

    from rtmpc.models.runtime import load_model
    from rtmpc.planners import make_planner
    from rtmpc.scripts.runconfig import config_or_runs, load_run_config

    path = Path(model_or_run_dir)
    model_path = path / "model.onnx" if path.is_dir() else path
    if not model_path.is_file():
        raise FileNotFoundError(f"model file {model_path} not found: pass a model.onnx or a run directory")
    cfg = load_run_config(config_or_runs(config, model_path.parent),
                          [f"planner.{k}={v}" for k, v in overrides.items()])
    model = load_model(model_path, threads=threads, rng=np.random.default_rng(seed))
    return make_planner(cfg.planner, model, rng=seed)


def load_policy(path, *, threads: int = 1, deterministic: bool = True, seed: int | None = 0):
    """A trained actor from its policy file, ready to ``act(obs, state) -> (action, state)``
    (start from ``policy.initial_state()``); ``deterministic``: the mean (or argmax) action,
    else sampled with ``seed``. Imports neither torch nor the simulator."""
    from rtmpc.models.common.policy import load_policy as _load

    return _load(path, threads, deterministic=deterministic, rng=seed)
