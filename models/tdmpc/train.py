"""The TD-MPC loop: collect with the planner over the exported model, update every step.

TD-MPC2 (Hansen, Su, Wang, ICLR 2024), its online trainer, with the planner of rtmpc:

1. ``seed_steps`` environment steps of uniformly random actions fill the buffer; when
   they end, ``seed agent steps x utd`` updates are made at once (TD-MPC2's pretraining).
2. Then every agent step: plan with MPPI over the *exported* ONNX model (the code path
   of deployment), add Gaussian exploration noise (std ``explore_std`` decaying linearly
   to ``explore_std_min`` over ``explore_decay_steps``, as a fraction of half the action
   range: the planner returns its mean, TD-MPC2 samples an elite and adds its std),
   step the task, store the transition, and make ``utd`` updates (fractions carry over).
   With ``overlap`` (the default) a step's updates run on a second thread while the
   planner picks the next action: the updates sample only transitions stored before they
   started and draw from their own random generator, and the main thread waits for them
   before it exports, evaluates or saves, so the run is the same as with ``overlap``
   off, only faster (one ONNX Runtime thread planning beside one torch thread: 1.4x
   per step at the default sizes on 2 cores against 1 + 2 threads in turn;
   ``python -m scripts.bench_tdmpc speed``).
3. The planner's model is re-exported every ``export_every`` environment steps (and at
   every evaluation): export, parity check against PyTorch on buffer observations,
   reload in ONNX Runtime, new planner (its warm start is lost once).
4. Every ``eval_every`` environment steps (at the end of the episode that crosses it) and
   at the end: ``eval_episodes`` planner episodes without noise on fixed seeds; a row of
   metrics.csv (``env_steps``, ``eval_return`` and the losses, update rate, plan time)
   and learning_curve.png.
5. After every episode the step is committed (:mod:`rtmpc.models.common.commit`): the
   buffer, the checkpoint (model, target, optimisers, Q scale, torch's random state) and
   the metrics under the episode's number, then one manifest naming them, with the
   counters and the numpy generators' states; ``metrics.csv`` and the learning curve are
   published from it. A kill or a full disk at any write loses at most the episode in
   progress, and ``resume=True`` continues from the last committed episode as the
   uninterrupted run would (same seed, same numbers: the tests compare them).

All step counts are environment steps (action repeat counted) unless called agent steps.
The planner is injected (``make_planner(rollout_model, rng) -> Planner``) so that models/
does not depend on planners/.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch
from rtmpc.configs import to_dict
from rtmpc.configs.rundir import RunDir, atomic_write_bytes, read_csv, write_csv
from rtmpc.models.base import ModelError
from rtmpc.models.common.buffer import ReplayBuffer
from rtmpc.models.common.commit import Manifest
from rtmpc.models.common.curves import plot_learning_curve
from rtmpc.models.common.episodes import collect_episode
from rtmpc.models.runtime import load_model

from .config import LatentConfig, tdmpc2_discount
from .export import check_latent_parity, export_latent
from .model import LatentLearner, LatentWorldModel, load_latent_learner, save_latent

log = logging.getLogger(__name__)

__all__ = ["train_latent", "sample_batch", "seed_agent_steps", "Background", "EVAL_SEED"]

Progress = Callable[[dict], None]
EVAL_SEED = 1_000_000  # evaluation episode i uses seed EVAL_SEED + i (the same every evaluation)
_LOSSES = ("consistency_loss", "reward_loss", "value_loss", "termination_loss", "pi_loss", "pi_entropy",
           "pi_scale", "grad_norm")


def seed_agent_steps(cfg: LatentConfig, episode_steps: int, action_repeat: int) -> int:
    """Agent steps of random actions: ``seed_steps`` / repeat, or TD-MPC2's max(1000, 5 episodes)."""
    if cfg.loop.seed_steps:
        return max(1, math.ceil(cfg.loop.seed_steps / action_repeat))
    return max(1000, 5 * episode_steps)


def sample_batch(buffer: ReplayBuffer, model: LatentWorldModel, batch_size: int, horizon: int,
                 rng: np.random.Generator, size: int | None = None) -> tuple[torch.Tensor, ...] | None:
    """B sub-trajectories of H steps inside one episode each, uniformly over the valid starts
    among the first ``size`` transitions (default: all): obs (H+1, B, O), normalised act
    (H, B, A), reward (H, B), terminated (H, B) float; None while no episode holds H
    transitions."""
    n = len(buffer) if size is None else min(int(size), len(buffer))
    if n < horizon:
        return None
    ep = buffer.episode[:n]
    starts = np.flatnonzero(ep[: n - horizon + 1] == ep[horizon - 1:])
    if starts.size == 0:
        return None
    idx = starts[rng.integers(starts.size, size=batch_size)]
    steps = idx[:, None] + np.arange(horizon)  # (B, H)
    obs = np.concatenate([buffer.obs[idx][:, None], buffer.next_obs[steps]], axis=1)  # (B, H+1, O)
    t = lambda x: torch.from_numpy(np.ascontiguousarray(np.swapaxes(x, 0, 1)))  # noqa: E731
    act = model.normalize_action(t(buffer.act[steps]))
    return t(obs), act, t(buffer.reward[steps]), t(buffer.terminated[steps].astype(np.float32))


class Background:
    """One job at a time on a worker thread, or inline when ``enabled`` is False.
    ``start(fn, *args)`` first waits for the previous job; ``wait()`` waits for the current
    one and raises its exception, if any; ``close()`` sets ``stopping`` (long jobs check it,
    so that Ctrl-C during pretraining does not wait minutes) and joins the thread."""

    def __init__(self, enabled: bool) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="rtmpc-update") if enabled else None
        self.job: Future | None = None
        self.stopping = threading.Event()

    def start(self, fn: Callable, *args) -> None:
        self.wait()
        if self.pool is None:
            fn(*args)
        else:
            self.job = self.pool.submit(fn, *args)

    def wait(self) -> None:
        job, self.job = self.job, None
        if job is not None:
            job.result()

    def close(self) -> None:
        self.stopping.set()
        if self.pool is not None:
            self.pool.shutdown(wait=True)


class _Collector:
    """The planner over the latest exported model, rebuilt on each export. What it plans with
    (the exported file, its random generators' states, the export's parity) is committed with
    each step (:meth:`stage`) and restored on resume (:meth:`restore`), so that a resumed run
    plans as the uninterrupted one did."""

    def __init__(self, run: RunDir, spec, learner: LatentLearner, make_planner, threads: int, parity_samples: int):
        self.run, self.spec, self.learner, self.make_planner = run, spec, learner, make_planner
        self.threads, self.parity_samples = threads, parity_samples
        self.planner = None
        self.export_s = float("nan")
        self.parity = float("nan")
        self.exports = 0
        self._committed_exports = 0
        self._rngs: tuple[np.random.Generator, np.random.Generator] | None = None  # the model's, the planner's

    def _load(self, path, model_rng: np.random.Generator, planner_rng: np.random.Generator) -> None:
        rollout_model = load_model(path, threads=self.threads, rng=model_rng)
        self.planner = self.make_planner(rollout_model, planner_rng)
        self._rngs = (model_rng, planner_rng)

    def export(self, buffer: ReplayBuffer, rng: np.random.Generator) -> None:
        """Export the model, check it, load it, build a planner over it."""
        t0 = time.perf_counter()
        spec, model = self.spec, self.learner.model
        export_latent(model, self.run.model, gamma=self.learner.discount,
                      extra_metadata=spec.model_metadata())
        pick = rng.choice(len(buffer), size=min(self.parity_samples, len(buffer)), replace=False)
        self.parity = check_latent_parity(model, self.run.model, buffer.obs[np.sort(pick)],
                                          gamma=self.learner.discount, n_random=2, samples=32, strict=False,
                                          rng=np.random.default_rng(rng.integers(2**32)))
        model_rng = np.random.default_rng(rng.integers(2**32))
        self._load(self.run.model, model_rng, np.random.default_rng(rng.integers(2**32)))
        self.planner.reset()
        self.export_s = time.perf_counter() - t0
        self.exports += 1

    def stage(self, commits: Manifest, step: int) -> tuple[dict, dict]:
        """(files, state) for the step's commit: a copy of the planner's model file when it
        was exported since the last commit, the generators' states and the parity."""
        if self.planner is None:
            return {}, {}
        files = {}
        if self.exports != self._committed_exports:
            files["planner_model"] = atomic_write_bytes(commits.stage("planner_model", "planner.onnx", step),
                                                        self.run.model.read_bytes())
            self._committed_exports = self.exports
        model_rng, planner_rng = self._rngs
        return files, {"planner": {"model_rng": model_rng.bit_generator.state,
                                   "planner_rng": planner_rng.bit_generator.state, "parity": self.parity}}

    def restore(self, commits: Manifest, saved: dict | None) -> None:
        """The planner the committed step planned with, its generators where they were."""
        path = commits.file("planner_model")
        if path is None or not saved:
            return
        model_rng, planner_rng = np.random.default_rng(), np.random.default_rng()
        model_rng.bit_generator.state = saved["model_rng"]
        planner_rng.bit_generator.state = saved["planner_rng"]
        self._load(path, model_rng, planner_rng)
        self.parity = float(saved["parity"])


def train_latent(run: RunDir, make_env: Callable[[], object], make_planner: Callable[[object, np.random.Generator],
                 object], cfg: LatentConfig, seed: int = 0, resume: bool = False,
                 progress: Progress | None = None) -> list[dict]:
    """Run (or resume) the TD-MPC loop in ``run``; returns the metrics rows of this call.

    ``progress(info)`` is called after each episode once its files are written, with
    ``episode``, ``env_steps``, ``train_return``, ``updates`` and ``eval`` (the metrics row
    when the episode ended with an evaluation, else None).
    """
    loop = cfg.loop
    torch.set_num_threads(loop.threads)
    run.make()
    env = make_env()
    spec = env.spec
    repeat = spec.action_repeat
    seed_agent = seed_agent_steps(cfg, spec.episode_steps, repeat)
    discount = cfg.train.discount or tdmpc2_discount(spec.episode_steps)
    half = 0.5 * (np.asarray(spec.action_high) - np.asarray(spec.action_low))

    commits = Manifest(run)
    state = commits.state if resume and commits.read() is not None else None
    update_rng = np.random.default_rng((seed, 1))  # the updates' batches (they may run on another thread)
    if state is not None:
        model, learner, extra = load_latent_learner(commits.file("latent"), cfg.train, seed)
        if extra.get("agent_steps") != state["agent_steps"]:
            raise ModelError(f"run {run.root} is inconsistent: its manifest is at agent step {state['agent_steps']}, "
                             f"the checkpoint at {extra.get('agent_steps')}; start over with --overwrite")
        buffer = ReplayBuffer.load(commits.file("buffer"))
        if len(buffer) != int(state["transitions"]):
            raise ModelError(f"run {run.root} is inconsistent: its manifest says {state['transitions']} transitions, "
                             f"{commits.file('buffer').name} holds {len(buffer)}; start over with --overwrite")
        rng = np.random.default_rng()
        rng.bit_generator.state = state.pop("rng")
        update_rng.bit_generator.state = state.pop("update_rng")
        planner_state = state.pop("planner", None)
        torch.set_rng_state(extra["torch_rng"])
        history = read_csv(commits.file("metrics")) if commits.file("metrics") else []
        log.info("resuming %s after episode %d (%d env steps, %d transitions, %d updates)", run.root,
                 state["episodes"], state["env_steps"], len(buffer), learner.updates)
    else:
        if resume:
            log.info("nothing to resume in %s: starting a new run", run.root)
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        model = LatentWorldModel(spec.obs_dim, spec.act_dim, cfg.model, spec.action_low, spec.action_high,
                                 seed=seed)
        learner = LatentLearner(model, cfg.train, discount, seed)
        buffer = ReplayBuffer(spec.obs_dim, spec.act_dim, capacity=min(loop.total_steps // repeat + 1, 1 << 20))
        state = {"env_steps": 0, "agent_steps": 0, "episodes": 0, "transitions": 0, "next_eval": loop.eval_every,
                 "last_export": None, "utd_carry": 0.0, "train_returns": [], "wall_s": 0.0}
        history, planner_state = [], None
        commits.reset()
    model.eval()
    log.info("latent model: %d parameters, discount %.4f, %d seed agent steps, %d env steps in all",
             model.num_params(), discount, seed_agent, loop.total_steps)

    collector = _Collector(run, spec, learner, make_planner, loop.plan_threads, loop.parity_samples)
    collector.restore(commits, planner_state)
    # Sums since the last evaluation (its row reports their means); the counts are committed
    # with each step, so a resumed run's row averages the same updates.
    interval = {"updates": int(state.pop("interval_updates", 0)), "update_s": 0.0,
                "losses": {**{k: 0.0 for k in _LOSSES}, **state.pop("interval_losses", {})}, "t0": time.perf_counter(),
                "plan_ms": []}
    rows: list[dict] = []
    t_call = time.perf_counter()
    wall0 = float(state["wall_s"])

    background = Background(loop.overlap)

    def update(n: int, size: int) -> None:
        """n updates on batches from the first ``size`` transitions (those stored when they were started)."""
        t0 = time.perf_counter()
        for i in range(n):
            if background.stopping.is_set():  # the run is ending on an exception: its state is not saved
                break
            batch = sample_batch(buffer, model, cfg.train.batch_size, cfg.train.horizon, update_rng, size)
            if batch is None:
                break
            info = learner.update(*batch)
            interval["updates"] += 1
            for k in _LOSSES:
                interval["losses"][k] += info[k]
            if n >= 500 and (i + 1) % 500 == 0:  # pretraining on the seed data: say how far it is
                log.info("pretraining: %d/%d updates (%.0f/s)", i + 1, n, (i + 1) / (time.perf_counter() - t0))
        interval["update_s"] += time.perf_counter() - t0

    def noise_std() -> float:
        done = max(0, state["env_steps"] - seed_agent * repeat)
        frac = min(1.0, done / loop.explore_decay_steps)
        return loop.explore_std + frac * (loop.explore_std_min - loop.explore_std)

    def act(obs: np.ndarray) -> np.ndarray:
        if state["agent_steps"] < seed_agent:
            return rng.uniform(spec.action_low, spec.action_high)
        last = state["last_export"]
        if collector.planner is None or last is None or state["env_steps"] - last >= loop.export_every:
            background.wait()
            collector.export(buffer, rng)
            state["last_export"] = state["env_steps"]
        t0 = time.perf_counter()
        a = collector.planner.plan(obs)
        interval["plan_ms"].append(1e3 * (time.perf_counter() - t0))
        a = a + noise_std() * half * rng.standard_normal(spec.act_dim)
        return np.clip(a, spec.action_low, spec.action_high)

    def on_step() -> bool:
        state["agent_steps"] += 1
        state["env_steps"] += repeat
        if state["agent_steps"] == seed_agent:
            background.start(update, int(round(seed_agent * loop.utd)), len(buffer))  # pretraining (TD-MPC2)
        elif state["agent_steps"] > seed_agent:
            carry = state["utd_carry"] + loop.utd
            n = int(carry)
            state["utd_carry"] = carry - n
            background.start(update, n, len(buffer))
        return state["env_steps"] >= loop.total_steps

    try:
        while state["env_steps"] < loop.total_steps:
            # Collect one episode (updating as it goes)
            episode = int(state["episodes"])
            if collector.planner is not None:
                collector.planner.reset()
            ret, _, _ = collect_episode(env, act, buffer, episode, seed=int(rng.integers(2**31)), on_step=on_step)
            background.wait()  # the episode's last updates: the model is read and saved below
            if not math.isfinite(ret):
                raise ModelError(f"episode {episode + 1} returned {ret}: the task produced a non-finite reward")
            state["episodes"] = episode + 1
            state["transitions"] = len(buffer)
            state["train_returns"].append(round(float(ret), 3))
            upd_rate = interval["updates"] / interval["update_s"] if interval["update_s"] > 0 else float("nan")
            log.info("episode %d: return %.1f, env steps %d/%d, %d updates (%.0f/s), plan %s ms", state["episodes"],
                     ret, state["env_steps"], loop.total_steps, learner.updates, upd_rate,
                     f"{np.median(interval['plan_ms']):.1f}" if interval["plan_ms"] else "-")

            # Evaluate
            done = state["env_steps"] >= loop.total_steps
            row = None
            if state["env_steps"] >= state["next_eval"] or done:
                collector.export(buffer, rng)
                state["last_export"] = state["env_steps"]
                planner = collector.planner
                returns, plan_ms = [], []
                for i in range(loop.eval_episodes):
                    planner.reset()
                    r, _, times = collect_episode(env, planner.plan, None, -1, seed=EVAL_SEED + i)
                    returns.append(r)
                    plan_ms += times
                planner.reset()
                n_up = interval["updates"]
                row = {"env_steps": state["env_steps"], "agent_steps": state["agent_steps"],
                       "episodes": state["episodes"], "eval_return": round(float(np.mean(returns)), 3),
                       "eval_return_std": round(float(np.std(returns)), 3),
                       "train_return": round(float(np.mean(state["train_returns"])), 3),
                       "updates": learner.updates,
                       "updates_per_s": round(upd_rate, 2) if math.isfinite(upd_rate) else "",
                       **{k: (round(v / n_up, 5) if n_up else "") for k, v in interval["losses"].items()},
                       "plan_ms_median": round(float(np.median(plan_ms)), 3),
                       "plan_ms_p99": round(float(np.percentile(plan_ms, 99)), 3),
                       "collect_plan_ms_median": round(float(np.median(interval["plan_ms"])), 3)
                       if interval["plan_ms"] else "",
                       "export_s": round(collector.export_s, 3), "parity_max_abs": f"{collector.parity:.2e}",
                       "seconds": round(time.perf_counter() - interval["t0"], 2),
                       "wall_s": round(wall0 + time.perf_counter() - t_call, 2)}
                state["next_eval"] = (state["env_steps"] // loop.eval_every + 1) * loop.eval_every
                state["train_returns"] = []
                interval.update(updates=0, update_s=0.0, losses={k: 0.0 for k in _LOSSES}, t0=time.perf_counter(),
                                plan_ms=[])
                log.info("eval at %d env steps: return %.1f +- %.1f (%d episodes), plan %.2f ms (p99 %.2f)",
                         state["env_steps"], row["eval_return"], row["eval_return_std"], len(returns),
                         row["plan_ms_median"], row["plan_ms_p99"])

            # Commit the episode: its files under new names, then the manifest that names them
            state["wall_s"] = wall0 + time.perf_counter() - t_call
            step = int(state["episodes"])
            files = {"buffer": buffer.save(commits.stage("buffer", "buffer.npz", step)),
                     "latent": save_latent(model, commits.stage("latent", "checkpoints/latent.pt", step), learner,
                                           extra={"agent_steps": state["agent_steps"],
                                                  "torch_rng": torch.get_rng_state(), "config": to_dict(cfg)})}
            if row is not None:
                history.append(row)
                files["metrics"] = write_csv(commits.stage("metrics", "metrics.csv", step), history)
            planner_files, planner_state = collector.stage(commits, step)
            commits.commit(step, {**files, **planner_files},
                           {**state, **planner_state, "interval_updates": interval["updates"],
                            "interval_losses": interval["losses"], "rng": rng.bit_generator.state,
                            "update_rng": update_rng.bit_generator.state, "seed": seed},
                           keep=("metrics", "planner_model"))
            if row is not None:
                write_csv(run.metrics, history)  # published for people; resume reads the committed copy
                plot_learning_curve(run.metrics, run.file("learning_curve.png"), f"TD-MPC latent model on {spec.name}")
                rows.append(row)
            if progress is not None:
                progress({"episode": state["episodes"], "env_steps": state["env_steps"], "train_return": ret,
                          "updates": learner.updates, "eval": row})
    finally:
        background.close()
    env.close()
    return rows
