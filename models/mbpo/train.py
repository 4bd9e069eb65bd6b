"""The MBPO loop (Janner et al. 2019, Alg. 2) in a run directory, resumable.

Per agent step, after ``random_steps`` of uniform actions and from ``learning_starts`` on:

1. act with SAC's sampled action, store the real transition;
2. every ``model_train_every`` steps: fit the PETS ensemble (7 members, continuing from the
   last weights) on the whole real buffer, pick the ``elites`` members with the lowest
   validation MSE, export them to ``RUN/ensemble.onnx`` (PETS's exporter, parity-checked against
   PyTorch) and open it with ONNX Runtime (with ``rollout_precision: int8`` its int8 copy,
   ``RUN/ensemble.int8.onnx``, whose mean difference from the float32 file, relative to the
   predictions' spread, goes into the metrics as ``int8_rel_diff``);
3. every ``rollout_every`` steps: ``rollout_batch`` branched rollouts of k steps
   (:mod:`.rollout`, TS1 through the ONNX file, actions from SAC's actor) from states drawn
   from the real buffer, k from MBPO's schedule over epochs of ``epoch_length`` steps, into
   the model buffer (capacity: the rollouts of ``retain_steps`` steps at the current k);
4. ``updates_per_step`` SAC updates on batches of which ``real_ratio`` are real transitions
   and the rest model transitions (all real until the model buffer holds any).

Every ``eval_every`` episodes (at an episode's end) the deterministic policy runs
``eval_episodes`` episodes and the step is committed (:mod:`rtmpc.models.common.commit`): the
real buffer, the model buffer, the agent (SAC, the ensemble, the elites, counters), the
metrics and, when its evaluation is the best so far, the actor (``best_actor``); the numpy
generator's state goes into the manifest. Commits fall between episodes and everything random
is saved, so a resumed run is the uninterrupted one (``RESUME_EXACT``). ``model.onnx``, the
best actor's deterministic policy (an rtmpc policy file, parity-checked), is written at the end
and by ``rtmpc export``.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from rtmpc.configs.rundir import RunDir, atomic_write, read_csv, write_csv
from rtmpc.models.base import ModelError
from rtmpc.models.common.buffer import ReplayBuffer
from rtmpc.models.common.commit import Manifest
from rtmpc.models.common.curves import plot_learning_curve
from rtmpc.models.common.ensemble import ProbabilisticEnsemble, elite_members, fit_ensemble, select_members
from rtmpc.models.common.ensemble_export import check_parity, export_onnx
from rtmpc.models.common.episodes import _check_finite
from rtmpc.models.common.quantize import compare_predictions, quantize_int8
from rtmpc.models.runtime import open_session

from .config import MBPOConfig
from .known_termination import KNOWN, known_termination
from .rollout import EnsembleStep, ModelBuffer, TerminationStep, branched_rollouts
from .sac import SAC, Actor, ActorPolicy
from .termination import TerminationHead, export_termination, fit_termination

__all__ = ["MBPOAgent", "train_mbpo", "load_agent", "export_actor", "best_actor"]

log = logging.getLogger(__name__)


class MBPOAgent:
    """MBPO's whole training state: the real and model buffers, the ensemble and its elites, SAC,
    the generator and the counters. ``spec``: the task's (sizes, bounds, action repeat)."""

    def __init__(self, spec, cfg: MBPOConfig, seed: int = 0):
        self.cfg, self.spec, self.seed = cfg, spec, seed
        o, a = spec.obs_dim, spec.act_dim
        self.real = ReplayBuffer(o, a)
        self.ensemble = ProbabilisticEnsemble(o, a, cfg.model, seed=seed)
        self.sac = SAC(o, a, spec.action_low, spec.action_high, cfg.sac, seed=seed)
        self.rng = np.random.default_rng(seed)
        self.k = cfg.rollout_length(0)
        self.model_buf = ModelBuffer(o, a, self.model_capacity(self.k))
        self.elites: tuple[int, ...] = ()
        self.agent_steps = self.episodes = self.fits = 0
        self.step_fn: EnsembleStep | None = None
        # terminations: the learned head and its optimiser (termination: learned) and what the rollouts call
        self.term_head = self.term_opt = None
        self.term_fn = None  # TerminationStep (learned) or KnownTermination (known)
        if cfg.termination == "known":
            self.term_fn = known_termination(spec.name)
            if self.term_fn is None:
                raise ModelError(f"task {spec.name} has no known termination function (rtmpc knows "
                                 f"{', '.join(KNOWN)}): set mbpo.termination=learned")
        if cfg.termination == "learned":
            self.term_head = TerminationHead(o, a, cfg.termination_model, seed)
            self.term_opt = torch.optim.Adam(self.term_head.parameters(), lr=cfg.termination_model.lr)
        self.last_fit: dict[str, float] = {}  # the last fit's and SAC update's numbers, for the metrics
        self.last_sac: dict[str, float] = {}
        self.stats: dict[str, float] = {}

    # -- sizes ----------------------------------------------------------------------------
    def model_capacity(self, k: int) -> int:
        """Rows of the model buffer: the rollouts of ``retain_steps`` agent steps at length k."""
        cfg = self.cfg
        return cfg.rollout_batch * k * math.ceil(cfg.retain_steps / cfg.rollout_every)

    def _add(self, key: str, value: float) -> None:
        self.stats[key] = self.stats.get(key, 0.0) + value

    # -- the model ------------------------------------------------------------------------
    def fit_model(self, run: RunDir) -> None:
        cfg = self.cfg
        fit = fit_ensemble(self.ensemble, self.real, cfg.fit, rng=self.rng)
        self.elites = elite_members(fit, cfg.elites)
        self.fits += 1
        self.last_fit = {"val_mse": fit.val_mse, "fit_s": fit.seconds, "fit_epochs": fit.epochs}
        self._add("fit_s", fit.seconds)
        if self.term_head is not None:
            r = self.real
            self.last_fit.update(fit_termination(self.term_head, self.term_opt, r.obs, r.act,
                                                 r.next_obs, r.terminated, cfg.termination_model, self.rng))
        self.open_model(run)

    def open_model(self, run: RunDir) -> None:
        """Export the elites to RUN/ensemble.onnx, check it against PyTorch, open it for rollouts."""
        spec, cfg = self.spec, self.cfg
        elite = select_members(self.ensemble, self.elites)
        path = run.file("ensemble.onnx")
        export_onnx(elite, path, action_low=spec.action_low, action_high=spec.action_high, gamma=cfg.sac.gamma,
                    propagation="TS1", extra_metadata={**spec.model_metadata(),
                                                       "mbpo_elites": ",".join(map(str, self.elites))})
        pick = np.random.default_rng(self.fits).choice(len(self.real), min(cfg.parity_samples, len(self.real)),
                                                       replace=False)
        check_parity(elite, path, (self.real.obs[pick], self.real.act[pick]))
        if cfg.rollout_precision == "int8":
            int8 = quantize_int8(path, run.file("ensemble.int8.onnx"))
            diff = compare_predictions(path, int8, self.real.obs[pick], self.real.act[pick])
            self.last_fit["int8_rel_diff"] = diff["mean_rel_diff"]
            path = int8
        self.step_fn = EnsembleStep(open_session(path, cfg.threads), self.rng, str(path))
        if self.term_head is not None and bool(self.term_head.fitted):
            term = run.file("termination.onnx")
            export_termination(self.term_head, term, check_obs=self.real.obs[pick], check_act=self.real.act[pick],
                               check_next=self.real.next_obs[pick],
                               extra_metadata=spec.model_metadata())
            self.term_fn = TerminationStep(open_session(term, 1), cfg.termination_model.threshold, str(term))

    def rollout(self) -> None:
        cfg = self.cfg
        k = cfg.rollout_length(self.agent_steps // cfg.epoch_length)
        if k != self.k:
            self.k = k
            self.model_buf.resize(self.model_capacity(k))
        starts = self.real.obs[self.rng.integers(0, len(self.real), cfg.rollout_batch)]
        done = branched_rollouts(self.step_fn, lambda obs: self.sac.act(obs), starts, k, self.model_buf,
                                 self.term_fn)
        self._add("rollout_s", done["seconds"])
        self._add("rollouts", done["rollouts"])
        self._add("model_transitions", done["transitions"])
        self._add("model_terminal", done["terminal"])

    # -- SAC ------------------------------------------------------------------------------
    def batch(self) -> tuple[torch.Tensor, ...]:
        """One SAC batch: ``round(real_ratio * B)`` real rows, the rest model rows (all real while
        the model buffer is empty)."""
        b = self.cfg.sac.batch_size
        n_real = b if not len(self.model_buf) else int(round(self.cfg.real_ratio * b))
        i = self.rng.integers(0, len(self.real), n_real)
        r = self.real
        parts = [(r.obs[i], r.act[i], r.reward[i], r.next_obs[i], r.terminated[i].astype(np.float32))]
        if n_real < b:
            parts.append(self.model_buf.sample(b - n_real, self.rng))
        return tuple(torch.from_numpy(np.concatenate([p[j] for p in parts]).astype(np.float32)) for j in range(5))

    def train_sac(self, updates: int) -> None:
        t0 = time.perf_counter()
        for _ in range(updates):
            out = self.sac.update(*self.batch())
        if updates:
            self._add("sac_s", time.perf_counter() - t0)
            self._add("sac_updates", updates)
            self.last_sac = out

    # -- acting ---------------------------------------------------------------------------
    def action(self, obs: np.ndarray) -> np.ndarray:
        if self.agent_steps < self.cfg.random_steps:
            return self.rng.uniform(self.spec.action_low, self.spec.action_high).astype(np.float32)
        return self.sac.act(np.asarray(obs, np.float32)[None])[0]

    def after_step(self, run: RunDir) -> None:
        """Fits, rollouts and SAC updates due after agent step ``agent_steps``."""
        cfg, t = self.cfg, self.agent_steps - self.cfg.learning_starts
        if t < 0:
            return
        if t % cfg.model_train_every == 0:
            self.fit_model(run)
        if t % cfg.rollout_every == 0 and cfg.real_ratio < 1.0:
            self.rollout()
        self.train_sac(cfg.updates_per_step)

    def episode(self, env, run: RunDir, max_steps: int) -> float:
        """One training episode (at most ``max_steps`` agent steps); its return."""
        obs, _ = env.reset(seed=int(self.rng.integers(2**31)))
        total = 0.0
        for step in range(min(self.spec.episode_steps, max_steps)):
            a = self.action(obs)
            next_obs, reward, terminated, truncated, _ = env.step(a)
            _check_finite(next_obs, reward, self.episodes, step + 1, "step")
            if terminated and self.cfg.termination == "none":
                raise ModelError(f"task {self.spec.name} terminated an episode at step {step + 1}: mbpo.termination "
                                 f"is none (model rollouts never end), which fits tasks that never terminate "
                                 f"(dm_control); set mbpo.termination=known or learned for a task that ends")
            self.real.add(obs, a, reward, next_obs, terminated, self.episodes)
            self.agent_steps += 1
            total += float(reward)
            self.after_step(run)
            obs = next_obs
            if terminated or truncated:
                break
        self.episodes += 1
        return total

    @torch.no_grad()
    def evaluate(self, env, n_eval: int) -> np.ndarray:
        """Returns of ``eval_episodes`` episodes of the deterministic policy (seeds apart from training's)."""
        out = []
        for i in range(self.cfg.eval_episodes):
            obs, _ = env.reset(seed=10**6 * (self.seed + 1) + n_eval * self.cfg.eval_episodes + i)
            total = 0.0
            for _ in range(self.spec.episode_steps):
                obs, reward, terminated, truncated, _ = env.step(self.sac.act(np.asarray(obs)[None], True)[0])
                total += float(reward)
                if terminated or truncated:
                    break
            out.append(total)
        return np.asarray(out)

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"format": 1, "kind": "mbpo", "obs_dim": self.spec.obs_dim, "act_dim": self.spec.act_dim,
                "sac": self.sac.state_dict(), "ensemble": self.ensemble.state_dict(), "elites": list(self.elites),
                "k": self.k, "agent_steps": self.agent_steps, "episodes": self.episodes, "fits": self.fits,
                "last_fit": dict(self.last_fit), "last_sac": dict(self.last_sac),
                "termination": (None if self.term_head is None else
                                {"head": self.term_head.state_dict(), "opt": self.term_opt.state_dict()})}

    def load_state_dict(self, state: dict) -> None:
        if (state.get("kind") != "mbpo" or int(state["obs_dim"]) != self.spec.obs_dim
                or int(state["act_dim"]) != self.spec.act_dim):
            raise ModelError(f"the checkpoint is not an MBPO agent for task {self.spec.name} (obs "
                             f"{self.spec.obs_dim}, act {self.spec.act_dim})")
        self.sac.load_state_dict(state["sac"])
        self.ensemble.load_state_dict(state["ensemble"])
        self.elites = tuple(int(e) for e in state["elites"])
        self.k, self.agent_steps = int(state["k"]), int(state["agent_steps"])
        self.episodes, self.fits = int(state["episodes"]), int(state["fits"])
        self.last_fit = {k: float(v) for k, v in state["last_fit"].items()}
        self.last_sac = {k: float(v) for k, v in state["last_sac"].items()}
        term = state.get("termination")
        if (term is None) != (self.term_head is None):
            was = "none" if term is None else "learned"
            raise ModelError(f"the checkpoint was trained with mbpo.termination = {was}, the config says "
                             f"{self.cfg.termination}: resume with the run's own config")
        if term is not None:
            self.term_head.load_state_dict(term["head"])
            self.term_opt.load_state_dict(term["opt"])


def _load(path, what: str) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is the same user error
        raise ModelError(f"{path} is not an MBPO {what} rtmpc can read safely ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200] if str(err) else ''})") from None


def load_agent(path, spec, cfg: MBPOConfig, seed: int) -> MBPOAgent:
    """The agent (networks, ensemble, counters) of the checkpoint at ``path``; buffers empty."""
    agent = MBPOAgent(spec, cfg, seed)
    agent.load_state_dict(_load(path, "checkpoint"))
    return agent


def best_actor(agent: MBPOAgent, best_path) -> Actor:
    """The actor of the best evaluation (``best_path``), else the agent's own."""
    actor = agent.sac.actor
    if best_path is not None:
        blob = _load(best_path, "actor")
        try:
            actor.load_state_dict(blob["actor"])
        except (KeyError, RuntimeError, TypeError) as err:
            raise ModelError(f"{best_path} does not hold this task's MBPO actor ({type(err).__name__})") from None
    return actor


def export_actor(actor: Actor, path, spec, *, check_obs: np.ndarray | None = None, gamma: float = 0.99) -> float:
    """Write ``actor`` as an rtmpc policy file (kind ``mbpo``) at ``path``, deterministic action =
    the squashed mean; returns max |ONNX - PyTorch| over random and ``check_obs`` observations
    (a ModelError past the shared tolerance)."""
    from rtmpc.models.common.policy_export import check_policy_parity, export_policy

    module = ActorPolicy(actor).eval()
    meta = {**spec.model_metadata(), "gamma": repr(gamma)}
    export_policy(module, path, kind="mbpo", obs_dim=spec.obs_dim, act_dim=spec.act_dim,
                  action_low=spec.action_low, action_high=spec.action_high, extra_metadata=meta)
    return check_policy_parity(module, path, check_obs)


def _save_model_buffer(buf: ModelBuffer, path):
    return atomic_write(path, lambda f: np.savez(f, **buf.state_dict()))


def _load_model_buffer(buf: ModelBuffer, path) -> None:
    try:
        with np.load(path) as z:
            buf.load_state_dict({k: z[k] for k in z.files})
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"{path} is not an MBPO model buffer ({type(err).__name__}): start over with --overwrite"
                         ) from None


def train_mbpo(run: RunDir, make_env, cfg: MBPOConfig, *, seed: int = 0, resume: bool = False) -> list[dict]:
    """Run (or resume) MBPO in ``run`` for ``cfg.total_steps`` env steps; the metrics rows of this call."""
    torch.set_num_threads(cfg.torch_threads)
    run.make()
    env = make_env()
    spec = env.spec
    if spec.n_actions:
        env.close()
        raise ModelError(f"task {spec.name} has discrete actions: MBPO's SAC needs continuous ones (e.g. "
                         f"cartpole-swingup); for discrete tasks use kind: dynaq")
    commits = Manifest(run)
    agent = MBPOAgent(spec, cfg, seed)
    history: list[dict] = []
    if resume and commits.read() is not None:
        agent.load_state_dict(_load(commits.file("agent"), "checkpoint"))
        agent.real = ReplayBuffer.load(commits.file("buffer"))
        _load_model_buffer(agent.model_buf, commits.file("model_buffer"))
        agent.rng.bit_generator.state = commits.state["rng"]
        history = read_csv(commits.file("metrics"))
        if agent.fits:
            agent.open_model(run)
        log.info("resuming %s at %d agent steps (%d evaluations committed)", run.root, agent.agent_steps, len(history))
    else:
        commits.reset()
    eval_env = make_env()
    total = -(-cfg.total_steps // spec.action_repeat)  # agent steps
    rows: list[dict] = []
    # seconds: the run's wall clock summed over its processes (a resumed run goes on from the last
    # committed row; work after that row and before a kill is redone and counted once)
    t_start = time.perf_counter() - (float(history[-1].get("seconds") or 0.0) if history else 0.0)
    try:
        while agent.agent_steps < total:
            ret = agent.episode(env, run, total - agent.agent_steps)
            if agent.episodes % cfg.eval_every and agent.agent_steps < total:
                continue
            n_eval = len(history)
            returns = agent.evaluate(eval_env, n_eval)
            s = agent.stats
            sac = agent.last_sac
            row = {"env_steps": agent.agent_steps * spec.action_repeat, "agent_steps": agent.agent_steps,
                   "episodes": agent.episodes, "eval_return": round(float(returns.mean()), 3),
                   "eval_min": round(float(returns.min()), 3), "train_return": round(ret, 3),
                   "rollout_length": agent.k, "model_buffer": len(agent.model_buf), "fits": agent.fits,
                   "elites": " ".join(map(str, agent.elites)),
                   "val_mse": round(agent.last_fit["val_mse"], 5) if agent.last_fit else "",
                   "int8_rel_diff": (round(agent.last_fit["int8_rel_diff"], 5)
                                     if "int8_rel_diff" in agent.last_fit else ""),
                   "sac_updates": agent.sac.updates, "alpha": round(sac["alpha"], 5) if sac else "",
                   "critic_loss": round(sac["critic_loss"], 5) if sac else "",
                   "sac_updates_per_s": round(s["sac_updates"] / s["sac_s"], 1) if s.get("sac_s") else "",
                   "rollouts_per_s": round(s["rollouts"] / s["rollout_s"], 1) if s.get("rollout_s") else "",
                   "model_transitions_per_s": (round(s["model_transitions"] / s["rollout_s"], 1)
                                               if s.get("rollout_s") else ""),
                   "fit_s": round(s.get("fit_s", 0.0), 2), "rollout_s": round(s.get("rollout_s", 0.0), 2),
                   "sac_s": round(s.get("sac_s", 0.0), 2), "seconds": round(time.perf_counter() - t_start, 2)}
            if agent.term_head is not None:  # the learned termination head's numbers (see .termination)
                f = agent.last_fit
                row.update({key: (round(f[key], 5) if key in f and math.isfinite(f[key]) else "")
                            for key in ("term_recall", "term_fpr")})
            if cfg.termination != "none":
                row["real_terminal"] = int(agent.real.terminated.sum())
                row["model_terminal_share"] = (round(s.get("model_terminal", 0.0) / s["model_transitions"], 5)
                                               if s.get("model_transitions") else "")
            agent.stats = {}
            commit(run, commits, agent, history, row)
            rows.append(row)
            log.info("%d env steps: eval return %.1f, k %d, %d model rows, %s SAC updates/s, %s model transitions/s",
                     row["env_steps"], row["eval_return"], agent.k, len(agent.model_buf), row["sac_updates_per_s"],
                     row["model_transitions_per_s"])
    finally:
        env.close()
        eval_env.close()
    commits.read()
    actor = best_actor(load_agent(commits.file("agent"), spec, cfg, seed), commits.file("best_actor"))
    pick = np.random.default_rng(0).choice(len(agent.real), min(256, len(agent.real)), replace=False)
    export_actor(actor, run.model, spec, check_obs=agent.real.obs[np.sort(pick)], gamma=cfg.sac.gamma)
    return rows


def commit(run: RunDir, commits: Manifest, agent: MBPOAgent, history: list[dict], row: dict) -> None:
    """Commit one evaluation: buffers, agent, metrics and (if the best so far) the actor, then the manifest."""
    step = len(history) + 1
    best = max((float(r["eval_return"]) for r in history), default=-float("inf"))
    history.append(row)
    files = {"buffer": agent.real.save(commits.stage("buffer", "buffer.npz", step)),
             "model_buffer": _save_model_buffer(agent.model_buf,
                                                commits.stage("model_buffer", "checkpoints/model_buffer.npz", step)),
             "agent": atomic_write(commits.stage("agent", "checkpoints/agent.pt", step),
                                   lambda f: torch.save(agent.state_dict(), f)),
             "metrics": write_csv(commits.stage("metrics", "metrics.csv", step), history)}
    if float(row["eval_return"]) >= best:
        files["best_actor"] = atomic_write(commits.stage("best_actor", "checkpoints/best_actor.pt", step),
                                           lambda f: torch.save({"kind": "mbpo-actor",
                                                                 "actor": agent.sac.actor.state_dict(),
                                                                 "env_steps": int(row["env_steps"])}, f))
    commits.commit(step, files, {"env_steps": row["env_steps"], "evaluations": step,
                                 "rng": agent.rng.bit_generator.state}, keep=("best_actor",))
    write_csv(run.metrics, history)
    plot_learning_curve(run.metrics, run.file("learning_curve.png"), f"MBPO on {agent.spec.name}",
                        panels=("rollout_length", "sac_updates_per_s", "model_transitions_per_s"))
