"""``rtmpc tune``: the best planner config that fits the control period on this computer.

Searches the planner's horizon, samples, iterations and own knobs (elite fraction, MPPI
temperature, sampling std and noise correlation) with Optuna's multi-objective TPE
(maximise the episode return, minimise the p99 plan time). Each trial runs the task in
lockstep (scripts.control.run_episodes: the loop plans inline, so every plan's real time
is measured against the loop's deadline) on the same episode seeds as every other trial.
A short probe first times a few plans: a setting whose median plan time is more than
``--probe-factor`` times the plan budget is pruned without running the episode.

The study lives in an Optuna RDB storage: by default an SQLite file in the output folder
(re-running the same command continues it), or any URL given with ``--storage``
(several machines may run ``rtmpc tune`` on one study). ``--trials N`` is the number of
finished trials (complete, pruned or failed) the study should hold; an interrupted trial
does not count and is run again.

Writes into ``--out`` (default: ``tune/`` beside the model): ``study.db``, ``trials.csv``,
``front.csv``, ``pareto.png`` (return against p99 plan time, with the control period, the
plan budget and the accepted limit), ``tune.json``, and ``best.yaml``: the highest-return
trial whose p99 plan time is within the plan budget times ``--safety``, loadable by
``rtmpc control --config best.yaml``. Algorithms live in :mod:`planners.tuning`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtmpc.configs import ConfigError, from_dict, to_dict

from . import flags

if TYPE_CHECKING:
    from rtmpc.planners.tuning import SearchSpace, TrialResult

log = logging.getLogger(__name__)

ANALYSIS_FILE = "analysis.json"  # written by `rtmpc analyze` beside the model; suggested_horizon caps H
PROBE_CYCLES = 5
# SQLAlchemy drivers whose connect() takes connect_timeout (seconds)
CONNECT_TIMEOUT_DRIVERS = ("postgresql", "postgresql+psycopg2", "postgresql+psycopg", "mysql", "mysql+pymysql",
                           "mysql+mysqldb")
SEARCHED = ("kind", "horizon", "samples", "iterations", "elites", "init_std", "min_std", "noise_beta",
            "temperature")  # and prior_samples, for a base planner that uses the policy prior (uses_prior)
TABLE = [("trial", "{:>5}"), ("kind", "{:>4}"), ("H", "{:>3}"), ("K", "{:>5}"), ("iters", "{:>5}"),
         ("elites", "{:>6}"), ("prior", "{:>5}"), ("temp", "{:>5}"), ("std", "{:>5}"), ("beta", "{:>5}"),
         ("return", "{:>8}"), ("p50 ms", "{:>7}"), ("p99 ms", "{:>7}"), ("misses", "{:>6}"), ("fits", "{:>4}")]


def add_arguments(p) -> None:
    from rtmpc.planners import registry as planners

    p.add_argument("--model", required=True, help="exported model (model.onnx from rtmpc train/export)")
    p.add_argument("--task", help="task name (default: the task stored in the model file)")
    p.add_argument("--rate", type=flags.rate(), help="control rate in Hz (default: the config's loop.rate_hz, else "
                                              "the model's step rate)")
    p.add_argument("--servo", type=flags.rate(), help="servo rate in Hz (a robot at 100-1000 Hz): trials run the "
                                               "two-rate loop, and the plan budget is the replanning period "
                                               "(--rate, default the model's step), not the servo's (default: "
                                               "the config's loop.servo_hz)")
    p.add_argument("--planner", choices=(*planners.names(), "both"), default="both",
                   help="planner(s) searched (default: all of them)")
    p.add_argument("--trials", type=flags.count(1, 1_000_000), default=20,
                   help="finished trials the study should hold (default 20)")
    p.add_argument("--episodes-per-trial", type=flags.count(1, 10_000), default=1,
                   help="episodes per trial (seeds seed..)")
    p.add_argument("--storage", help="Optuna RDB URL, e.g. postgresql://user:pw@host/db (default: "
                                     "sqlite:///OUT/study.db)")
    p.add_argument("--study", help="study name (default: TASK-PLANNER-RATEhz)")
    p.add_argument("--out", help="output folder (default: tune/ beside the model)")
    p.add_argument("--config", help="base config: loop, safety and the planner fields not searched "
                                    "(default: the config.yaml beside the model, if any)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a base config value, e.g. --set planner.disagreement_penalty=1")
    p.add_argument("--space", action="append", default=[], metavar="KEY=VALUE",
                   help="change a search range, e.g. --space horizon_max=40 --space samples_max=2000")
    # 0.7: on the 2-core machine the wall-clock loop's p99 plan time was 1.39x the lockstep one (docs/tune.md).
    p.add_argument("--safety", type=float, default=0.7, help="best.yaml's lockstep p99 plan time must be at most "
                                                             "this fraction of the plan budget (default 0.7)")
    p.add_argument("--probe-factor", type=float, default=2.0,
                   help="prune a trial whose median plan time in a %d-cycle probe exceeds this many plan "
                        "budgets (0 = no probe; default 2)" % PROBE_CYCLES)
    p.add_argument("--seed", type=flags.seed(), default=0, help="seed of the sampler and of the first episode")
    p.add_argument("--threads", type=flags.threads(), help="ONNX Runtime intra-op threads (default: the base "
                                                           "config's loop.threads)")
    p.add_argument("--check-cycles", type=flags.count(0, 10**9), default=0,
                   help="then run best.yaml this many cycles in wall-clock mode and report its misses (0 = no "
                        "check; on 2 cores the wall-clock p99 was ~35%% above the lockstep p99 tune measures)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")


# ------------------------------------------------------------------ set-up
@dataclass(frozen=True)
class Setup:
    """Everything a trial needs, resolved once."""

    model: Path
    task: str
    rate_hz: float
    budget_ms: float
    limit_ms: float
    base: Any  # RunConfig: loop, safety, task and the planner fields not searched
    kinds: tuple[str, ...]
    space: SearchSpace
    episodes: int
    seed: int
    threads: int
    probe_factor: float


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_horizon_cap(model: Path) -> int | None:
    """``suggested_horizon`` from analysis.json beside the model, or None (absent or unreadable)."""
    path = model.parent / ANALYSIS_FILE
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text()).get("suggested_horizon")
        return None if value is None else max(1, int(value))
    except (ValueError, TypeError, AttributeError) as err:
        log.warning("ignoring %s: no usable suggested_horizon (%s)", path, err)
        return None


def resolve(args) -> Setup:
    from rtmpc.controller.config import LoopTiming
    from rtmpc.models.base import ModelError
    from rtmpc.models.runtime import load_model
    from rtmpc.planners.tuning import KINDS, SearchSpace, deadline_limit_ms

    from .control import control_config
    from .runconfig import config_or_runs

    model = Path(args.model)
    if not model.exists():
        raise FileNotFoundError(f"model file {model} not found")
    meta = load_model(model).dims.meta
    task = args.task or meta.get("task")
    if not task:
        raise ModelError(f"{model} does not say which task it was trained on: pass --task")
    config = config_or_runs(args.config, model.parent)
    base = control_config(config, args.overrides, None)
    base = base.replace(task=base.task.replace(name=task))
    if args.servo is not None:
        base = base.replace(loop=base.loop.replace(servo_hz=args.servo))
    period = float(meta.get("control_period", "nan"))
    if base.loop.servo_hz and math.isfinite(period) and period > 0:  # trials run in lockstep: check it once, here
        from .control import physics_steps_per_tick

        physics_steps_per_tick(base.loop.servo_hz, period / int(meta.get("action_repeat", 1)))
    if args.rate is None and base.loop.rate_hz is None and not (math.isfinite(period) and period > 0):
        raise ModelError(f"{model} has no control_period in its metadata: pass --rate")
    timing = LoopTiming.resolve(base.loop, 1.0 / period if period > 0 else None, rate_hz=args.rate)
    rate = timing.rate_hz
    # best.yaml records the rate it was tuned for (a later --rate still wins over it)
    base = base.replace(loop=base.loop.replace(rate_hz=rate))
    budget_ms = timing.budget_s * 1e3
    limit_ms = deadline_limit_ms(budget_ms, args.safety)
    if args.trials < 1 or args.episodes_per_trial < 1:
        raise ConfigError(f"--trials = {args.trials} and --episodes-per-trial = {args.episodes_per_trial} "
                          f"must both be at least 1")
    if args.probe_factor < 0:
        raise ConfigError(f"--probe-factor = {args.probe_factor} must be >= 0 (0 = no probe)")
    from rtmpc.configs import parse_overrides

    space = from_dict(SearchSpace, parse_overrides(args.space), prefix="space")
    cap = read_horizon_cap(model)
    if cap is not None:
        space = space.cap_horizon(cap)
        log.info("horizon searched up to %d: suggested_horizon of %s", space.horizon_max,
                 model.parent / ANALYSIS_FILE)
    kinds = KINDS if args.planner == "both" else (args.planner,)
    return Setup(model=model, task=task, rate_hz=rate, budget_ms=budget_ms, limit_ms=limit_ms, base=base,
                 kinds=kinds, space=space, episodes=args.episodes_per_trial, seed=args.seed,
                 threads=args.threads or base.loop.threads, probe_factor=args.probe_factor)


def evaluation_key(s: Setup) -> dict[str, Any]:
    """What makes two trials comparable; stored in the study and checked when it is resumed."""
    searched = SEARCHED + (("prior_samples",) if uses_prior(s) else ())
    planner = {k: v for k, v in to_dict(s.base.planner).items() if k not in searched}
    return {"task": s.task, "rate_hz": round(s.rate_hz, 9), "servo_hz": s.base.loop.servo_hz,
            "model_sha256": _file_sha256(s.model),
            "episodes_per_trial": s.episodes, "seed": s.seed, "threads": s.threads,
            "deadline_margin_s": s.base.loop.deadline_margin_s, "planner_fixed": planner,
            "safety_filter": to_dict(s.base.safety), "episode_steps": s.base.task.episode_steps}


# ------------------------------------------------------------------ storage and study
def safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a malformed URL is reported as given
        return url


def open_storage(url: str):
    """An Optuna RDBStorage with heartbeats (a killed trial is marked failed later), or a
    one-line ConfigError when the URL is malformed, its driver missing or its database unreachable."""
    import optuna

    engine_kwargs: dict[str, Any] = {}
    driver = url.split(":", 1)[0]
    if driver in CONNECT_TIMEOUT_DRIVERS:  # fail in seconds, not minutes, when the server is not there
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=60,
                                              grace_period=180)
    except Exception as err:  # sqlalchemy, driver and URL errors alike
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = ""
        if isinstance(err, ImportError):
            hint = ": install the database's Python driver"
        raise ConfigError(f"--storage {safe_url(url)}: cannot open the study storage "
                          f"({type(err).__name__}: {first}){hint}") from None


def _counted(trial) -> bool:
    """A finished trial: complete, pruned, or failed by its own error (not interrupted or killed)."""
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and "error" in trial.user_attrs)


def open_study(storage, name: str, key: dict[str, Any]):
    import optuna

    study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                directions=["maximize", "minimize"])
    saved = study.user_attrs.get("evaluation")
    if saved is None:
        study.set_user_attr("evaluation", key)
    else:
        for k, v in key.items():
            if saved.get(k) != v:
                raise ConfigError(f"study {name!r} was run with {k} = {saved.get(k)!r}, now {v!r}: its trials "
                                  f"are not comparable; use another --study or --out")
    return study


def baseline_params(s: Setup) -> dict[str, Any]:
    """The base config's planner as trial params, clipped into the search space."""
    p, sp = s.base.planner, s.space
    clip = lambda v, lo, hi: min(max(v, lo), hi)
    kind = p.kind if p.kind in s.kinds else s.kinds[0]
    out: dict[str, Any] = {"kind": kind} if len(s.kinds) > 1 else {}
    out.update(horizon=clip(p.horizon, sp.horizon_min, sp.horizon_max),
               samples=clip(p.samples, sp.samples_min, sp.samples_max),
               iterations=clip(p.iterations, sp.iterations_min, sp.iterations_max),
               elite_frac=clip(max(p.elites, 2) / p.samples, sp.elite_frac_min, sp.elite_frac_max),
               init_std=clip(p.init_std, sp.init_std_min, sp.init_std_max),
               noise_beta=clip(p.noise_beta, 0.0, sp.noise_beta_max))
    if kind == "mppi":
        out["temperature"] = clip(p.temperature, sp.temperature_min, sp.temperature_max)
    if uses_prior(s):
        out["prior_frac"] = clip(p.prior_samples / p.samples, sp.prior_frac_min, sp.prior_frac_max)
    return out


def uses_prior(s: Setup) -> bool:
    """The base planner mixes in policy-prior samples (a latent model's config): search their share."""
    return s.base.planner.prior_samples > 0


# ------------------------------------------------------------------ one trial
class TrialDiverged(RuntimeError):
    """The episode return or plan time came out non-finite."""


class SlowTrial(Exception):
    """The probe's median plan time is more than --probe-factor plan budgets: pruned, not run."""

    def __init__(self, p50_ms: float):
        super().__init__(f"probe plan time p50 {p50_ms:.1f} ms")
        self.p50_ms = p50_ms


def describe(cfg) -> str:
    extra = f" T={cfg.temperature:.2f}" if cfg.kind == "mppi" else ""
    extra += f" prior={cfg.prior_samples}" if cfg.prior_samples else ""
    return (f"{cfg.kind} H={cfg.horizon} K={cfg.samples} I={cfg.iterations} E={cfg.elites}{extra} "
            f"std={cfg.init_std:.2f} beta={cfg.noise_beta:.2f}")


def evaluate(s: Setup, planner_cfg) -> dict:
    """Run the trial's episodes in lockstep, after the probe (SlowTrial when the probe is too slow)."""
    from .control import run_episodes

    cfg = s.base.replace(planner=planner_cfg)
    common = dict(rate_hz=s.rate_hz, realtime=False, threads=s.threads, seed=s.seed, out=None)
    if s.probe_factor > 0:
        probe = run_episodes(s.model, s.task, cfg, episodes=1, cycles=PROBE_CYCLES, **common)
        _interrupted(probe)
        if probe["plan_ms_p50"] > s.probe_factor * s.budget_ms:
            raise SlowTrial(probe["plan_ms_p50"])
    result = run_episodes(s.model, s.task, cfg, episodes=s.episodes, cycles=0, **common)
    _interrupted(result)
    if not (math.isfinite(result["return_mean"]) and math.isfinite(result["plan_ms_p99"])):
        raise TrialDiverged(f"return {result['return_mean']}, plan p99 {result['plan_ms_p99']} ms")
    return result


def _interrupted(result: dict) -> None:
    # The control loop turns SIGINT/SIGTERM into a clean stop; the study must stop too.
    if result.get("stop_reason") in ("SIGINT", "SIGTERM"):
        raise KeyboardInterrupt


def make_objective(s: Setup, total: int, count):
    import optuna
    from rtmpc.planners.tuning import planner_from_params, suggest_params

    def objective(trial) -> tuple[float, float]:
        where = f"trial {trial.number} ({count() + 1}/{total})"
        t0 = time.perf_counter()
        trial.set_user_attr("seed", s.seed)
        what = "(no config)"
        try:
            cfg = planner_from_params(suggest_params(trial, s.space, s.kinds, prior=uses_prior(s)), s.base.planner)
            what = describe(cfg)
            trial.set_user_attr("elites", cfg.elites)
            r = evaluate(s, cfg)
        except SlowTrial as slow:
            trial.set_user_attr("probe_plan_ms_p50", slow.p50_ms)
            trial.set_constraint("deadline_excess_ms", slow.p50_ms - s.limit_ms)  # steers the sampler
            log.info("%s %s: pruned, %s > %g x budget %.1f ms", where, what, slow, s.probe_factor,
                     s.budget_ms)
            if trial.user_attrs.get("baseline"):
                enqueue_shrunk_base(trial, s, slow.p50_ms)
            raise optuna.TrialPruned(str(slow)) from None
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
            log.warning("%s %s: failed (%s: %s); the study goes on", where, what, type(err).__name__, err)
            raise
        seconds = time.perf_counter() - t0
        p99 = r["plan_ms_p99"]
        for k in ("return_std", "plan_ms_p50", "plan_ms_max", "misses", "cycles"):
            trial.set_user_attr(k, r[k])
        trial.set_user_attr("returns", r["returns"])
        trial.set_user_attr("seconds", round(seconds, 2))
        trial.set_constraint("deadline_excess_ms", p99 - s.limit_ms)  # > 0: over the accepted limit
        fits = "fits" if p99 <= s.limit_ms else "over"
        log.info("%s %s: return %.1f, plan p99 %.1f ms (%s %.1f), %d misses, %.0f s", where, what,
                 r["return_mean"], p99, fits, s.limit_ms, r["misses"], seconds)
        if trial.user_attrs.get("baseline"):
            enqueue_shrunk_base(trial, s, p99)
        return r["return_mean"], p99

    return objective


def enqueue_shrunk_base(trial, s: Setup, plan_ms: float) -> None:
    """The base config was over the accepted limit: queue it with fewer iterations (then
    samples) as the next trial, scaled by the time it took (planners.tuning.shrink_to_fit)."""
    from rtmpc.planners.tuning import shrink_to_fit

    params = shrink_to_fit(trial.params, plan_ms, s.limit_ms, s.space)
    if params is None:
        return
    trial.study.enqueue_trial(params, user_attrs={"baseline_shrunk": True}, skip_if_exists=True)
    log.info("the base config is over %.1f ms: the next trial is its planner with %d iterations and %d samples "
             "(was %d and %d)", s.limit_ms, params["iterations"], params["samples"], trial.params["iterations"],
             trial.params["samples"])


# ------------------------------------------------------------------ results
def collect(study, s: Setup) -> tuple[list[TrialResult], dict[str, int]]:
    from optuna.trial import TrialState
    from rtmpc.planners.tuning import TrialResult, planner_from_params

    results, states = [], {"complete": 0, "pruned": 0, "failed": 0, "running": 0, "interrupted": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            states["complete"] += 1
            cfg = planner_from_params(t.params, s.base.planner)
            results.append(TrialResult(t.number, float(t.values[0]), float(t.values[1]), dict(t.params),
                                       extra={**t.user_attrs, "config": cfg}))
        elif t.state == TrialState.PRUNED:
            states["pruned"] += 1
        elif t.state == TrialState.FAIL:
            states["failed" if "error" in t.user_attrs else "interrupted"] += 1
        elif t.state == TrialState.RUNNING:
            states["running"] += 1
    return results, states


def row(r: TrialResult, limit_ms: float) -> dict[str, Any]:
    c = r.extra["config"]
    return {"trial": r.number, "kind": c.kind, "horizon": c.horizon, "samples": c.samples,
            "iterations": c.iterations, "elites": c.elites, "prior_samples": c.prior_samples,
            "temperature": round(c.temperature, 4) if c.kind == "mppi" else "",
            "init_std": round(c.init_std, 4), "noise_beta": round(c.noise_beta, 4),
            "return_mean": round(r.return_mean, 3), "return_std": round(float(r.extra.get("return_std", 0.0)), 3),
            "plan_ms_p50": round(float(r.extra.get("plan_ms_p50", math.nan)), 3),
            "plan_ms_p99": round(r.plan_ms_p99, 3), "misses": r.extra.get("misses", ""),
            "fits": r.plan_ms_p99 <= limit_ms}


def write_csv(path: Path, rows: list[dict]) -> None:
    import csv

    from rtmpc.configs.rundir import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial"])
            w.writeheader()
            w.writerows(rows)


def format_table(rows: list[dict]) -> str:
    keys = ["trial", "kind", "horizon", "samples", "iterations", "elites", "prior_samples", "temperature", "init_std",
            "noise_beta", "return_mean", "plan_ms_p50", "plan_ms_p99", "misses", "fits"]
    lines = ["  " + " ".join(fmt.format(name) for name, fmt in TABLE)]
    for r in rows:
        cells = []
        for k, (_, fmt) in zip(keys, TABLE):
            v = r[k]
            if isinstance(v, bool):
                v = "yes" if v else "no"
            elif isinstance(v, float):
                v = f"{v:.1f}" if k in ("return_mean", "plan_ms_p50", "plan_ms_p99") else f"{v:.2f}"
            cells.append(fmt.format(str(v)))
        lines.append("  " + " ".join(cells))
    return "\n".join(lines)


def plot_front(results: list[TrialResult], front: list[TrialResult], best: TrialResult | None, s: Setup,
               path: Path, title: str) -> None:
    """Return against p99 plan time: every trial, the front, the best, and the time lines; a PNG."""
    from rtmpc.configs.plots import pyplot, save_png

    period_ms = 1e3 / s.rate_hz
    fig, ax = pyplot().subplots(figsize=(7, 4.5), dpi=100)
    for kind, marker in (("cem", "o"), ("mppi", "s")):
        pts = [r for r in results if r.extra["config"].kind == kind]
        if pts:
            ax.scatter([r.plan_ms_p99 for r in pts], [r.return_mean for r in pts], marker=marker, s=22,
                       color="0.6", label=f"{kind} trials")
    if front:
        ax.step([r.plan_ms_p99 for r in front], [r.return_mean for r in front], where="post", color="C0",
                lw=1.2)
        ax.scatter([r.plan_ms_p99 for r in front], [r.return_mean for r in front], s=30, color="C0",
                   zorder=3, label="Pareto front")
        for r in front:
            ax.annotate(str(r.number), (r.plan_ms_p99, r.return_mean), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    if best is not None:
        ax.scatter([best.plan_ms_p99], [best.return_mean], marker="*", s=220, color="C3", zorder=4,
                   label=f"best.yaml (trial {best.number})")
    ax.axvline(period_ms, color="k", lw=1.2, label=f"control period {period_ms:.1f} ms")
    ax.axvline(s.budget_ms, color="k", lw=1, ls="--", label=f"plan budget {s.budget_ms:.1f} ms")
    ax.axvline(s.limit_ms, color="C3", lw=1, ls=":", label=f"accepted p99 {s.limit_ms:.1f} ms")
    xs = [r.plan_ms_p99 for r in results] + [period_ms]
    if min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("p99 plan time (ms), lockstep")
    ax.set_ylabel("episode return (mean)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    save_png(fig, path)


def best_yaml_text(best: TrialResult, s: Setup, study_name: str, safety: float) -> str:
    import yaml

    cfg = best.extra["config"]
    data = {"task": to_dict(s.base.task), "planner": to_dict(cfg), "loop": to_dict(s.base.loop),
            "safety": to_dict(s.base.safety)}
    head = (f"# rtmpc tune: study {study_name!r}, trial {best.number}, the highest-return setting whose p99 plan\n"
            f"# time fits the plan budget x safety: {best.plan_ms_p99:.1f} ms <= {s.budget_ms:.1f} x {safety:g} = "
            f"{s.limit_ms:.1f} ms at {s.rate_hz:g} Hz (lockstep, this machine);\n"
            f"# return {best.return_mean:.1f} (mean of {s.episodes} episode(s), seed {s.seed}). Use:\n"
            f"#   rtmpc control --model {s.model} --config best.yaml --realtime\n")
    return head + yaml.safe_dump(data, sort_keys=False)


def report(study, s: Setup, out: Path, safety: float, storage_url: str) -> dict:
    from rtmpc.configs.rundir import write_text
    from rtmpc.planners.tuning import choose_best, pareto_front

    results, states = collect(study, s)
    front = pareto_front(results)
    best = choose_best(results, s.budget_ms, safety)
    all_rows = [row(r, s.limit_ms) for r in sorted(results, key=lambda r: r.number)]
    front_rows = [row(r, s.limit_ms) for r in front]
    write_csv(out / "trials.csv", all_rows)
    write_csv(out / "front.csv", front_rows)
    title = (f"{s.task} at {s.rate_hz:g} Hz, {', '.join(s.kinds)}: {states['complete']} complete, "
             f"{states['pruned']} pruned, {states['failed']} failed")
    plot_front(results, front, best, s, out / "pareto.png", title)
    best_path = out / "best.yaml"
    if best is not None:
        write_text(best_path, best_yaml_text(best, s, study.study_name, safety))
    elif best_path.exists():
        best_path.unlink()  # a stale best.yaml from another safety factor or rate would mislead
    summary = {"study": study.study_name, "storage": safe_url(storage_url), "task": s.task,
               "rate_hz": s.rate_hz, "servo_hz": s.base.loop.servo_hz, "period_ms": 1e3 / s.rate_hz,
               "budget_ms": s.budget_ms, "safety": safety,
               "limit_ms": s.limit_ms, "trials": states, "front": front_rows,
               "best": row(best, s.limit_ms) if best else None,
               "best_yaml": str(best_path) if best else None, "out": str(out)}
    write_text(out / "tune.json", json.dumps(_json_safe(summary), indent=1) + "\n")
    return summary


def check_best(s: Setup, best_yaml: Path, cycles: int, threads: int, seed: int, out: Path) -> dict:
    """best.yaml for ``cycles`` cycles on the wall-clock robot at the study's rate: what
    lockstep trials cannot show (the simulation thread shares the cores, late plans have
    real consequences)."""
    from .control import control_config, run_episodes

    log.info("checking %s: %d cycles in wall-clock mode at %g Hz", best_yaml, cycles, s.rate_hz)
    r = run_episodes(s.model, s.task, control_config(best_yaml, [], None), rate_hz=s.rate_hz, realtime=True,
                     cycles=cycles, threads=threads, seed=seed, out=out, stretch_episode=True)
    return {key: r[key] for key in ("cycles", "misses", "plan_ms_p50", "plan_ms_p99", "jitter_ms_p99",
                                    "return_mean")}


def _json_safe(v: Any) -> Any:
    """NaN and inf as null (JSON has neither)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def print_report(summary: dict, out: Path) -> None:
    st = summary["trials"]
    servo = f" (servo {summary['servo_hz']:g} Hz)" if summary.get("servo_hz") else ""
    print(f"{summary['task']} | {summary['rate_hz']:g} Hz{servo} | study {summary['study']} | "
          f"{st['complete']} complete, "
          f"{st['pruned']} pruned, {st['failed']} failed" + (f", {st['running']} running" if st["running"] else ""))
    print(f"  period {summary['period_ms']:.1f} ms, plan budget {summary['budget_ms']:.1f} ms, accepted p99 "
          f"<= {summary['limit_ms']:.1f} ms (x {summary['safety']:g})")
    print(f"  Pareto front ({len(summary['front'])} trials, fastest first):")
    print(format_table(summary["front"]))
    b = summary["best"]
    if b:
        print(f"  best: trial {b['trial']}, return {b['return_mean']:.1f}, plan p99 {b['plan_ms_p99']:.1f} ms "
              f"-> {summary['best_yaml']}")
    else:
        print(f"  no trial fits p99 <= {summary['limit_ms']:.1f} ms: no best.yaml (widen the search towards "
              f"fewer samples/shorter horizons with --space, lower the rate, or raise --safety)")
    c = summary.get("check")
    if c:
        print(f"  wall-clock check of best.yaml: {c['misses']} misses in {c['cycles']} cycles, plan p99 "
              f"{c['plan_ms_p99']:.1f} ms (budget {summary['budget_ms']:.1f} ms)"
              + ("" if c["misses"] == 0 else "; a lower --safety leaves more room"))
    print(f"  plot {out / 'pareto.png'}, tables {out / 'front.csv'}, {out / 'trials.csv'}")


# ------------------------------------------------------------------ command
def run(args) -> int:
    try:
        import optuna
    except ImportError:
        raise ConfigError("rtmpc tune needs optuna: pip install -e '.[tune]'") from None

    from rtmpc.configs.rundir import write_text

    s = resolve(args)
    out = Path(args.out) if args.out else s.model.parent / "tune"
    out.mkdir(parents=True, exist_ok=True)
    url = args.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    servo = f"-servo{s.base.loop.servo_hz:g}hz" if s.base.loop.servo_hz else ""
    name = args.study or f"{s.task}-{args.planner}-{s.rate_hz:g}hz{servo}"
    if not getattr(args, "verbose", False):
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        for noisy in ("rtmpc.controller", "rtmpc.scripts.control"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    storage = open_storage(url)
    study = open_study(storage, name, evaluation_key(s))
    done = lambda: sum(_counted(t) for t in study.get_trials(deepcopy=False))
    log.info("study %r in %s: %d of %d trials finished; %s at %g Hz, plan budget %.1f ms, accepted p99 %.1f ms",
             name, safe_url(url), done(), args.trials, s.task, s.rate_hz, s.budget_ms, s.limit_ms)
    if not study.trials:
        study.enqueue_trial(baseline_params(s), user_attrs={"baseline": True}, skip_if_exists=True)
        log.info("trial 0 is the base config's planner (%s)", describe(s.base.planner))
    study.sampler = optuna.samplers.TPESampler(seed=args.seed + len(study.trials))
    objective = make_objective(s, args.trials, done)
    stalls = 0
    while done() < args.trials:
        before = done()
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=False)
        stalls = 0 if done() > before else stalls + 1
        if stalls >= 3:  # e.g. the storage went away: the trials cannot even be recorded as failed
            raise RuntimeError(f"{stalls} trials in a row ended without being recorded in study {name!r}")
    summary = report(study, s, out, args.safety, url)
    if summary["best"] and args.check_cycles > 0:
        summary["check"] = check_best(s, Path(summary["best_yaml"]), args.check_cycles, s.threads, args.seed,
                                      out / "check")
        write_text(out / "tune.json", json.dumps(_json_safe(summary), indent=1) + "\n")
    print_report(summary, out)
    if args.json:
        print(json.dumps(_json_safe(summary)))
    return 0 if summary["best"] else 1


