"""The PETS loop (Chua et al. 2018, Alg. 1): collect, fit the ensemble, export, plan.

1. ``seed_episodes`` episodes of uniformly random actions fill the buffer.
2. Each iteration: fit the ensemble on the whole buffer (continuing from the last
   weights), checkpoint it, export ``model.onnx`` and check it against PyTorch, load it
   with ONNX Runtime, and run one episode with the planner over the *exported* model
   (the same code path as deployment). That episode's return is the iteration's
   ``eval_return``: the planner executes its mean plan, no exploration noise is added.
3. After each episode: buffer, metrics row, learning curve and progress state are
   written atomically, so ``resume=True`` continues from the last completed episode (a
   killed run loses at most the episode it was in).

The planner is injected (``make_planner(rollout_model) -> Planner``) so that models/
does not depend on planners/.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

import numpy as np
import torch
import yaml
from rtmpc.configs.rundir import RunDir, append_csv_row, write_yaml
from rtmpc.models.base import ModelError
from rtmpc.models.common.buffer import ReplayBuffer
from rtmpc.models.common.curves import plot_learning_curve
from rtmpc.models.common.episodes import collect_episode
from rtmpc.models.runtime import load_model

from .config import EnsembleConfig, PETSLoopConfig, TrainConfig
from .ensemble import ProbabilisticEnsemble, fit_ensemble, load_ensemble, save_ensemble
from .export import check_parity, export_onnx

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
    ckpt = run.checkpoints / "ensemble.pt"
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)

    if resume and run.state.exists():
        state = yaml.safe_load(run.state.read_text())
        buffer = ReplayBuffer.load(run.buffer)
        episode = int(state["episodes"])
        env_steps = int(state["env_steps"])
        if buffer.num_episodes != episode:
            raise ModelError(f"run {run.root} is inconsistent: state.yaml says {episode} episodes, "
                             f"buffer.npz holds {buffer.num_episodes}; remove state.yaml to restart")
        model = load_ensemble(ckpt) if ckpt.exists() else ProbabilisticEnsemble(spec.obs_dim, spec.act_dim,
                                                                                  ensemble_cfg)
        rng = np.random.default_rng([seed, episode])
        log.info("resuming %s after episode %d (%d env steps, %d transitions)", run.root, episode, env_steps,
                 len(buffer))
    else:
        if resume:
            log.info("nothing to resume in %s: starting a new run", run.root)
        buffer = ReplayBuffer(spec.obs_dim, spec.act_dim)
        model = ProbabilisticEnsemble(spec.obs_dim, spec.act_dim, ensemble_cfg)
        episode, env_steps = 0, 0
        if run.metrics.exists():
            run.metrics.unlink()

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
            save_ensemble(model, ckpt)
            export_onnx(model, run.model, action_low=spec.action_low, action_high=spec.action_high,
                        gamma=loop_cfg.gamma, extra_metadata={"task": spec.name,
                                                              "control_period": repr(spec.control_period),
                                                              "action_repeat": str(spec.action_repeat)})
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
        # Order matters for resume: buffer first, then metrics, then the state that points at both.
        buffer.save(run.buffer)
        append_csv_row(run.metrics, row)
        write_yaml(run.state, {"episodes": episode, "env_steps": env_steps, "seed": seed})
        plot_learning_curve(run.metrics, run.file("learning_curve.png"), f"PETS on {spec.name}")
        rows.append(row)
        if progress is not None:
            progress(row)
        else:
            log.info("episode %d/%d (%s): return %.1f, env steps %d%s", episode, loop_cfg.episodes, kind, ret,
                     env_steps, f", plan {row['plan_ms_median']} ms" if fit else "")
        if not math.isfinite(ret):
            raise ModelError(f"episode {episode} returned {ret}: the task produced a non-finite reward")
    env.close()
    return rows
