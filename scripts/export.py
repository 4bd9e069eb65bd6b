"""``rtmpc export RUN_DIR``: write RUN_DIR/model.onnx from the run's checkpoint and check it.

The run's model family (its config's ``kind``, looked up in rtmpc.models.registry)
exports and checks: the ONNX file in ONNX Runtime against the checkpoint in PyTorch on
random inputs and on transitions from the run's buffer, within
models.common.fileio.PARITY_ATOL + PARITY_RTOL * |value| (PETS: the predicted means;
latent: the returns, prior actions and latents).

``--precision int8`` (PETS) also writes ``model.int8.onnx`` beside it (models.common.quantize:
ONNX Runtime's dynamic int8 quantisation of every weight matrix; opt-in, the float32
file stays the reference) and prints how far its predictions move from the float32
file's and both files' one-step prediction error on the buffer's transitions.
``rtmpc control --model RUN/model.int8.onnx`` then plans over it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .flags import count


def add_arguments(p) -> None:
    p.add_argument("run_dir", help="a run directory made by rtmpc train")
    p.add_argument("--out", help="where to write the ONNX file (default RUN_DIR/model.onnx)")
    p.add_argument("--samples", type=count(1, 10**7), default=1024, help="buffer transitions used in the parity check")
    p.add_argument("--precision", default="fp32", choices=("fp32", "int8"),
                   help="int8: also write MODEL.int8.onnx (PETS; dynamic int8 weights, opt-in) and report its error")
    p.add_argument("--json", action="store_true", help="print one JSON line")


def run(args) -> int:
    result = export_run(args.run_dir, out=args.out, precision=args.precision, samples=args.samples)
    if args.json:
        print(json.dumps(result))
    else:
        print_export(result)
    return 0


def export_run(run_dir: str | Path, *, out: str | Path | None = None, precision: str = "fp32",
               samples: int = 1024) -> dict:
    """Export ``run_dir``'s model to ``out`` (default RUN_DIR/model.onnx), check it against
    PyTorch on random inputs and ``samples`` buffer transitions, and return the result
    (model, kind, parity_max_abs, tolerances, checked_real, obs_dim, act_dim; ``int8`` with
    ``precision="int8"``). Raises ConfigError, ModelError or FileNotFoundError for a user's mistake."""
    import numpy as np
    from rtmpc.configs import ConfigError
    from rtmpc.configs.rundir import RunDir
    from rtmpc.models import registry
    from rtmpc.models.base import ModelError
    from rtmpc.models.common.buffer import ReplayBuffer
    from rtmpc.models.common.commit import committed_file
    from rtmpc.models.runtime import load_model

    from .runconfig import load_run_config

    if samples < 1:
        raise ConfigError(f"samples = {samples} must be >= 1")
    given = run_dir
    run_dir = RunDir(run_dir)
    if not run_dir.config.exists():
        raise ConfigError(f"{given} is not a run directory (no config.yaml): pass the --out of rtmpc train")
    cfg = load_run_config(run_dir.config)
    family = registry.family(cfg.kind)
    if precision not in family.PRECISIONS:
        raise ConfigError(f"--precision {precision} is not offered for {cfg.kind} models (only "
                          f"{', '.join(family.PRECISIONS)}); {given} holds a {cfg.kind} model")
    from rtmpc import sim

    env = sim.make(cfg.task, seed=cfg.seed)
    spec = env.spec
    env.close()
    out = Path(out) if out else run_dir.model
    metadata = spec.model_metadata()  # what a robot computer needs without the simulator
    try:
        buffer = ReplayBuffer.load(committed_file(run_dir, "buffer", "buffer.npz"))
        rows = np.sort(np.random.default_rng(0).choice(len(buffer), size=min(samples, len(buffer)), replace=False))
    except ModelError:  # a family whose run keeps its data inside its checkpoint (deep Dyna-Q)
        buffer, rows = None, np.zeros(0, np.int64)
    # Written into a folder beside ``out`` and moved over it only once parity passed and the
    # runtime read it back: a failed export leaves the previous model (and its copies) in place.
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        checked = family.export_model(run_dir, cfg, out=staged, spec=spec, buffer=buffer, rows=rows,
                                      metadata=metadata, precision=precision)
        loaded = load_model(staged)  # the runtime reads it back: dims and metadata are sound
        checked = json.loads(json.dumps(checked).replace(str(staged.parent), str(out.parent)))
        for path in sorted(Path(tmp).iterdir(), key=lambda p: p == staged):  # the main file last
            os.replace(path, out.parent / path.name)
    return {"model": str(out), "kind": cfg.kind, **checked, "checked_real": int(len(rows)),
            "obs_dim": loaded.dims.obs_dim, "act_dim": loaded.dims.act_dim}


def print_export(result: dict) -> None:
    """The export's result as a person reads it."""
    what = result["what"]
    print(f"exported {result['model']}: ONNX Runtime vs PyTorch max |{what} difference| {result['parity_max_abs']:.2e} "
          f"(tolerance {result['tolerance_abs']:g} + {result['tolerance_rel']:g}*|value|) on random inputs and "
          f"{result['checked_real']} buffer transitions")
    if "int8" in result:
        c = result["int8"]
        print(f"int8 copy {c['model']}: predicted changes differ from float32 by {100 * c['mean_rel_diff']:.2f}% "
              f"of their spread on average (max {100 * c['max_rel_diff']:.1f}%); one-step next-state MSE "
              f"{c['mse_fp32']:.3g} (fp32) vs {c['mse_int8']:.3g} (int8) on {c['rows']} buffer transitions")
