"""``rtmpc analyze RUN_DIR``: how far can the model be trusted? k-step error, calibration, horizon.

Collects fresh episodes in the simulator, with the controller's own actions (the planner
over the exported model, built from the run's planner config, stepped in lockstep) and
with uniformly random actions; rolls the model open-loop from real states along the real
actions (models.analysis) and reports, for k = 1..H, the state, reward and return errors
against a last-state and a constant-velocity baseline, the calibration of the ensemble's
disagreement, and a suggested maximum planning horizon.

Writes ``analysis.json`` (the whole report; ``suggested_horizon`` is what a tuner reads,
see models.analysis.read_suggested_horizon), ``analysis_error.png`` and
``analysis_calibration.png`` into the run directory; prints a table and, last, one JSON
line. Needs no torch. docs/analyze.md explains the metrics.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from . import flags

log = logging.getLogger(__name__)

# Keys of the report repeated on the JSON line (analysis.json holds everything).
SUMMARY_KEYS = ["state_error_by_k", "state_error_p90_by_k", "state_error_last_state_by_k",
                "state_error_const_velocity_by_k", "reward_error_by_k", "return_error_by_k",
                "return_error_p90_by_k", "return_spread_by_k", "disagreement_error_spearman",
                "disagreement_error_spearman_within_k", "variance_error_spearman", "value_error_by_k",
                "score_error_by_k", "score_spread_by_k", "suggested_horizon", "suggested_horizon_pooled",
                "horizon_limited", "mbpo_k_star", "fraction", "horizon", "windows"]


def add_arguments(p) -> None:
    p.add_argument("run_dir", nargs="?", help="run directory (model.onnx and config.yaml in it)")
    p.add_argument("--model", help="an exported model (instead of RUN_DIR/model.onnx)")
    p.add_argument("--task", help="task name (default: the run's, else the task stored in the model)")
    p.add_argument("--config", help="run config for the planner and task (default: RUN_DIR/config.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value, e.g. --set planner.samples=100")
    p.add_argument("--episodes", type=flags.count(0, 100_000), default=2,
                   help="episodes with the controller's actions (default 2)")
    p.add_argument("--random-episodes", type=flags.count(0, 100_000),
                   help="episodes with random actions (default: --episodes)")
    p.add_argument("--horizon", type=flags.count(0, 1000), default=0,
                   help="H: open-loop steps to measure (default: twice the planner's horizon)")
    p.add_argument("--steps", type=flags.count(0, 10**7), default=0,
                   help="cap on steps per episode (default: the task's episode)")
    p.add_argument("--stride", type=flags.count(1, 10**6), default=1, help="steps between window starts (default 1)")
    p.add_argument("--fraction", type=float, default=0.5,
                   help="suggested horizon: last k whose return error is within FRACTION x the spread of "
                        "the true k-step return (default 0.5)")
    p.add_argument("--propagation", choices=("members", "expectation"),
                   help="PETS: each member keeps its own trajectory (members, the default), or the members' mean "
                        "is fed back (expectation)")
    p.add_argument("--threads", type=flags.threads(), default=1, help="ONNX Runtime intra-op threads (default 1)")
    p.add_argument("--seed", type=flags.seed(), default=0, help="seed of the first episode")
    p.add_argument("--out", help="directory for analysis.json and the plots (default: RUN_DIR, else beside "
                                 "the model)")


def resolve(args):
    """(model path, run config, task config, output directory) from the arguments."""
    from rtmpc.configs import ConfigError
    from rtmpc.models.runtime import read_metadata

    from .runconfig import config_or_runs, load_run_config

    run_dir = Path(args.run_dir) if args.run_dir else None
    if run_dir is not None and not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} not found")
    if args.model:
        model_path = Path(args.model)
    elif run_dir is not None:
        model_path = run_dir / "model.onnx"
    else:
        raise ConfigError("give a run directory (rtmpc analyze RUN_DIR) or --model model.onnx [--task NAME]")
    meta = read_metadata(model_path)
    config = config_or_runs(args.config, run_dir)
    cfg = load_run_config(config, args.overrides)
    task = args.task or (cfg.task.name if config else None) or meta.get("task")
    if not task:
        raise ConfigError(f"{model_path} does not say which task it was trained on: pass --task")
    repeat = int(meta.get("action_repeat", cfg.task.action_repeat))
    if config and repeat != cfg.task.action_repeat:
        log.warning("the model steps %d physics control steps but the config says %d: using the model's",
                    repeat, cfg.task.action_repeat)
    task_cfg = cfg.task.replace(name=task, action_repeat=repeat)
    out = Path(args.out) if args.out else (run_dir or model_path.parent)
    return model_path, cfg, task_cfg, out


def collect(model_path, cfg, task_cfg, *, episodes: int, random_episodes: int, steps: int, seed: int,
            threads: int):
    """Fresh trajectories: ``episodes`` with the planner over the model, ``random_episodes``
    with uniformly random actions."""
    from rtmpc.models.analysis import collect_trajectory
    from rtmpc.models.base import ModelError
    from rtmpc.models.runtime import load_model
    from rtmpc.planners import make_planner

    from rtmpc import sim

    env = sim.make(task_cfg, seed=seed)
    spec = env.spec
    trajectories = []
    if episodes:
        model = load_model(model_path, threads=threads, rng=np.random.default_rng(seed))
        if (spec.obs_dim, spec.act_dim) != (model.dims.obs_dim, model.dims.act_dim):
            raise ModelError(f"{model_path} has obs {model.dims.obs_dim}, act {model.dims.act_dim} but task "
                             f"{spec.name} has obs {spec.obs_dim}, act {spec.act_dim}: use the model trained on it")
        for ep in range(episodes):
            planner = make_planner(cfg.planner, model, rng=seed + ep)
            planner.reset()
            tr = collect_trajectory(env, planner.plan, seed=seed + ep, steps=steps, source="controller")
            log.info("controller episode %d: %d steps, return %.1f", ep, len(tr.act), tr.reward.sum())
            trajectories.append(tr)
    for ep in range(random_episodes):
        rng = np.random.default_rng([seed, ep])
        policy = lambda obs, rng=rng: rng.uniform(spec.action_low, spec.action_high)  # noqa: E731
        tr = collect_trajectory(env, policy, seed=seed + 10_000 + ep, steps=steps, source="random")
        log.info("random episode %d: %d steps, return %.1f", ep, len(tr.act), tr.reward.sum())
        trajectories.append(tr)
    env.close()
    return trajectories


def _f(x, width: int = 8, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-".rjust(width)
    return f"{x:{width}.{digits}f}"


# Table columns: (header, report key, width, digits); a column is shown when its key is.
COLUMNS = [("state err", "state_error_by_k", 10, 3), ("p90", "state_error_p90_by_k", 7, 3),
           ("last-st", "state_error_last_state_by_k", 8, 3), ("const-v", "state_error_const_velocity_by_k", 8, 3),
           ("disagr", "disagreement_by_k", 8, 3), ("rho_k", "disagreement_error_spearman_by_k", 6, 2),
           ("rew err", "reward_error_by_k", 8, 3), ("ret err", "return_error_by_k", 8, 3),
           ("last-rw", "return_error_last_state_by_k", 8, 3), ("lin-rw", "return_error_const_velocity_by_k", 8, 3),
           ("tol(ret)", "return_tolerance_by_k", 9, 3), ("rank", "return_rank_spearman_by_k", 5, 2),
           ("score err", "score_error_by_k", 10, 3), ("tol(score)", "score_tolerance_by_k", 11, 3),
           ("rank", "score_rank_spearman_by_k", 5, 2), ("value err", "value_error_by_k", 10, 3)]


def print_table(r: dict, title: str, planner_horizon: int) -> None:
    print(title)
    scored = f" ({r['value_windows']} with a fair value target)" if "value_windows" in r else ""
    print(f"  {r['windows']} windows{scored} of {r['horizon']} steps; state error in data std (RMS over dims), "
          f"return errors in reward units; tol = {r['fraction']:g} x spread of the true value")
    r = dict(r)
    for what in ("return", "score"):
        if f"{what}_spread_by_k" in r:
            r[f"{what}_tolerance_by_k"] = [r["fraction"] * x for x in r[f"{what}_spread_by_k"]]
    cols = [c for c in COLUMNS if c[1] in r]
    print("     k" + "".join(head.rjust(width) for head, _, width, _ in cols))
    h = r["horizon"]
    for k in range(1, h + 1) if h <= 30 else sorted({1, 2, 3, 5, *range(10, h + 1, 5), h}):
        print(f"  {k:4d}" + "".join(_f(r[key][k - 1], width, digits) for _, key, width, digits in cols))
    what = "return" if "return_error_by_k" in r else "score (k-step return + terminal value)"
    reached = "" if r["suggested_horizon"] < h else f" (never exceeded up to H = {h}: try a longer --horizon)"
    pooled = f" (pooled over sources: {r['suggested_horizon_pooled']})" if "suggested_horizon_pooled" in r else ""
    print(f"  suggested horizon   {r['suggested_horizon']}{reached}{pooled}: last k with {what} error <= "
          f"{r['fraction']:g} x its true spread, on every source; planner horizon {planner_horizon}")
    if "mbpo_k_star" in r:
        print(f"  MBPO-style k*       {r['mbpo_k_star']} (if errors only drifted linearly from the one-step error; "
              f"smallest over sources)")
    if "disagreement_error_spearman" in r:
        print(f"  calibration         Spearman(disagreement, error) {_f(r['disagreement_error_spearman'], 0, 2)} "
              f"pooled over k, {_f(r['disagreement_error_spearman_within_k'], 0, 2)} within k (mean); "
              f"Spearman(predicted std, error) {_f(r.get('variance_error_spearman'), 0, 2)}")
    for source, s in r.get("by_source", {}).items():
        parts = [f"{s['windows']} windows"]
        if "state_error_by_k" in s:
            parts.append(f"state error k=1 {_f(s['state_error_by_k'][0], 0)}, k=H {_f(s['state_error_by_k'][-1], 0)}")
        for key, label in (("return_error_by_k", "return error"), ("score_error_by_k", "score error")):
            if key in s:
                parts.append(f"{label} k=H {_f(s[key][-1], 0)}")
        if "suggested_horizon" in s:
            parts.append(f"suggested horizon {s['suggested_horizon']}")
        if "mbpo_k_star" in s:
            parts.append(f"MBPO-style k* {s['mbpo_k_star']}")
        print(f"  {source:<18}  " + "; ".join(parts))


def run(args) -> int:
    from rtmpc.configs import ConfigError
    from rtmpc.configs.rundir import write_text
    from rtmpc.models import analysis

    model_path, cfg, task_cfg, out = resolve(args)
    horizon = args.horizon or 2 * cfg.planner.horizon
    if min(horizon, args.stride) < 1 or args.episodes < 0 or (args.random_episodes or 0) < 0:
        raise ConfigError(f"--horizon {args.horizon}, --stride {args.stride}, --episodes {args.episodes} must be "
                          f"positive (horizon 0 = twice the planner's)")
    random_episodes = args.episodes if args.random_episodes is None else args.random_episodes
    if args.episodes + random_episodes == 0:
        raise ConfigError("--episodes and --random-episodes are both 0: nothing to analyse")
    predictor = analysis.make_predictor(model_path, propagation=args.propagation, threads=args.threads)
    trajectories = collect(model_path, cfg, task_cfg, episodes=args.episodes, random_episodes=random_episodes,
                           steps=args.steps, seed=args.seed, threads=args.threads)
    windows = analysis.make_windows(trajectories, horizon, args.stride, gamma=predictor.gamma,
                                    value_sources=("controller",))
    report = analysis.analyze(predictor, windows, gamma=predictor.gamma, fraction=args.fraction)
    report.update({"model": str(model_path), "task": task_cfg.name, "episodes": args.episodes,
                   "random_episodes": random_episodes, "planner_horizon": cfg.planner.horizon,
                   "propagation": getattr(predictor, "propagation", None), "seed": args.seed,
                   "episode_returns": {t.source: [] for t in trajectories}})
    for t in trajectories:
        report["episode_returns"][t.source].append(float(t.reward.sum()))
    title = f"{task_cfg.name}: {model_path}"
    files = {"report": str(out / analysis.ANALYSIS_FILE),
             "errors_png": str(analysis.plot_errors(report, out / "analysis_error.png", title, cfg.planner.horizon))}
    cal = analysis.plot_calibration(report, out / "analysis_calibration.png", title)
    if cal is not None:
        files["calibration_png"] = str(cal)
    report["files"] = files
    write_text(out / analysis.ANALYSIS_FILE, analysis.to_json(report, indent=1) + "\n")
    print_table(report, f"rtmpc analyze | {title} | {args.episodes} controller + {random_episodes} random "
                        f"episode(s)", cfg.planner.horizon)
    for name, path in files.items():
        print(f"  {name:<18}  {path}")
    summary = {k: report[k] for k in SUMMARY_KEYS if k in report}
    summary.update({"model": str(model_path), "task": task_cfg.name, "planner_horizon": cfg.planner.horizon,
                    "files": files})
    print(analysis.to_json(summary))
    return 0
