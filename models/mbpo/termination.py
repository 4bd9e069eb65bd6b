"""MBPO's learned termination head ``P(done | s, a, s')``, for tasks whose episodes end (a fall).

MBPO (Janner et al. 2019) stops a model rollout where the task's termination function says
the state is terminal; those functions are hand-written per Gym task (its ``static/``
folder). rtmpc learns one instead (``mbpo.termination: learned``): an MLP classifier on the
real transitions, refitted whenever the ensemble is, exported to ``RUN/termination.onnx`` and
run in ONNX Runtime beside the ensemble in the rollouts (:class:`.rollout.TerminationStep`).
A model transition whose probability exceeds ``threshold`` is stored with ``done = 1`` and its
rollout stops there; SAC's target then bootstraps nothing past it. The head sees the state
reached as well as ``(s, a)`` (the seed's ``P(done | s, a)``): Gym's locomotion tasks end on a
test of the state reached (Hopper: height and angle), and the model rollouts have it.

Terminal transitions are rare (one per episode at most), so every Adam step draws half its
rows from them while any exist (balanced sampling). Every fifth real row (by index) is held
out: the fit reports the head's recall on held-out terminal rows and its false-positive rate
on held-out others. Until ``min_terminal`` real terminations are in the training rows nothing
is fitted and rollouts never end.

Shapes: N rows, O observation size, A action size. The file: ``obs [N, O], act [N, A],
next_obs [N, O] -> logit [N]``, the inputs the head does not read left out of the graph by the
exporter (metadata ``role = "termination"``, ``kind = "mbpo"``, ``inputs``).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from rtmpc.models.base import ModelError
from rtmpc.models.common.fileio import OPSET, PARITY_ATOL, PARITY_RTOL, rtmpc_version, save_onnx
from torch import nn
from torch.nn import functional as F

from .config import TerminationConfig
from .rollout import termination_feeds

__all__ = ["TerminationHead", "fit_termination", "export_termination", "HELD_OUT_EVERY"]

HELD_OUT_EVERY = 5  # every fifth real row is held out for the recall / false-positive numbers


class TerminationHead(nn.Module):
    """``forward(obs (N, O), act (N, A), next_obs (N, O)) -> logit (N,)`` of P(done | s') (``cfg.inputs
    = "next"``) or P(done | s, a, s') (``"all"``); its features standardised by the real buffer's
    mean and std at the last fit (buffers, so they travel with the weights)."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: TerminationConfig, seed: int = 0):
        super().__init__()
        layers: list[nn.Module] = []
        self.next_only = cfg.inputs == "next"
        n_in = n = obs_dim if self.next_only else 2 * obs_dim + act_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 7)
            for h in cfg.hidden:
                layers += [nn.Linear(n, h), nn.SiLU()]
                n = h
            layers.append(nn.Linear(n, 1))
            self.net = nn.Sequential(*layers)
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("std", torch.ones(n_in))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))  # any termination seen yet

    def features(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return next_obs if self.next_only else torch.cat([obs, act, next_obs], dim=-1)

    def forward(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return self.net((self.features(obs, act, next_obs) - self.mean) / self.std).squeeze(-1)


def fit_termination(head: TerminationHead, opt: torch.optim.Optimizer, obs: np.ndarray, act: np.ndarray,
                    next_obs: np.ndarray, done: np.ndarray, cfg: TerminationConfig, rng: np.random.Generator
                    ) -> dict[str, float]:
    """``cfg.updates`` Adam steps on the real rows (balanced); the held-out recall and false-positive
    rate at ``cfg.threshold``. Fewer than ``cfg.min_terminal`` terminal training rows: nothing is fitted."""
    done = np.asarray(done, bool)
    n = len(done)
    held = np.arange(n) % HELD_OUT_EVERY == 0
    pos, neg = np.flatnonzero(done & ~held), np.flatnonzero(~done & ~held)
    out = {"term_rows": float(done.sum())}
    if len(pos) < cfg.min_terminal or not len(neg):
        return out
    tensors = [torch.from_numpy(np.asarray(v, np.float32)) for v in (obs, act, next_obs)]
    with torch.no_grad():
        x = head.features(*tensors)
        head.mean.copy_(x.mean(0))
        head.std.copy_(x.std(0, correction=0).clamp_min(1e-6))
        head.fitted.fill_(True)
    half = cfg.batch_size // 2
    head.train()
    for _ in range(cfg.updates):
        i = torch.from_numpy(np.concatenate([rng.choice(pos, half), rng.choice(neg, cfg.batch_size - half)]))
        logit = head(*(t[i] for t in tensors))
        loss = F.binary_cross_entropy_with_logits(logit, torch.from_numpy(done[i].astype(np.float32)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    head.eval()
    with torch.no_grad():
        i = torch.from_numpy(np.flatnonzero(held))
        p = torch.sigmoid(head(*(t[i] for t in tensors))).numpy()
    cut, d = p > cfg.threshold, done[held]
    out["term_loss"] = float(loss.item())
    out["term_recall"] = float(cut[d].mean()) if d.any() else float("nan")
    out["term_fpr"] = float(cut[~d].mean()) if (~d).any() else float("nan")
    return out


def export_termination(head: TerminationHead, path: str | os.PathLike, *, check_obs: np.ndarray,
                       check_act: np.ndarray, check_next: np.ndarray,
                       extra_metadata: dict[str, str] | None = None) -> float:
    """Write ``head`` to ``path`` (atomically) and check ONNX Runtime against PyTorch on the rows
    given and as many random ones: max |logit difference|; a ModelError past the shared tolerance."""
    import onnxruntime as ort

    o, a = check_obs.shape[1], check_act.shape[1]
    head.eval()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = os.path.join(tmp, "termination.onnx")
        torch.onnx.export(head, (torch.zeros(2, o), torch.zeros(2, a), torch.zeros(2, o)), raw, dynamo=False,
                          opset_version=OPSET, input_names=["obs", "act", "next_obs"], output_names=["logit"],
                          dynamic_axes={"obs": {0: "N"}, "act": {0: "N"}, "next_obs": {0: "N"}, "logit": {0: "N"}},
                          do_constant_folding=True)
        proto = onnx.load(raw)
    meta = {"role": "termination", "kind": "mbpo", "format": "1", "rtmpc_version": rtmpc_version(),
            "obs_dim": str(o), "act_dim": str(a), "inputs": "next" if head.next_only else "all",
            **(extra_metadata or {})}
    out = save_onnx(proto, path, meta, f"rtmpc MBPO termination head P(done | s, a, s'): obs {o}, act {a}")
    g = np.random.default_rng(0)
    obs = np.concatenate([check_obs, g.standard_normal(check_obs.shape)]).astype(np.float32)
    act = np.concatenate([check_act, g.uniform(-1, 1, check_act.shape)]).astype(np.float32)
    nxt = np.concatenate([check_next, g.standard_normal(check_next.shape)]).astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
    got = sess.run(["logit"], termination_feeds(sess, obs, act, nxt))[0]
    with torch.no_grad():
        ref = head(torch.from_numpy(obs), torch.from_numpy(act), torch.from_numpy(nxt)).numpy()
    err = np.abs(got.astype(np.float64) - ref)
    if np.any(~(err <= PARITY_ATOL + PARITY_RTOL * np.abs(ref))):
        raise ModelError(f"ONNX/PyTorch parity failed for {Path(out).name}: logits differ by up to "
                         f"{float(err.max()):.3g} (tolerance {PARITY_ATOL:g} + {PARITY_RTOL:g} * |logit|)")
    return float(err.max(initial=0.0))
