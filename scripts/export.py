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


def add_arguments(p) -> None:
    p.add_argument("run_dir", help="a run directory made by rtmpc train")
    p.add_argument("--out", help="where to write the ONNX file (default RUN_DIR/model.onnx)")
    p.add_argument("--samples", type=int, default=1024, help="buffer transitions used in the parity check")
    p.add_argument("--precision", default="fp32", choices=("fp32", "int8"),
                   help="int8: also write MODEL.int8.onnx (PETS; dynamic int8 weights, opt-in) and report its error")
    p.add_argument("--json", action="store_true", help="print one JSON line")


def run(args) -> int:
    import numpy as np

    from configs import ConfigError
    from configs.rundir import RunDir
    from models.buffer import ReplayBuffer
    from models.runtime import load_model

    from .runconfig import load_run_config

    run_dir = RunDir(args.run_dir)
    if not run_dir.config.exists():
        raise ConfigError(f"{args.run_dir} is not a run directory (no config.yaml): pass the --out of rtmpc train")
    cfg = load_run_config(run_dir.config)
    if args.precision == "int8" and cfg.kind != "pets":
        raise ConfigError(f"--precision int8 is for PETS runs; {args.run_dir} holds a {cfg.kind} model")
    import sim

    env = sim.make(cfg.task, seed=cfg.seed)
    spec = env.spec
    env.close()
    out = Path(args.out) if args.out else run_dir.model
    extra = {"task": spec.name, "control_period": repr(spec.control_period), "action_repeat": str(spec.action_repeat)}
    buffer = ReplayBuffer.load(run_dir.buffer)
    pick = np.random.default_rng(0).choice(len(buffer), size=min(args.samples, len(buffer)), replace=False)
    if cfg.kind == "latent":
        from models.latent import latent_discount, load_latent
        from models.latent_export import PARITY_ATOL, PARITY_RTOL, check_latent_parity, export_latent

        ckpt = run_dir.checkpoints / "latent.pt"
        model = load_latent(ckpt)
        gamma = latent_discount(ckpt)
        export_latent(model, out, gamma=gamma, extra_metadata=extra)
        err = check_latent_parity(model, out, buffer.obs[np.sort(pick)], gamma=gamma)
        what = "returns, prior actions, latents"
    else:
        from models.ensemble import load_ensemble
        from models.export import PARITY_ATOL, PARITY_RTOL, check_parity, export_onnx

        model = load_ensemble(run_dir.checkpoints / "ensemble.pt")
        export_onnx(model, out, action_low=spec.action_low, action_high=spec.action_high, gamma=cfg.pets.gamma,
                    extra_metadata=extra)
        err = check_parity(model, out, (buffer.obs[pick], buffer.act[pick]))
        what = "mean"
    loaded = load_model(out)  # the runtime reads it back: dims and metadata are sound
    result = {"model": str(out), "kind": cfg.kind, "parity_max_abs": err, "tolerance_abs": PARITY_ATOL,
              "tolerance_rel": PARITY_RTOL, "checked_real": int(len(pick)), "obs_dim": loaded.dims.obs_dim,
              "act_dim": loaded.dims.act_dim}
    if args.precision == "int8":
        from models.quantize import compare_predictions, quantize_int8

        q = quantize_int8(out)
        load_model(q)
        rows = np.sort(pick)
        result["int8"] = {"model": str(q), **compare_predictions(out, q, buffer.obs[rows], buffer.act[rows],
                                                                 buffer.next_obs[rows], buffer.reward[rows])}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"exported {out}: ONNX Runtime vs PyTorch max |{what} difference| {err:.2e} "
              f"(tolerance {PARITY_ATOL:g} + {PARITY_RTOL:g}*|value|) on random inputs and {len(pick)} buffer "
              f"transitions")
        if "int8" in result:
            c = result["int8"]
            print(f"int8 copy {c['model']}: predicted changes differ from float32 by {100 * c['mean_rel_diff']:.2f}% "
                  f"of their spread on average (max {100 * c['max_rel_diff']:.1f}%); one-step next-state MSE "
                  f"{c['mse_fp32']:.3g} (fp32) vs {c['mse_int8']:.3g} (int8) on {c['rows']} buffer transitions")
    return 0
