"""Dyna-Q, tabular and deep (Sutton 1990): learning, planning with a learned model and acting, interleaved.

``variant: tabular``: tabular Dyna-Q and Dyna-Q+ on the grid-world mazes of Sutton & Barto
chapter 8 (:mod:`rtmpc.sim.gridworld`, :mod:`.tabular`, :mod:`.maze_run`), with the textbook's
Figures 8.2, 8.4 and 8.5; nothing to export. ``variant: deep``: a double-DQN Q-network and a
learned ensemble model of next state, reward and termination whose imagined rollouts feed the Q
updates (:mod:`.deep`, :mod:`.train`), on any discrete-action task (``gym:CartPole-v1``); its
greedy policy is exported as an rtmpc policy file and deployed by ``rtmpc control`` like any
planner. The family's entry points (:class:`rtmpc.models.base.Family`); this package imports
neither torch nor the simulator.
"""

from __future__ import annotations

from typing import Any

from .config import DynaQConfig

NAME = "dynaq"
SECTIONS = {"dynaq": (DynaQConfig, "Dyna-Q: the tabular maze experiments or the deep agent (kind: dynaq)")}
STEPS_KEY = ("dynaq", "deep", "total_steps")  # --steps is the deep run's length
PRECISIONS = ("fp32",)
EXAMPLE_CONFIG = "dyna_cartpole"
# The smallest settings that run train -> export -> control end to end (the family contract test).
SMOKE_OVERRIDES = ("task.name=gym:CartPole-v1", "task.episode_steps=40", "dynaq.variant=deep",
                   "dynaq.deep.total_steps=120", "dynaq.deep.learning_starts=40", "dynaq.deep.eval_every=60",
                   "dynaq.deep.eval_episodes=1", "dynaq.deep.q_hidden=[16]", "dynaq.deep.batch_size=16",
                   "dynaq.deep.model_members=2", "dynaq.deep.model_hidden=16", "dynaq.deep.model_layers=1",
                   "dynaq.deep.model_batch_size=16", "dynaq.deep.model_train_every=40",
                   "dynaq.deep.model_updates=5", "dynaq.deep.rollout_every=20", "dynaq.deep.rollouts_per_step=2",
                   "dynaq.deep.eps_decay_steps=100")
DISABLED_OPTIMIZERS: tuple[str, ...] = ()
# A commit falls mid-episode and a resumed agent starts a new episode there: resumed runs keep
# every committed evaluation but are not bit-identical to uninterrupted ones (models/dynaq/train.py).
RESUME_EXACT = False


def train_model(run_dir, cfg, *, make_env, make_planner, resume: bool = False) -> list[dict]:
    d = cfg.dynaq
    if d.variant == "tabular":
        from .maze_run import train_maze

        return train_maze(run_dir, d.tabular, seed=cfg.seed)
    from .train import train_deep

    return train_deep(run_dir, make_env, d.deep.replace(seed=cfg.seed), resume=resume)


def export_model(run_dir, cfg, *, out, spec, buffer, rows, metadata: dict[str, str],
                 precision: str = "fp32") -> dict[str, Any]:
    from rtmpc.models.base import ModelError
    from rtmpc.models.common.commit import committed_file
    from rtmpc.models.common.fileio import PARITY_ATOL, PARITY_RTOL

    if cfg.dynaq.variant != "deep":
        raise ModelError(f"{run_dir.root} is a tabular Dyna-Q run: there is no model file to export (its "
                         f"figures and metrics.csv are the result)")
    from rtmpc.models.common.commit import Manifest

    from .deep import export_q_policy
    from .train import best_policy_agent

    manifest = Manifest(run_dir)
    manifest.read()
    agent = best_policy_agent(committed_file(run_dir, "agent", "checkpoints/agent.pt"), manifest.file("best_q"),
                              cfg.dynaq.deep.replace(seed=cfg.seed))
    export_q_policy(agent, out, spec, check_obs=buffer.obs[rows] if buffer is not None else None)
    return {"parity_max_abs": 0.0, "tolerance_abs": PARITY_ATOL, "tolerance_rel": PARITY_RTOL,
            "what": "greedy actions (must agree exactly)"}


def runtime_class():
    from rtmpc.models.common.policy import OnnxPolicy

    return OnnxPolicy


def predictor_class():
    from rtmpc.models.base import ModelError

    raise ModelError("a Dyna-Q policy file holds an actor, not a dynamics model: rtmpc analyze has nothing to "
                     "predict with it (its learned model stays in the run's checkpoint)")


planner_bench = None  # an actor: nothing for rtmpc bench planner to plan over
