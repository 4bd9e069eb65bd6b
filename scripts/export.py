"""``rtmpc export RUN_DIR``: write RUN_DIR/model.onnx from the run's checkpoint and check it.

The check runs the ONNX file in ONNX Runtime and the checkpoint in PyTorch on random
inputs and on transitions from the run's buffer, and prints the largest difference of
the predicted means (PETS; tolerance models.export.PARITY_ATOL + PARITY_RTOL * |value|)
or of the returns, prior actions and latents (latent; models.latent_export's tolerance).
The run's config says which kind it holds.

``--precision int8`` (PETS) also writes ``model.int8.onnx`` beside it (models.quantize:
ONNX Runtime's dynamic int8 quantisation of every weight matrix; opt-in, the float32
file stays the reference) and prints how far its predictions move from the float32
file's and both files' one-step prediction error on the buffer's transitions.
``rtmpc control --model RUN/model.int8.onnx`` then plans over it.
"""

from __future__ import annotations

import json
from pathlib import Path

from .flags import count

# what the parity number measures, per model kind (printed)
PARITY_WHAT = {"pets": "mean", "latent": "returns, prior actions, latents"}


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
    from rtmpc.models.buffer import ReplayBuffer
    from rtmpc.models.runtime import load_model

    from .runconfig import load_run_config

    if precision not in ("fp32", "int8"):
        raise ConfigError(f"precision {precision!r} is not one of fp32, int8")
    if samples < 1:
        raise ConfigError(f"samples = {samples} must be >= 1")
    given = run_dir
    run_dir = RunDir(run_dir)
    if not run_dir.config.exists():
        raise ConfigError(f"{given} is not a run directory (no config.yaml): pass the --out of rtmpc train")
    cfg = load_run_config(run_dir.config)
    if precision == "int8" and cfg.kind != "pets":
        raise ConfigError(f"--precision int8 is for PETS runs; {given} holds a {cfg.kind} model")
    from rtmpc import sim
    env = sim.make(cfg.task, seed=cfg.seed)
    spec = env.spec
    env.close()
    out = Path(out) if out else run_dir.model
    extra = {"task": spec.name, "control_period": repr(spec.control_period), "action_repeat": str(spec.action_repeat)}
    buffer = ReplayBuffer.load(run_dir.buffer)
    pick = np.random.default_rng(0).choice(len(buffer), size=min(samples, len(buffer)), replace=False)
    if cfg.kind == "latent":
        from rtmpc.models.latent import latent_discount, load_latent
        from rtmpc.models.latent_export import PARITY_ATOL, PARITY_RTOL, check_latent_parity, export_latent

        ckpt = run_dir.checkpoints / "latent.pt"
        model = load_latent(ckpt)
        gamma = latent_discount(ckpt)
        export_latent(model, out, gamma=gamma, extra_metadata=extra)
        err = check_latent_parity(model, out, buffer.obs[np.sort(pick)], gamma=gamma)
    else:
        from rtmpc.models.ensemble import load_ensemble
        from rtmpc.models.export import PARITY_ATOL, PARITY_RTOL, check_parity, export_onnx

        model = load_ensemble(run_dir.checkpoints / "ensemble.pt")
        export_onnx(model, out, action_low=spec.action_low, action_high=spec.action_high, gamma=cfg.pets.gamma,
                    extra_metadata=extra)
        err = check_parity(model, out, (buffer.obs[pick], buffer.act[pick]))
    loaded = load_model(out)  # the runtime reads it back: dims and metadata are sound
    result = {"model": str(out), "kind": cfg.kind, "parity_max_abs": err, "tolerance_abs": PARITY_ATOL,
              "tolerance_rel": PARITY_RTOL, "checked_real": int(len(pick)), "obs_dim": loaded.dims.obs_dim,
              "act_dim": loaded.dims.act_dim}
    if precision == "int8":
        from rtmpc.models.quantize import compare_predictions, quantize_int8

        q = quantize_int8(out)
        load_model(q)
        rows = np.sort(pick)
        result["int8"] = {"model": str(q), **compare_predictions(out, q, buffer.obs[rows], buffer.act[rows],
                                                                 buffer.next_obs[rows], buffer.reward[rows])}
    return result


def print_export(result: dict) -> None:
    """The export's result as a person reads it."""
    what = PARITY_WHAT.get(result["kind"], "output")
    print(f"exported {result['model']}: ONNX Runtime vs PyTorch max |{what} difference| {result['parity_max_abs']:.2e} "
          f"(tolerance {result['tolerance_abs']:g} + {result['tolerance_rel']:g}*|value|) on random inputs and "
          f"{result['checked_real']} buffer transitions")
    if "int8" in result:
        c = result["int8"]
        print(f"int8 copy {c['model']}: predicted changes differ from float32 by {100 * c['mean_rel_diff']:.2f}% "
              f"of their spread on average (max {100 * c['max_rel_diff']:.1f}%); one-step next-state MSE "
              f"{c['mse_fp32']:.3g} (fp32) vs {c['mse_int8']:.3g} (int8) on {c['rows']} buffer transitions")
