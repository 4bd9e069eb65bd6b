"""``rtmpc train`` for deep Dyna-Q: the loop of :func:`.deep.train_deep_dynaq` in a run directory.

Each evaluation (every ``eval_every`` env steps) is a committed step
(:mod:`rtmpc.models.common.commit`): the agent's whole training state (networks, optimisers,
buffers, generator, counters; ``torch.load(weights_only=True)`` reads it) and the metrics
under the step's number, then the manifest. ``resume=True`` loads the last committed state
and goes on. A commit falls in the middle of an episode, and a resumed agent starts a new
episode there (the environment's state is not saved), so a resumed run is the uninterrupted
one up to the commit and a different, equally valid, run after it: not bit-identical (the
fault-injection harness checks that every committed evaluation survives and the run ends
at the same step). The Q-network of the best evaluation so far (the latest of ties) is kept
beside the state (``checkpoints/best_q``): greedy CartPole returns swing between evaluations
(500, then 176, then 500 in one run), so ``model.onnx``, exported and parity-checked at the
end and by ``rtmpc export``, is that network's greedy policy, as Stable-Baselines3's
EvalCallback keeps its best model. Control episodes run on other seeds than evaluations.
"""

from __future__ import annotations

import logging

import torch
from rtmpc.configs.rundir import RunDir, atomic_write, read_csv, write_csv
from rtmpc.models.base import ModelError
from rtmpc.models.common.commit import Manifest
from rtmpc.models.common.curves import plot_learning_curve

from .config import DeepDynaQConfig
from .deep import DeepDynaQ, export_q_policy, train_deep_dynaq

__all__ = ["train_deep", "load_agent"]

log = logging.getLogger(__name__)


def _save(agent: DeepDynaQ, path) -> object:
    return atomic_write(path, lambda f: torch.save({"format": 1, "kind": "dynaq", "obs_dim": agent.obs_dim,
                                                    "n_actions": agent.n_actions, "state": agent.state_dict()}, f))


def _save_q(agent: DeepDynaQ, path, row: dict) -> object:
    return atomic_write(path, lambda f: torch.save({"kind": "dynaq-q", "q": agent.q.state_dict(),
                                                    "env_steps": int(row["env_steps"]),
                                                    "eval_return": float(row["eval_return"])}, f))


def best_policy_agent(agent_path, best_path, cfg: DeepDynaQConfig) -> DeepDynaQ:
    """The committed agent with the best evaluation's Q-network in it (what is deployed)."""
    agent = load_agent(agent_path, cfg)
    if best_path is not None:
        try:
            blob = torch.load(best_path, map_location="cpu", weights_only=True)
            agent.q.load_state_dict(blob["q"])
        except Exception as err:  # noqa: BLE001
            raise ModelError(f"{best_path} is not a Q-network checkpoint rtmpc can read safely "
                             f"({type(err).__name__})") from None
    return agent


def load_agent(path, cfg: DeepDynaQConfig) -> DeepDynaQ:
    """The agent saved at ``path`` (weights only: a checkpoint carrying code is refused)."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is the same user error
        raise ModelError(f"{path} is not a deep Dyna-Q checkpoint rtmpc can read safely "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    if not isinstance(blob, dict) or blob.get("kind") != "dynaq":
        raise ModelError(f"{path} is not a deep Dyna-Q checkpoint")
    agent = DeepDynaQ(int(blob["obs_dim"]), int(blob["n_actions"]), cfg)
    agent.load_state_dict(blob["state"])
    return agent


def train_deep(run: RunDir, make_env, cfg: DeepDynaQConfig, *, resume: bool = False) -> list[dict]:
    run.make()
    commits = Manifest(run)
    agent, history = None, []
    if resume and commits.read() is not None:
        agent = load_agent(commits.file("agent"), cfg)
        history = read_csv(commits.file("metrics"))
        log.info("resuming %s at %d env steps (%d evaluations committed)", run.root, agent.env_steps, len(history))
    else:
        commits.reset()
    env = make_env()
    spec = env.spec
    env.close()
    if agent is None:
        if not spec.n_actions:
            raise ModelError(f"task {spec.name} has continuous actions: deep Dyna-Q needs a discrete task "
                             f"(n_actions > 0), e.g. gym:CartPole-v1")
        agent = DeepDynaQ(spec.obs_dim, spec.n_actions, cfg)
    rows: list[dict] = []

    def commit(row: dict) -> None:
        """After each evaluation: the agent, the metrics and (if it is the best so far) its Q-network."""
        step = len(history) + 1
        best = max((float(r["eval_return"]) for r in history), default=-float("inf"))
        history.append(row)
        files = {"agent": _save(agent, commits.stage("agent", "checkpoints/agent.pt", step)),
                 "metrics": write_csv(commits.stage("metrics", "metrics.csv", step), history)}
        if float(row["eval_return"]) >= best:
            files["best_q"] = _save_q(agent, commits.stage("best_q", "checkpoints/best_q.pt", step), row)
        commits.commit(step, files, {"env_steps": row["env_steps"], "evaluations": step}, keep=("best_q",))
        write_csv(run.metrics, history)
        plot_learning_curve(run.metrics, run.file("learning_curve.png"), f"deep Dyna-Q on {spec.name}")
        rows.append(row)
        log.info("%d env steps: greedy return %.1f (min %.1f), epsilon %.3f", row["env_steps"], row["eval_return"],
                 row["eval_min"], row["epsilon"])

    if agent.env_steps < cfg.total_steps:
        train_deep_dynaq(make_env, cfg, progress=commit, agent=agent)
    commits.read()
    export_q_policy(best_policy_agent(commits.file("agent"), commits.file("best_q"), cfg), run.model, spec)
    return rows
