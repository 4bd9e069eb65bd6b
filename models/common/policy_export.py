"""Export a torch actor as an rtmpc policy file (:mod:`.policy`) and check it against PyTorch.

The module's ``forward(obs (B, O), eps (B, A), *state) -> (action (B, A), *state)`` is the
whole actor: squashing, scaling to the bounds, argmax, all inside. Exported with the
TorchScript exporter at :data:`~.fileio.OPSET`, batch axis dynamic; checked on random
observations and noise (and ``obs`` rows given) within the shared parity tolerance.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from rtmpc.models.base import ModelError

from .fileio import OPSET, PARITY_ATOL, PARITY_RTOL, rtmpc_version, save_onnx
from .policy import POLICY_FORMAT, load_policy

__all__ = ["export_policy", "check_policy_parity"]


def export_policy(module: torch.nn.Module, path: str | os.PathLike, *, kind: str, obs_dim: int, act_dim: int,
                  action_low, action_high, n_actions: int = 0, state_shapes=(),
                  extra_metadata: dict[str, str] | None = None) -> Path:
    """Write ``module`` as a policy file at ``path`` (atomically). kind: the family's name;
    state_shapes: the recurrent state's shapes without the batch axis (``()`` feed-forward)."""
    low = np.asarray(action_low, np.float64).reshape(-1)
    high = np.asarray(action_high, np.float64).reshape(-1)
    if low.shape != (act_dim,) or high.shape != (act_dim,) or not np.all(low <= high):
        raise ValueError(f"action bounds must be two ({act_dim},) arrays with low <= high, got {low} and {high}")
    shapes = [list(map(int, s)) for s in state_shapes]
    names = [f"state{i}" for i in range(len(shapes))]
    example = (torch.zeros(2, obs_dim), torch.zeros(2, act_dim), *(torch.zeros(2, *s) for s in shapes))
    inputs, outputs = ["obs", "eps", *names], ["action", *(f"{n}_out" for n in names)]
    axes = {n: {0: "B"} for n in inputs + outputs}
    was_training = module.training
    module.eval()
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = os.path.join(tmp, "policy.onnx")
            torch.onnx.export(module, example, raw, dynamo=False, opset_version=OPSET, input_names=inputs,
                              output_names=outputs, dynamic_axes=axes, do_constant_folding=True)
            proto = onnx.load(raw)
    finally:
        module.train(was_training)
    meta = {"role": "policy", "kind": kind, "format": str(POLICY_FORMAT), "rtmpc_version": rtmpc_version(),
            "obs_dim": str(obs_dim), "act_dim": str(act_dim), "action_low": json.dumps(low.tolist()),
            "action_high": json.dumps(high.tolist()), "n_actions": str(int(n_actions)),
            "state_shapes": json.dumps(shapes)}
    meta.update(extra_metadata or {})
    return save_onnx(proto, path, meta, f"rtmpc {kind} policy: obs {obs_dim}, act {act_dim}")


def check_policy_parity(module: torch.nn.Module, path: str | os.PathLike, obs: np.ndarray | None = None, *,
                        n_random: int = 64, rng: np.random.Generator | int | None = 0) -> float:
    """max |action_onnx - action_torch| (and of the states) over random observations, noise and
    states plus the rows of ``obs`` (N, O), both deterministic (zero noise) and sampled; a
    ModelError past PARITY_ATOL + PARITY_RTOL * |torch| (the ONNX file is left in place)."""
    policy = load_policy(path)
    g = np.random.default_rng(rng)
    o, a = policy.dims.obs_dim, policy.dims.act_dim
    rows = [g.standard_normal(o) for _ in range(n_random)] + ([] if obs is None else list(np.asarray(obs)))
    worst = 0.0
    module.eval()
    for i, x in enumerate(rows):
        deterministic = i % 2 == 0
        eps = np.zeros(a, np.float32) if deterministic else g.standard_normal(a).astype(np.float32)
        state = tuple(g.standard_normal((1, *s)).astype(np.float32) for s in policy.state_shapes)
        feed = {"obs": np.asarray(x, np.float32)[None], "eps": eps[None],
                **{f"state{j}": s for j, s in enumerate(state)}}
        got = policy.session.run(policy.output_names, feed)
        with torch.no_grad():
            want = module(*(torch.from_numpy(v) for v in feed.values()))
        want = want if isinstance(want, (tuple, list)) else (want,)
        for g_out, w_out in zip(got, want):
            w = w_out.numpy()
            err = np.abs(g_out - w)
            if np.any(err > PARITY_ATOL + PARITY_RTOL * np.abs(w)):
                raise ModelError(f"policy file {path} differs from PyTorch by {float(err.max()):.3g} (tolerance "
                                 f"{PARITY_ATOL:g} + {PARITY_RTOL:g}*|value|): do not deploy it")
            worst = max(worst, float(err.max()))
    return worst
