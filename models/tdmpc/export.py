"""Export a latent world model to one ONNX file, metadata inside, and check parity.

The file holds encoder, latent dynamics, reward, Q ensemble and policy prior as one graph,
:class:`models.tdmpc.model.LatentGraph`, scripted (``torch.jit.script``) so that its two loops
over the horizon become ONNX ``Loop`` ops and H stays a free dimension::

    obs [1, O], actions [K, H, A], pi_eps [K, A], q_idx [2] int64, prior_eps [n, H', A]
      -> returns [K], prior_actions [n, H', A], z0 [1, Z]

One ONNX Runtime call scores all K candidates over the whole horizon (terminal Q
included) or samples all n prior trajectories; ONNX Runtime runs every node of a graph
whatever outputs are asked for, so the runtime passes K = 0 or n = 0 for the part it
does not need. Mish is exported in exp form (:class:`models.tdmpc.model.MishExp`): ONNX
Runtime's Softplus costs about 20x its Exp on CPU.

Metadata (``metadata_props``, strings, JSON where structured): ``kind`` ("latent"),
``format`` (1), ``rtmpc_version``, ``obs_dim``, ``act_dim``, ``latent_dim``,
``action_low``, ``action_high``, ``gamma``, ``num_q``, ``num_bins``, ``vmin``, ``vmax``,
``episodic``, ``hidden``, ``enc_hidden``, ``enc_layers``, ``latent_norm``,
``simnorm_dim``, ``activation``, ``exporter``, plus the caller's (task, control_period,
action_repeat).

Parity tolerance: :data:`PARITY_ATOL` = :data:`PARITY_RTOL` = 1e-4, element-wise
``|ort - torch| <= atol + rtol * |torch|`` on returns and z0, the torch side being the
model as trained (torch's own Mish). Prior actions get :data:`PRIOR_ATOL` = 1e-3 of the
action half-range: each chains the policy through the latent dynamics for H steps, so
float32 rounding differences between ONNX Runtime's kernels and torch's compound (a
cartpole run at 27,000 steps measured 1.3e-4 on a [-1, 1] action); 1e-3 of the range is
far below the planner's sampling noise.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from rtmpc.models.base import ModelError
from rtmpc.models.common.fileio import OPSET, PARITY_ATOL, PARITY_RTOL, rtmpc_version, save_onnx
from rtmpc.models.tdmpc.model import LatentWorldModel, Mish, MishExp, make_graph
from torch import nn

log = logging.getLogger(__name__)

__all__ = ["export_latent", "check_latent_parity", "PARITY_ATOL", "PARITY_RTOL", "PRIOR_ATOL", "MODEL_FORMAT",
           "INPUTS", "OUTPUTS"]

PRIOR_ATOL = 1e-3  # of the action half-range (see the module docstring)
MODEL_FORMAT = 1
INPUTS = ("obs", "actions", "pi_eps", "q_idx", "prior_eps")
OUTPUTS = ("returns", "prior_actions", "z0")


def _for_export(model: LatentWorldModel) -> LatentWorldModel:
    """A copy of ``model`` in eval mode with every Mish in exp form."""
    m = copy.deepcopy(model).eval()

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, Mish):
                setattr(module, name, MishExp())
            else:
                swap(child)

    swap(m)
    return m


def _example(model: LatentWorldModel) -> tuple[torch.Tensor, ...]:
    a = model.act_dim
    return (torch.zeros(1, model.obs_dim), torch.zeros(5, 3, a), torch.zeros(5, a),
            torch.tensor([0, 1], dtype=torch.int64), torch.zeros(0, 3, a))


def export_latent(model: LatentWorldModel, path: str | os.PathLike, *, gamma: float, opset: int = OPSET,
                  extra_metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` (discount ``gamma`` per agent step) to ``path`` atomically."""
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma = {gamma} must be in (0, 1]")
    if opset < 17:
        raise ValueError(f"opset = {opset}: rtmpc exports with opset 17 or newer")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated in favour of torch.export (see docs/latent.md)
        graph = torch.jit.script(make_graph(_for_export(model), gamma).eval())
    axes = {"actions": {0: "K", 1: "H"}, "pi_eps": {0: "K"}, "prior_eps": {0: "n", 1: "Hp"},
            "returns": {0: "K"}, "prior_actions": {0: "n", 1: "Hp"}}
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "model.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, _example(model), raw, dynamo=False, opset_version=opset,
                              input_names=list(INPUTS), output_names=list(OUTPUTS), dynamic_axes=axes,
                              do_constant_folding=True)
        proto = onnx.load(raw)

    cfg = model.cfg
    low = (model.act_mid - model.act_half).tolist()
    high = (model.act_mid + model.act_half).tolist()
    meta = {
        "kind": "latent",
        "format": str(MODEL_FORMAT),
        "rtmpc_version": rtmpc_version(),
        "obs_dim": str(model.obs_dim),
        "act_dim": str(model.act_dim),
        "latent_dim": str(cfg.latent_dim),
        "action_low": json.dumps(low),
        "action_high": json.dumps(high),
        "gamma": repr(float(gamma)),
        "num_q": str(cfg.num_q),
        "num_bins": str(cfg.num_bins),
        "vmin": repr(cfg.vmin),
        "vmax": repr(cfg.vmax),
        "episodic": json.dumps(bool(cfg.episodic)),
        "hidden": str(cfg.hidden),
        "enc_hidden": str(cfg.enc_hidden),
        "enc_layers": str(cfg.enc_layers),
        "latent_norm": cfg.latent_norm,
        "simnorm_dim": str(cfg.simnorm_dim),
        "activation": "mish",
        "exporter": "torchscript-scripted",
    }
    meta.update(extra_metadata or {})
    return save_onnx(proto, path, meta, f"rtmpc TD-MPC latent model: obs {model.obs_dim}, act {model.act_dim}, "
                     f"latent {cfg.latent_dim}, {cfg.num_q} Q heads")


def check_latent_parity(model: LatentWorldModel, path: str | os.PathLike, obs: np.ndarray | None = None, *,
                        gamma: float, n_random: int = 8, samples: int = 64, horizon: int = 3, prior: int = 4,
                        rng: np.random.Generator | int | None = 0, atol: float = PARITY_ATOL,
                        rtol: float = PARITY_RTOL, prior_atol: float = PRIOR_ATOL, strict: bool = True) -> float:
    """Max abs difference ONNX Runtime vs PyTorch over returns, prior actions and z0.

    For each of ``n_random`` standard-normal observations and of the real ``obs`` (n, O)
    when given: ``samples`` action sequences of ``horizon`` steps uniform in the bounds,
    ``prior`` prior trajectories, random noise and a random pair of Q heads, through the
    file and through the model (eval mode, torch's Mish). Raises ModelError naming the
    output when any element differs by more than ``atol + rtol * |torch|`` (prior
    actions: ``prior_atol * act_half``); ``strict=False`` logs that as a warning instead
    (training: one export's rounding must not end a run; the value returned and written
    to metrics.csv says how far off it was).
    """
    import onnxruntime as ort

    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    o, a = model.obs_dim, model.act_dim
    rows = [("random", x) for x in rng.standard_normal((n_random, o)).astype(np.float32)]
    if obs is not None:
        rows += [("real", x) for x in np.asarray(obs, np.float32).reshape(-1, o)]
    low = (model.act_mid - model.act_half).numpy()
    high = (model.act_mid + model.act_half).numpy()
    half = model.act_half.numpy().astype(np.float64)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    reference = make_graph(model, gamma).eval()
    was_training = model.training
    model.eval()
    worst = 0.0
    try:
        for label, x in rows:
            base = {"obs": x[None], "q_idx": rng.permutation(model.cfg.num_q)[:2].astype(np.int64)}
            score = {**base, "actions": rng.uniform(low, high, (samples, horizon, a)).astype(np.float32),
                     "pi_eps": rng.standard_normal((samples, a)).astype(np.float32),
                     "prior_eps": np.zeros((0, 1, a), np.float32)}
            sample = {**base, "actions": np.zeros((0, 1, a), np.float32), "pi_eps": np.zeros((0, a), np.float32),
                      "prior_eps": rng.standard_normal((prior, horizon, a)).astype(np.float32)}
            for feeds, names in ((score, ("returns", "z0")), (sample, ("prior_actions",))):
                got = dict(zip(OUTPUTS, sess.run(list(OUTPUTS), feeds), strict=True))
                with torch.no_grad():
                    ref = dict(zip(OUTPUTS, (t.numpy() for t in reference(*(torch.from_numpy(feeds[k])
                                                                                for k in INPUTS))), strict=True))
                for name in names:
                    g, r = got[name], ref[name]
                    if g.shape != r.shape:
                        raise ModelError(f"ONNX/PyTorch parity failed: {name} has shape {g.shape} in ONNX "
                                         f"Runtime, {r.shape} in PyTorch")
                    err = np.abs(g.astype(np.float64) - r)
                    worst = max(worst, float(err.max(initial=0.0)))
                    bound = prior_atol * half if name == "prior_actions" else atol + rtol * np.abs(r)
                    if np.any(~(err <= bound)):
                        what = (f"{prior_atol:g} * action half-range" if name == "prior_actions"
                                else f"{atol:g} + {rtol:g} * |value|")
                        message = (f"ONNX/PyTorch parity failed on {label} inputs: {name} differs by up to "
                                   f"{float(err.max()):.3g} (tolerance {what})")
                        if strict:
                            raise ModelError(message)
                        log.warning("%s; the run goes on with this export", message)
    finally:
        model.train(was_training)
    return worst
