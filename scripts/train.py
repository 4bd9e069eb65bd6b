"""``rtmpc train CONFIG``: train a model in simulation, export it, write the run directory."""

from __future__ import annotations

import logging
from pathlib import Path

from rtmpc.configs import ConfigError, to_dict
from rtmpc.configs.rundir import RunDir, write_yaml
from rtmpc.models import registry

from .flags import count
from .runconfig import RunConfig, add_config_arguments, load_run_config, print_config

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    add_config_arguments(p)
    p.add_argument("--out", help="run directory (default runs/<config name>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last episode")
    p.add_argument("--overwrite", action="store_true", help="start over in an --out that holds a run (its "
                                                            "files are replaced)")
    p.add_argument("--steps", type=count(1, 10**9),
                   help="environment steps (action repeat counted): what the model family's STEPS_KEY sets "
                        "(pets: a cap, pets.max_env_steps; latent: the run's length, latent.loop.total_steps)")


def resolve_run(config, *, out=None, overrides=(), seed: int | None = None, resume: bool = False,
                steps: int | None = None, overwrite: bool = False) -> tuple[RunConfig, RunDir]:
    """The run's resolved config and directory (see :func:`train_run`)."""
    cfg = load_run_config(config, overrides, seed)
    if steps is not None:  # the family says what --steps sets (a cap on env steps, or the run's length)
        extra: dict = {}
        node = extra
        *path, last = registry.family(cfg.kind).STEPS_KEY
        for key in path:
            node = node.setdefault(key, {})
        node[last] = steps
        cfg = load_run_config(config, overrides, seed, extra)
    out = Path(out) if out else Path("runs") / f"{Path(config).stem}-s{cfg.seed}"
    run = RunDir(out)
    if resume and (run.root / "state.yaml").exists() and not (run.root / "manifest.json").exists():
        raise ConfigError(f"{out} was written by rtmpc 0.2 (state.yaml, no manifest.json), which this version "
                          f"cannot resume: rtmpc export still reads it; to train again, --overwrite or another --out")
    if run.config.exists():
        import yaml

        saved = yaml.safe_load(run.config.read_text())
        if resume and saved != to_dict(cfg):
            raise ConfigError(f"{run.config} differs from the config given ({_differences(saved, to_dict(cfg))}): "
                              f"resume with the same config and --set values, or start a new run with another "
                              f"--out")
        if not resume and not overwrite:
            raise ConfigError(f"{out} already holds a run: --resume to continue it, --overwrite to start over "
                              f"there, or another --out")
        if overwrite and not resume:
            log.warning("overwriting the run in %s", out)
    elif resume:
        log.info("nothing to resume in %s: starting a new run", out)
    return cfg, run


def run(args) -> int:
    train_run(args.config, out=args.out, overrides=args.overrides, seed=args.seed, resume=args.resume,
              steps=args.steps, overwrite=args.overwrite)
    return 0


def train_run(config: str | Path, *, out: str | Path | None = None, overrides=(), seed: int | None = None,
              resume: bool = False, steps: int | None = None, overwrite: bool = False) -> list[dict]:
    """Train the model ``config`` describes (a YAML path or a shipped config's name) into ``out``
    (default runs/<config name>-s<seed>) and return the metrics rows.

    overrides: ``key.path=value`` strings; seed: the run's seed (default the config's);
    resume: continue the run in ``out``; overwrite: start over in an ``out`` that holds a run
    (refused otherwise); steps: environment steps (a cap for pets, the run's length for
    latent). The run directory is locked while it trains: a second writer is refused."""
    from rtmpc.models.runtime import load_model  # noqa: F401  (fail early if the runtime cannot load)
    from rtmpc.planners import make_planner

    from rtmpc import sim

    cfg, run_dir = resolve_run(config, out=out, overrides=overrides, seed=seed, resume=resume, steps=steps,
                               overwrite=overwrite)
    print_config(cfg, f"rtmpc train ({cfg.kind}) -> {run_dir.root}")
    make_env = lambda: sim.make(cfg.task, seed=cfg.seed)  # noqa: E731
    with run_dir.lock():  # one writer at a time; the kernel releases it if this process dies
        write_yaml(run_dir.config, to_dict(cfg))
        rows = registry.family(cfg.kind).train_model(
            run_dir, cfg, make_env=make_env, resume=resume,
            make_planner=lambda model, rng: make_planner(cfg.planner, model, rng=rng))
    if rows:
        last = rows[-1]
        best = max(float(r["eval_return"]) for r in rows)
        model = f"; model {run_dir.model}" if run_dir.model.is_file() else "; no model file (nothing to export)"
        print(f"trained {run_dir.root}: {last['env_steps']} env steps, last return {float(last['eval_return']):.1f}, "
              f"best {best:.1f}{model}")
    return rows


def _differences(saved, given, limit: int = 4) -> str:
    """'key.path saved -> given' for the first ``limit`` differing leaves, and how many more."""
    def leaves(d, prefix=""):
        if isinstance(d, dict):
            for k, v in d.items():
                yield from leaves(v, f"{prefix}{k}.")
        else:
            yield prefix[:-1], d

    a, b = dict(leaves(saved)), dict(leaves(given))
    keys = sorted((k for k in set(a) | set(b) if a.get(k, object()) != b.get(k, object())),
                  key=lambda k: (k not in a or k not in b, k))  # changed values before added or removed keys
    diff = [f"{k} {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in keys]
    more = f", {len(diff) - limit} more" if len(diff) > limit else ""
    return "; ".join(diff[:limit]) + more
