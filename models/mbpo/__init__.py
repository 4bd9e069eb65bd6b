"""MBPO: short branched model rollouts train a SAC actor (Janner et al. 2019, "When to Trust Your Model").

A PETS ensemble (7 members, 5 elites by validation MSE; :mod:`rtmpc.models.common.ensemble`) is fitted
every few hundred steps and exported to ONNX; k-step rollouts branched from real states run through
that file in ONNX Runtime (:mod:`.rollout`); SAC (:mod:`.sac`) trains on batches of 5% real and 95%
model transitions (:mod:`.train`). The actor's deterministic policy is exported as an rtmpc policy
file (kind ``mbpo``) and deployed by ``rtmpc control`` like any planner. The family's entry points
(:class:`rtmpc.models.base.Family`); this package imports neither torch nor the simulator.

MBPO shares the probabilistic ensemble, its exporter and its config classes with PETS through
``rtmpc.models.common`` (``ensemble``, ``ensemble_export``, ``ensemble_config``): one model and one
ONNX format (``kind = "pets"``) for both families rather than a copy, and no family imports
another's. The ensemble's ``rtmpc analyze`` runs on ``RUN/ensemble.onnx`` (a PETS file of the
elites).
"""

from __future__ import annotations

from typing import Any

from .config import MBPOConfig

NAME = "mbpo"
SECTIONS = {"mbpo": (MBPOConfig, "MBPO: ensemble, branched rollouts and SAC (kind: mbpo)")}
STEPS_KEY = ("mbpo", "total_steps")  # --steps is the run's length in env steps
PRECISIONS = ("fp32",)
EXAMPLE_CONFIG = "mbpo_cartpole"
# The smallest settings that run train -> export -> control end to end (the family contract test).
SMOKE_OVERRIDES = ("task.name=point-target", "task.episode_steps=12", "task.action_repeat=1",
                   "mbpo.total_steps=36", "mbpo.random_steps=10", "mbpo.learning_starts=10",
                   "mbpo.model.members=3", "mbpo.elites=2", "mbpo.model.hidden=16", "mbpo.model.layers=2",
                   "mbpo.fit.epochs=2", "mbpo.fit.batch_size=8", "mbpo.model_train_every=12", "mbpo.rollout_every=6",
                   "mbpo.rollout_batch=16", "mbpo.epoch_length=6", "mbpo.rollout_schedule=[1,3,1,3]",
                   "mbpo.retain_steps=12", "mbpo.sac.hidden=[16]", "mbpo.sac.batch_size=16",
                   "mbpo.updates_per_step=2", "mbpo.eval_episodes=1", "mbpo.threads=1", "mbpo.parity_samples=16")
DISABLED_OPTIMIZERS: tuple[str, ...] = ()
# Commits fall between episodes and save every generator, buffer and optimiser: a resumed run is
# the uninterrupted one, bit for bit (the fault-injection harness checks it).
RESUME_EXACT = True


def train_model(run_dir, cfg, *, make_env, make_planner, resume: bool = False) -> list[dict]:
    from .train import train_mbpo

    return train_mbpo(run_dir, make_env, cfg.mbpo, seed=cfg.seed, resume=resume)


def export_model(run_dir, cfg, *, out, spec, buffer, rows, metadata: dict[str, str],
                 precision: str = "fp32") -> dict[str, Any]:
    from rtmpc.models.common.commit import Manifest, committed_file
    from rtmpc.models.common.fileio import PARITY_ATOL, PARITY_RTOL

    from .train import best_actor, export_actor, load_agent

    manifest = Manifest(run_dir)
    manifest.read()
    agent = load_agent(committed_file(run_dir, "agent", "checkpoints/agent.pt"), spec, cfg.mbpo, cfg.seed)
    actor = best_actor(agent, manifest.file("best_actor"))
    err = export_actor(actor, out, spec, check_obs=buffer.obs[rows] if buffer is not None else None,
                       gamma=cfg.mbpo.sac.gamma)
    return {"parity_max_abs": err, "tolerance_abs": PARITY_ATOL, "tolerance_rel": PARITY_RTOL,
            "what": "actions (deterministic and sampled)"}


def runtime_class():
    from rtmpc.models.common.policy import OnnxPolicy

    return OnnxPolicy


def predictor_class():
    from rtmpc.models.base import ModelError

    raise ModelError("an MBPO policy file holds the actor, not a dynamics model: run rtmpc analyze on the run's "
                     "ensemble, RUN/ensemble.onnx (a PETS file of the elite members)")


planner_bench = None  # an actor: nothing for rtmpc bench planner to plan over
