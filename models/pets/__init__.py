"""PETS: a probabilistic ensemble planned over by trajectory sampling (Chua et al. 2018).

The family's entry points (:class:`rtmpc.models.base.Family`); this package imports
neither torch nor the simulator. Modules: ``config`` (EnsembleConfig, TrainConfig,
PETSLoopConfig), ``ensemble`` (the torch model and its fit), ``export`` (ONNX and the
parity check; the opt-in int8 copy is :mod:`rtmpc.models.common.quantize`, shared with MBPO),
``runtime`` (PETSRolloutModel, ONNX Runtime and Numba), ``train`` (the PETS loop), ``predictor`` (for rtmpc analyze).
"""

from __future__ import annotations

from typing import Any

from rtmpc.models.common.ensemble_config import EnsembleConfig, TrainConfig

from .config import PETSLoopConfig

NAME = "pets"
SECTIONS = {"model": (EnsembleConfig, "the probabilistic ensemble (kind: pets)"),
            "train": (TrainConfig, "one fit of the ensemble (kind: pets)"),
            "pets": (PETSLoopConfig, "the PETS outer loop (kind: pets)")}
STEPS_KEY = ("pets", "max_env_steps")  # --steps caps the environment steps
PRECISIONS = ("fp32", "int8")
EXAMPLE_CONFIG = "pets_cartpole"  # the shipped config a user starts from
# The smallest settings that run train -> export -> control end to end (the family contract test).
SMOKE_OVERRIDES = ("task.name=point-target", "task.episode_steps=15", "model.members=2", "model.hidden=16",
                   "model.layers=2", "train.epochs=2", "planner.samples=16", "planner.elites=4", "planner.horizon=3",
                   "planner.iterations=1", "pets.episodes=2", "pets.threads=1",
                   # pets_cartpole deploys at a 100 Hz servo, which point-target's 20 ms physics step
                   # does not divide (lockstep refuses it), on 2 threads: one rate, one thread here
                   "loop.servo_hz=null", "loop.threads=1")
# ONNX Runtime optimizers a PETS session runs without: the transpose optimizer moves the
# "members" graph's transposes back through its head, so that per-member constants
# broadcast over the short last axis again (ONNX Runtime's slow broadcast path: ~150 us
# instead of ~10 us per op at N = 1000). Nothing else in the graph needs it.
DISABLED_OPTIMIZERS = ("TransposeOptimizer", "TransposeOptimizer_CPUExecutionProvider")


def train_model(run_dir, cfg, *, make_env, make_planner, resume: bool = False) -> list[dict]:
    from .train import train_pets

    return train_pets(run_dir, make_env=make_env, make_planner=lambda model: make_planner(model, cfg.seed),
                      ensemble_cfg=cfg.model, train_cfg=cfg.train, loop_cfg=cfg.pets, seed=cfg.seed, resume=resume)


def export_model(run_dir, cfg, *, out, spec, buffer, rows, metadata: dict[str, str],
           precision: str = "fp32") -> dict[str, Any]:
    from rtmpc.models.common.commit import committed_file
    from rtmpc.models.common.ensemble import load_ensemble
    from rtmpc.models.common.ensemble_export import check_parity, export_onnx
    from rtmpc.models.common.fileio import PARITY_ATOL, PARITY_RTOL

    model = load_ensemble(committed_file(run_dir, "ensemble", "checkpoints/ensemble.pt"))
    export_onnx(model, out, action_low=spec.action_low, action_high=spec.action_high, gamma=cfg.pets.gamma,
                extra_metadata=metadata)
    err = check_parity(model, out, (buffer.obs[rows], buffer.act[rows]))
    result = {"parity_max_abs": err, "tolerance_abs": PARITY_ATOL, "tolerance_rel": PARITY_RTOL, "what": "mean"}
    if precision == "int8":
        from rtmpc.models.common.quantize import compare_predictions, quantize_int8
        from rtmpc.models.runtime import load_model

        q = quantize_int8(out)
        load_model(q)
        result["int8"] = {"model": str(q), **compare_predictions(out, q, buffer.obs[rows], buffer.act[rows],
                                                                 buffer.next_obs[rows], buffer.reward[rows])}
    return result


def runtime_class():
    from .runtime import PETSRolloutModel

    return PETSRolloutModel


def predictor_class():
    from .predictor import PETSPredictor

    return PETSPredictor


def planner_bench():
    """Its part of ``rtmpc bench planner``: a module with DEFAULTS, OPTIONS, resolve_defaults(args)
    and setup(args, modes, tmp) (a random-weight model, rtmpc's and PyTorch's planners over it,
    the plan's GEMMs); MODES where it has only some of the parallel modes."""
    from . import bench

    return bench
