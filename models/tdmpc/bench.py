"""The latent model in ``rtmpc bench planner``: a random-weight TD-MPC-style model planned as
TD-MPC2 plans (MPPI, K = 512 with 24 policy-prior trajectories drawn once per plan, H = 3,
6 iterations, 64 elites, unless told otherwise), against the plain PyTorch planner over the
same model's eager graph (pytorch_mppi has no policy prior or terminal value: not run). Its
FLOP bound counts the GEMMs of dynamics and reward per step, policy and two Q heads at the
terminal latent, and the prior's trajectories (:func:`latent_plan_gemms`); model
evaluations are candidate-steps, K * H * iterations.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from rtmpc.models.common.torch_planner import TorchPlanner

__all__ = ["LatentTorchPlanner", "latent_layers", "latent_plan_gemms", "setup", "resolve_defaults", "OPTIONS",
           "DEFAULTS", "MODES"]

# TD-MPC2's planner setting, the latent model's defaults (as configs/tdmpc_cartpole.yaml)
DEFAULTS = {"hidden": 64, "samples": 512, "horizon": 3, "iterations": 6, "elites": 64, "prior_samples": 24}
OPTIONS = ("model", "obs_dim", "act_dim", "hidden", "latent_dim", "num_q", "planner", "samples", "horizon",
           "iterations", "elites", "prior_samples", "threads", "repeats", "warmup", "seed")
MODES = ("default",)  # the latent runtime has one way of using threads (slices of K)


def resolve_defaults(args) -> None:
    """Fill the options left at None (and elites 0) with TD-MPC2's setting."""
    for name, value in DEFAULTS.items():
        if getattr(args, name) is None or (name == "elites" and args.elites == 0):
            setattr(args, name, value)


def latent_layers(model) -> dict[str, list[tuple[int, int]]]:
    """(in, out) of the affine layers of a models.tdmpc.model.LatentWorldModel, by part (one Q head)."""
    import re

    parts = {"dynamics": [], "reward": [], "pi": [], "q": []}
    for name, p in model.named_parameters():
        m = re.fullmatch(r"(dynamics|reward_head|pi_head)\.\d+(?:\.linear)?\.weight", name)
        if m:
            parts[{"reward_head": "reward", "pi_head": "pi"}.get(m.group(1), m.group(1))].append(
                (int(p.shape[1]), int(p.shape[0])))
        elif re.fullmatch(r"qs\.w\d+", name):
            parts["q"].append((int(p.shape[1]), int(p.shape[2])))
    return parts


def latent_plan_gemms(layers: dict[str, Sequence[tuple[int, int]]], samples: int, horizon: int,
                      iterations: int, prior_samples: int, q_pair: int = 2) -> list[tuple[int, int, int, int]]:
    """The matrix products of one latent-model plan as (rows, in, out, count).

    layers: (in, out) of each affine layer of "dynamics", "reward", "pi" and "q" (one Q
    head). Each iteration scores K = ``samples`` candidates: H steps of dynamics and
    reward, then the policy and ``q_pair`` Q heads at the terminal latent (rows K); once
    per plan ``prior_samples`` policy-prior trajectories of H steps (policy and dynamics,
    rows n). The encoder (one row per call) is left out."""
    k, h, it, n = int(samples), int(horizon), int(iterations), int(prior_samples)
    out = []
    for group, count in (("dynamics", it * h), ("reward", it * h), ("pi", it), ("q", it * q_pair)):
        out += [(k, a, b, count) for a, b in layers[group]]
    if n > 0:
        out += [(n, a, b, h) for a, b in [*layers["pi"], *layers["dynamics"]]]
    return out


class LatentTorchPlanner(TorchPlanner):
    """The same plain PyTorch planner over a TD-MPC-style latent model, as TD-MPC2 plans:
    ``prior_samples`` policy-prior trajectories drawn once per plan join every iteration's
    samples; a candidate's score is its discounted latent rewards plus the discounted
    terminal value (mean of a random pair of Q heads at the prior's action), computed by
    the model's own eager graph (:func:`models.tdmpc.model.make_graph`, the graph the ONNX file
    was exported from)."""

    def __init__(self, model, *, gamma: float, prior_samples: int, **kw) -> None:
        from .model import make_graph

        super().__init__(model, **kw)
        self.graph = make_graph(model, gamma).eval()
        self.prior_samples = int(prior_samples)
        self.num_q = model.cfg.num_q
        self.no_prior = torch.zeros(0, kw["horizon"], model.act_dim)

    def _pair(self) -> torch.Tensor:
        i, j = torch.randperm(self.num_q, generator=self.gen)[:2]
        return torch.stack([i, j])

    def prior(self, obs: torch.Tensor) -> torch.Tensor:
        n, a = self.prior_samples, self.low.shape[0]
        if n == 0:
            return torch.empty(0, self.h, a)
        eps = torch.randn(n, self.h, a, generator=self.gen)
        return self.graph(obs[None], torch.zeros(0, self.h, a), torch.zeros(0, a), self._pair(), eps)[1]

    def rollout(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        k, _, a = actions.shape
        eps = torch.randn(k, a, generator=self.gen)
        return self.graph(obs[None], actions, eps, self._pair(), self.no_prior)[0]


def setup(args, modes: list[str], tmp: Path) -> dict:
    """A random-weight TD-MPC-style latent model, exported (parity checked), rtmpc's MPPI
    over it with policy-prior samples, the plain PyTorch planner over the same model, and
    the plan's GEMMs (:func:`latent_plan_gemms`)."""
    import numpy as np
    from rtmpc.configs import from_dict
    from rtmpc.models.runtime import load_model
    from rtmpc.planners import make_planner
    from rtmpc.planners.bench import BenchImpl, planner_config

    from .config import LatentModelConfig
    from .export import check_latent_parity, export_latent
    from .model import LatentWorldModel


    o, a, k, h, iters, n = args.obs_dim, args.act_dim, args.samples, args.horizon, args.iterations, args.prior_samples
    gamma = 0.99
    mcfg = from_dict(LatentModelConfig, {"latent_dim": args.latent_dim, "hidden": args.hidden,
                                         "enc_hidden": args.hidden, "num_q": args.num_q})
    low, high = -np.ones(a), np.ones(a)
    pcfg = planner_config(args, elites=args.elites, prior_samples=n, alpha=0.0, init_std=2.0, min_std=0.05,
                           temperature=0.5)
    model = LatentWorldModel(o, a, mcfg, low.tolist(), high.tolist(), seed=args.seed).eval()
    path = export_latent(model, tmp / "model.onnx", gamma=gamma)
    rng = np.random.default_rng(args.seed)
    parity = check_latent_parity(model, path, rng.standard_normal((64, o)).astype(np.float32), gamma=gamma)
    obs = (0.1 * rng.standard_normal(o)).astype(np.float32)
    rm = load_model(path, threads=args.threads, rng=args.seed)
    impls = [BenchImpl("rtmpc", "default", make_planner(pcfg, rm, args.seed).plan)]
    if not args.no_baselines:
        torch_planner = LatentTorchPlanner(model, gamma=gamma, prior_samples=n, kind=args.planner, samples=k,
                                           horizon=h, iterations=iters, elites=args.elites,
                                           temperature=getattr(pcfg, "temperature", 0.5), alpha=pcfg.alpha,
                                           init_std=pcfg.init_std,
                                           min_std=pcfg.min_std, low=low, high=high, seed=args.seed)
        impls.append(BenchImpl("torch", "plain", torch_planner.plan))
    gemms = latent_plan_gemms(latent_layers(model), k, h, iters, n)
    workload = {"model": "latent", "planner": args.planner, "samples": k, "horizon": h, "iterations": iters,
                "elites": args.elites, "prior_samples": n, "obs_dim": o, "act_dim": a, "hidden": args.hidden,
                "latent_dim": args.latent_dim, "num_q": args.num_q, "params": model.num_params()}
    title = (f"latent {args.planner} K={k} (of which {n} policy prior) H={h} iterations={iters}; Z={args.latent_dim}, "
             f"hidden {args.hidden}, {args.num_q} Q heads, O={o} A={a}; {model.num_params()} parameters")
    return {"impls": impls, "obs": obs, "parity": parity, "int8_error": None, "workload": workload, "title": title,
            "evals": k * h * iters, "flops": sum(2 * r * i * j * c for r, i, j, c in gemms), "gemms": gemms}
