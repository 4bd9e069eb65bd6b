"""``rtmpc export RUN_DIR``: write RUN_DIR/model.onnx from the run's checkpoint and check it.

The check runs the ONNX file in ONNX Runtime and the checkpoint in PyTorch on random
inputs and on transitions from the run's buffer, and prints the largest difference of
the predicted means (PETS; tolerance models.export.PARITY_ATOL + PARITY_RTOL * |value|)
or of the returns, prior actions and latents (latent; models.latent_export's tolerance).
The run's config says which kind it holds.
"""

from __future__ import annotations

import json
from pathlib import Path


def add_arguments(p) -> None:
    p.add_argument("run_dir", help="a run directory made by rtmpc train")
    p.add_argument("--out", help="where to write the ONNX file (default RUN_DIR/model.onnx)")
    p.add_argument("--samples", type=int, default=1024, help="buffer transitions used in the parity check")
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
    if args.json:
        print(json.dumps(result))
    else:
        print(f"exported {out}: ONNX Runtime vs PyTorch max |{what} difference| {err:.2e} "
              f"(tolerance {PARITY_ATOL:g} + {PARITY_RTOL:g}*|value|) on random inputs and {len(pick)} buffer "
              f"transitions")
    return 0
