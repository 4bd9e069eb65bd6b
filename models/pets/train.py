"""The PETS loop (Chua et al. 2018, Alg. 1): collect, fit the ensemble, export, plan.

1. ``seed_episodes`` episodes of uniformly random actions fill the buffer.
2. Each iteration: fit the ensemble on the whole buffer (continuing from the last
   weights), checkpoint it, export ``model.onnx`` and check it against PyTorch, load it
   with ONNX Runtime, and run one episode with the planner over the *exported* model
   (the same code path as deployment). That episode's return is the iteration's
   ``eval_return``: the planner executes its mean plan, no exploration noise is added.
3. After each episode the step is committed (:mod:`rtmpc.models.common.commit`): the
   buffer, the checkpoint and the metrics are written under the episode's number, then
   one manifest naming them, with the counters and the random generator's state, replaces
   the last; ``metrics.csv`` and the learning curve are published from it. A kill or a
   full disk at any write loses at most the episode in progress, and ``resume=True``
   continues from the last committed episode exactly as an uninterrupted run would
   (same seed, same numbers). A non-finite observation or reward stops the run before
   anything of its episode is saved.

The planner is injected (``make_planner(rollout_model) -> Planner``) so that models/
does not depend on planners/.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np
import torch
from rtmpc.configs.rundir import RunDir, read_csv, write_csv
from rtmpc.models.base import ModelError
from rtmpc.models.common.buffer import ReplayBuffer
from rtmpc.models.common.commit import Manifest
from rtmpc.models.common.curves import plot_learning_curve
from rtmpc.models.common.ensemble import ProbabilisticEnsemble, fit_ensemble, load_ensemble, save_ensemble
from rtmpc.models.common.ensemble_config import EnsembleConfig, TrainConfig
from rtmpc.models.common.ensemble_export import check_parity, export_onnx
from rtmpc.models.common.episodes import collect_episode
from rtmpc.models.runtime import load_model

from .config import PETSLoopConfig

log = logging.getLogger(__name__)

__all__ = ["train_pets"]


Progress = Callable[[dict], None]


def _random_policy(spec, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    return lambda obs: rng.uniform(spec.action_low, spec.action_high)


def train_pets(run: RunDir, make_env: Callable[[], object], make_planner: Callable[[object], object],
               ensemble_cfg: EnsembleConfig, train_cfg: TrainConfig, loop_cfg: PETSLoopConfig, seed: int = 0,
               resume: bool = False, progress: Progress | None = None) -> list[dict]:
    """Run (or resume) the PETS loop in ``run``; returns the metrics rows of this call."""
    torch.set_num_threads(loop_cfg.threads)
    run.make()
    env = make_env()
    spec = env.spec
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    commits = Manifest(run)

    if resume and commits.read() is not None:
        state = commits.state
        buffer = ReplayBuffer.load(commits.file("buffer"))
        episode = int(state["episodes"])
        env_steps = int(state["env_steps"])
        if buffer.num_episodes != episode:
            raise ModelError(f"run {run.root} is inconsistent: its manifest says {episode} episodes, "
                             f"{commits.file('buffer').name} holds {buffer.num_episodes}; start over with --overwrite")
        ckpt = commits.file("ensemble")
        model = load_ensemble(ckpt) if ckpt else ProbabilisticEnsemble(spec.obs_dim, spec.act_dim, ensemble_cfg)
        rng.bit_generator.state = state["rng"]
        history = read_csv(commits.file("metrics")) if commits.file("metrics") else []
        log.info("resuming %s after episode %d (%d env steps, %d transitions)", run.root, episode, env_steps,
                 len(buffer))
    else:
        if resume:
            log.info("nothing to resume in %s: starting a new run", run.root)
        commits.reset()
        buffer = ReplayBuffer(spec.obs_dim, spec.act_dim)
        model = ProbabilisticEnsemble(spec.obs_dim, spec.act_dim, ensemble_cfg)
        episode, env_steps, history = 0, 0, []

    rows: list[dict] = []
    while episode < loop_cfg.episodes:
        if loop_cfg.max_env_steps and env_steps >= loop_cfg.max_env_steps:
            break
        t_start = time.perf_counter()
        fit = None
        if episode < loop_cfg.seed_episodes:
            kind = "random"
            act = _random_policy(spec, np.random.default_rng(rng.integers(2**32)))
        else:
            kind = "planner"
            fit = fit_ensemble(model, buffer, train_cfg, rng=rng)
            export_onnx(model, run.model, action_low=spec.action_low, action_high=spec.action_high,
                        gamma=loop_cfg.gamma, extra_metadata=spec.model_metadata())
            pick = rng.choice(len(buffer), size=min(loop_cfg.parity_samples, len(buffer)), replace=False)
            parity = check_parity(model, run.model, (buffer.obs[pick], buffer.act[pick]))
            rollout_model = load_model(run.model, threads=loop_cfg.threads,
                                       rng=np.random.default_rng(rng.integers(2**32)))
            planner = make_planner(rollout_model)
            planner.reset()
            act = planner.plan
        ret, steps, act_ms = collect_episode(env, act, buffer, episode, seed=int(rng.integers(2**31)))
        episode += 1
        env_steps += steps * spec.action_repeat
        row = {"episode": episode, "kind": kind, "env_steps": env_steps, "eval_return": round(ret, 3),
               "transitions": len(buffer),
               "plan_ms_median": round(float(np.median(act_ms)), 3) if kind == "planner" else "",
               "plan_ms_p99": round(float(np.percentile(act_ms, 99)), 3) if kind == "planner" else "",
               "val_nll": round(fit.val_nll, 4) if fit else "", "val_mse": round(fit.val_mse, 5) if fit else "",
               "fit_epochs": fit.epochs if fit else "", "fit_s": round(fit.seconds, 2) if fit else "",
               "parity_max_abs": f"{parity:.2e}" if fit else "",
               "seconds": round(time.perf_counter() - t_start, 2)}
        # Commit the episode: its files under new names, then the manifest that names them.
        files = {"buffer": buffer.save(commits.stage("buffer", "buffer.npz", episode))}
        if fit is not None:
            files["ensemble"] = save_ensemble(model, commits.stage("ensemble", "checkpoints/ensemble.pt", episode))
        history.append(row)
        files["metrics"] = write_csv(commits.stage("metrics", "metrics.csv", episode), history)
        commits.commit(episode, files, {"episodes": episode, "env_steps": env_steps, "seed": seed,
                                        "rng": rng.bit_generator.state}, keep=("ensemble",))
        write_csv(run.metrics, history)  # published for people; resume reads the committed copy
        plot_learning_curve(run.metrics, run.file("learning_curve.png"), f"PETS on {spec.name}")
        rows.append(row)
        if progress is not None:
            progress(row)
        else:
            log.info("episode %d/%d (%s): return %.1f, env steps %d%s", episode, loop_cfg.episodes, kind, ret,
                     env_steps, f", plan {row['plan_ms_median']} ms" if fit else "")
    env.close()
    return rows
