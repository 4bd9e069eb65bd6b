"""The TD-MPC-style latent model (Hansen et al. 2022, 2024): an encoder, latent dynamics,
reward, Q ensemble and policy prior, planned over with MPPI in latent space.

The family's entry points (:class:`rtmpc.models.base.Family`); this package imports
neither torch nor the simulator. Its name is ``latent`` (run configs' ``kind`` and
exported files' metadata). Modules: ``config`` (LatentConfig), ``model`` (the torch model
and learner), ``export`` (ONNX and the parity check), ``runtime`` (LatentRolloutModel,
ONNX Runtime), ``train`` (the TD-MPC loop), ``predictor`` (for rtmpc analyze).
"""

from __future__ import annotations

from typing import Any

from .config import LatentConfig

NAME = "latent"
SECTIONS = {"latent": (LatentConfig, "the TD-MPC latent model, its updates and loop (kind: latent)")}
STEPS_KEY = ("latent", "loop", "total_steps")  # --steps is the run's length
PRECISIONS = ("fp32",)
EXAMPLE_CONFIG = "tdmpc_cartpole"  # the shipped config a user starts from
# The smallest settings that run train -> export -> control end to end (the family contract test).
SMOKE_OVERRIDES = ("task.name=point-target", "task.episode_steps=15", "task.action_repeat=1",
                   "latent.model.latent_dim=16", "latent.model.hidden=16", "latent.model.enc_hidden=16",
                   "latent.model.num_q=2", "latent.model.num_bins=11", "latent.train.batch_size=16",
                   "latent.loop.seed_steps=15", "latent.loop.eval_every=30", "latent.loop.eval_episodes=1",
                   "latent.loop.threads=1", "latent.loop.parity_samples=4", "latent.loop.total_steps=30",
                   "planner.samples=32", "planner.elites=8", "planner.prior_samples=4", "planner.iterations=2")
DISABLED_OPTIMIZERS: tuple[str, ...] = ()


def train_model(run_dir, cfg, *, make_env, make_planner, resume: bool = False) -> list[dict]:
    from .train import train_latent

    return train_latent(run_dir, make_env=make_env, make_planner=make_planner, cfg=cfg.latent, seed=cfg.seed,
                        resume=resume)


def export_model(run_dir, cfg, *, out, spec, buffer, rows, metadata: dict[str, str],
           precision: str = "fp32") -> dict[str, Any]:
    from rtmpc.models.common.commit import committed_file
    from rtmpc.models.common.fileio import PARITY_ATOL, PARITY_RTOL

    from .export import check_latent_parity, export_latent
    from .model import latent_discount, load_latent

    ckpt = committed_file(run_dir, "latent", "checkpoints/latent.pt")
    model = load_latent(ckpt)
    gamma = latent_discount(ckpt)
    export_latent(model, out, gamma=gamma, extra_metadata=metadata)
    err = check_latent_parity(model, out, buffer.obs[rows], gamma=gamma)
    return {"parity_max_abs": err, "tolerance_abs": PARITY_ATOL, "tolerance_rel": PARITY_RTOL,
            "what": "returns, prior actions, latents"}


def runtime_class():
    from .runtime import LatentRolloutModel

    return LatentRolloutModel


def predictor_class():
    from .predictor import LatentPredictor

    return LatentPredictor


def planner_bench():
    """Its part of ``rtmpc bench planner``: a module with DEFAULTS, OPTIONS, resolve_defaults(args)
    and setup(args, modes, tmp) (a random-weight model, rtmpc's and PyTorch's planners over it,
    the plan's GEMMs); MODES where it has only some of the parallel modes."""
    from . import bench

    return bench
