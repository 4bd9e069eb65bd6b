"""PETS in ``rtmpc bench planner``: a random-weight ensemble of the given shape, exported
(parity checked), rtmpc's planner over it in each parallel mode (and the int8 copy when
asked), the torch baselines on the same weights, and the plan's GEMMs for the FLOP bound.

- :class:`PETSTorchPlanner`: the plain batched PyTorch planner over the ensemble's own
  ``predict`` (batched ``baddbmm`` over ``[E, M, .]``), TSinf with P particles per candidate.
- :class:`PETSBmmPlanner`: the same planner written the way a careful PyTorch user would
  (the issue-25 baseline): one ``torch.baddbmm`` per layer over the members on
  preallocated buffers, in-place activation, normalisers folded into the weights and the
  softplus-free standard deviation (both as rtmpc's exported graph has them), noise drawn
  into a preallocated tensor, ``torch.inference_mode``.
- :class:`PytorchMPPI`: pytorch_mppi's ``MPPI`` (Williams et al. 2017) when installed,
  with ``rollout_samples = P`` and the same ensemble as its dynamics; I iterations are I
  ``command`` calls, the nominal sequence shifted on the first only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from rtmpc.models.common.ensemble import ProbabilisticEnsemble
from rtmpc.models.common.torch_planner import TorchPlanner

__all__ = ["PETSTorchPlanner", "PETSBmmPlanner", "PytorchMPPI", "pytorch_mppi_available", "setup",
           "resolve_defaults", "OPTIONS", "DEFAULTS"]

log = logging.getLogger(__name__)

DEFAULTS = {"hidden": 200, "samples": 1000, "horizon": 30, "iterations": 1, "elites": 0, "prior_samples": 0}
# the workload options that reproduce a run (the bench's command line)
OPTIONS = ("model", "obs_dim", "act_dim", "hidden", "layers", "ensemble", "activation", "particles", "layout",
           "planner", "samples", "horizon", "iterations", "elites", "threads", "repeats", "warmup", "modes", "seed")


def resolve_defaults(args) -> None:
    """Fill the options left at None with PETS's defaults."""
    for name, value in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


class PETSTorchPlanner(TorchPlanner):
    """The plain PyTorch planner over a PETS ensemble (TSinf, P particles)."""

    def rollout(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """obs (O,), actions (K, H, A) -> discounted returns (K,), TSinf over [E, K*pe, O]."""
        e, (k, h, _) = self.model.members, actions.shape
        state = obs.expand(e, k * self.pe, -1)
        acts = actions.repeat_interleave(self.pe, dim=0)
        ret = torch.zeros(e, k * self.pe)
        for t in range(h):
            dm, dlv, rm, _ = self.model.predict(state, acts[:, t].expand(e, -1, -1))
            state = state + dm + torch.exp(0.5 * dlv) * torch.randn(dm.shape, generator=self.gen)
            ret += self.gamma**t * rm
        self.evaluations += e * k * self.pe * h
        return ret.view(e, k, self.pe).mean(dim=(0, 2))


class PETSBmmPlanner(TorchPlanner):
    """A careful PyTorch PETS planner (TSinf, P particles): per step one ``baddbmm`` per
    layer over ``[E, M, .]`` into preallocated outputs, the activation in place, noise
    drawn into a preallocated tensor; weights with the normalisers folded in and the
    head's softplus-free standard deviation, taken from the exported graph's own module
    (:class:`rtmpc.models.common.ensemble_export._MemberGraph`), so it computes the same function."""

    def __init__(self, ensemble, **kw) -> None:
        from rtmpc.models.common.ensemble_export import _MemberGraph

        super().__init__(ensemble, **kw)
        if not ensemble.cfg.learned_reward:
            raise ValueError("PETSBmmPlanner plans over a learned reward; this ensemble has none")
        g = _MemberGraph(ensemble).eval()
        n = g.n_layers
        self._w = [getattr(g, f"w{i}").contiguous() for i in range(n)]  # [E, in, out]
        self._b = [getattr(g, f"b{i}")[:, None, :].contiguous() for i in range(n)]  # [E, 1, out]
        self.std_a = g.std_a.transpose(1, 2)[:, :, : ensemble.obs_dim].contiguous()  # [E, 1, O]
        self.std_c = g.std_c.transpose(1, 2)[:, :, : ensemble.obs_dim].contiguous()
        self.o, self.d = ensemble.obs_dim, g.d
        act = ensemble.cfg.activation
        inplace = {"silu": torch.nn.functional.silu, "relu": torch.relu_, "tanh": torch.tanh_}[act]
        self.act_ = (lambda x: inplace(x, inplace=True)) if act == "silu" else inplace
        self._m = -1

    def _buffers(self, m: int) -> None:
        if m == self._m:
            return
        e, o = self.model.members, self.o
        self._x = torch.empty(e, m, self._w[0].shape[1])  # [state, action]
        self._hs = [torch.empty(e, m, w.shape[2]) for w in self._w]
        self._std = torch.empty(e, m, o)
        self._eps = torch.empty(e, m, o)
        self._ret = torch.empty(e, m)
        self._m = m

    def rollout(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """obs (O,), actions (K, H, A) -> discounted returns (K,), TSinf over [E, K*pe, O]."""
        e, (k, h, _) = self.model.members, actions.shape
        o, d, m = self.o, self.d, k * self.pe
        self._buffers(m)
        x, hs, std, eps, ret = self._x, self._hs, self._std, self._eps, self._ret
        acts = actions.repeat_interleave(self.pe, dim=0) if self.pe > 1 else actions
        x[:, :, :o] = obs
        ret.zero_()
        last = len(self._w) - 1
        for t in range(h):
            x[:, :, o:] = acts[:, t]
            inp = x
            for i, (w, b) in enumerate(zip(self._w, self._b, strict=True)):
                torch.baddbmm(b, inp, w, out=hs[i])
                if i < last:
                    self.act_(hs[i])
                inp = hs[i]
            head = hs[last]  # [E, M, 2D]: means (raw units), then u = max_logvar - logvar
            torch.exp(head[:, :, d:d + o], out=std)
            std.add_(1.0).reciprocal_().mul_(self.std_c).add_(1.0).sqrt_().mul_(self.std_a)
            torch.randn(eps.shape, generator=self.gen, out=eps)
            x[:, :, :o].addcmul_(std, eps).add_(head[:, :, :o])
            ret.add_(head[:, :, o], alpha=self.gamma**t)
        self.evaluations += e * m * h
        return ret.view(e, k, self.pe).mean(dim=(0, 2))


def pytorch_mppi_available() -> bool:
    try:
        import pytorch_mppi  # noqa: F401
    except ImportError:
        return False
    return True


class PytorchMPPI:
    """pytorch_mppi's MPPI over the ensemble: K samples, H steps, rollout_samples = P.

    The state it carries is (obs, reward) (O + 1 entries): the dynamics write the
    predicted reward into the last entry and the running cost reads it back (cost =
    -reward). Rollout sample m of candidate k (row m * K + k) runs on member m mod E,
    with TSinf sampling as in :class:`TorchPlanner`.
    """

    def __init__(self, ensemble: ProbabilisticEnsemble, *, samples: int, horizon: int, iterations: int,
                 init_std: float, low: np.ndarray, high: np.ndarray, particles: int, temperature: float = 1.0,
                 seed: int = 0) -> None:
        from pytorch_mppi import MPPI

        self.model = ensemble.eval()
        self.iterations = iterations
        self.evaluations = 0  # rows through one member, as rtmpc's model counts them
        e, o = ensemble.members, ensemble.obs_dim
        self.o, self.k, self.p = o, samples, particles
        low_t = torch.as_tensor(np.asarray(low, np.float32))
        high_t = torch.as_tensor(np.asarray(high, np.float32))
        sigma = torch.diag((init_std * 0.5 * (high_t - low_t)) ** 2)
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # pytorch_mppi draws its noise from the global generator
        c = particles // e

        def dynamics(state: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            n = state.shape[0]
            kk = n // particles
            # rows m * K + k, m = j * E + member -> [E, c * K, .]
            s = state[:, :o].reshape(c, e, kk, o).transpose(0, 1).reshape(e, c * kk, o)
            a = u.reshape(c, e, kk, -1).transpose(0, 1).reshape(e, c * kk, -1)
            dm, dlv, rm, _ = self.model.predict(s, a)
            nxt = s + dm + torch.exp(0.5 * dlv) * torch.randn(dm.shape, generator=gen)
            self.evaluations += n
            out = torch.cat([nxt, rm.unsqueeze(-1)], dim=-1)
            return out.reshape(e, c, kk, o + 1).transpose(0, 1).reshape(n, o + 1)

        def running_cost(state: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            return -state[:, -1]

        self.mppi = MPPI(dynamics, running_cost, o + 1, sigma, num_samples=samples, horizon=horizon,
                         lambda_=temperature, u_min=low_t, u_max=high_t, rollout_samples=particles)

    @torch.inference_mode()
    def plan(self, obs: np.ndarray) -> np.ndarray:
        state = torch.cat([torch.as_tensor(np.asarray(obs, np.float32)), torch.zeros(1)])
        action = None
        for i in range(self.iterations):
            action = self.mppi.command(state, shift_nominal_trajectory=(i == 0))
        return action.numpy().astype(np.float64)


def setup(args, modes: list[str], tmp: Path) -> dict:
    """A random-weight PETS ensemble, exported (parity checked), the implementations timed
    on it (rtmpc per mode, int8 when asked, the torch baselines) and its plan's GEMMs."""
    import numpy as np
    from rtmpc.configs import ConfigError
    from rtmpc.models.common.ensemble import ProbabilisticEnsemble
    from rtmpc.models.common.ensemble_config import EnsembleConfig
    from rtmpc.models.common.ensemble_export import check_parity, export_onnx
    from rtmpc.models.runtime import load_model
    from rtmpc.planners import make_planner
    from rtmpc.planners.bench import BenchImpl, mlp_shapes, plan_evaluations, plan_flops, planner_config


    e, o, a = args.ensemble, args.obs_dim, args.act_dim
    cfg = EnsembleConfig(members=e, hidden=args.hidden, layers=args.layers, activation=args.activation,
                         particles=args.particles)  # validates the sizes
    p = cfg.particles_per_candidate()
    k, h, iters = args.samples, args.horizon, args.iterations
    if (k * p) % e:
        raise ConfigError(f"K * P = {k * p} is not a multiple of the {e} members")
    elites = args.elites or max(2, k // 10)
    low, high = -np.ones(a), np.ones(a)
    pcfg = planner_config(args, elites=elites, min_std=0.05, init_std=0.5)

    ensemble = ProbabilisticEnsemble(o, a, cfg, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    ensemble.fit_normalisers(rng.standard_normal((1000, o + a)) * [*([1.0] * o), *([0.5] * a)],
                             0.05 * rng.standard_normal((1000, ensemble.out_dim)))
    ensemble.eval()
    path = export_onnx(ensemble, tmp / "model.onnx", action_low=low, action_high=high, layout=args.layout)
    parity = check_parity(ensemble, path)
    obs = (0.1 * rng.standard_normal(o)).astype(np.float32)
    shapes = mlp_shapes(o + a, args.hidden, args.layers, 2 * ensemble.out_dim)  # head: means and log-variances
    rows = k * p // e

    impls = []
    for mode in modes:
        parallel = {"default": {}, "lanes": {"min_lane": 1}}.get(mode, {"parallel": "intra"})
        model = load_model(path, threads=args.threads, allow_spinning=(mode == "intra-spin"), rng=args.seed,
                           propagation="TSinf", particles=p, **parallel)
        impls.append(BenchImpl("rtmpc", mode, make_planner(pcfg, model, args.seed).plan,
                               lambda m=model: m.eval_seconds, lambda m=model: m.evaluations, model.timeline))
    int8_error = None
    if args.int8:
        from rtmpc.models.common.quantize import compare_predictions, quantize_int8

        q = quantize_int8(path)
        x = rng.standard_normal((1000, o)).astype(np.float32)
        int8_error = compare_predictions(path, q, x, rng.uniform(-1, 1, (1000, a)).astype(np.float32))
        model = load_model(q, threads=args.threads, rng=args.seed, propagation="TSinf", particles=p)
        impls.append(BenchImpl("rtmpc-int8", "default", make_planner(pcfg, model, args.seed).plan,
                               lambda m=model: m.eval_seconds, lambda m=model: m.evaluations))
    if not args.no_baselines:
        common = dict(samples=k, horizon=h, iterations=iters, init_std=pcfg.init_std, low=low, high=high,
                      particles=p, seed=args.seed)
        temperature = getattr(pcfg, "temperature", 0.5)  # MPPI only
        for name, cls in (("torch", PETSTorchPlanner), ("torch-bmm", PETSBmmPlanner)):
            planner = cls(ensemble, kind=args.planner, elites=elites, temperature=temperature, alpha=pcfg.alpha,
                          min_std=pcfg.min_std, **common)
            impls.append(BenchImpl(name, "plain" if name == "torch" else "careful", planner.plan,
                                   evaluations=lambda pl=planner: pl.evaluations))
        if pytorch_mppi_available():
            mppi = PytorchMPPI(ensemble, **common)
            impls.append(BenchImpl("pytorch_mppi", "mppi", mppi.plan, evaluations=lambda pl=mppi: pl.evaluations))
        else:
            log.info("pytorch_mppi is not installed: skipped (pip install pytorch-mppi)")
    workload = {"model": "pets", "planner": args.planner, "samples": k, "horizon": h, "iterations": iters,
                "elites": elites, "members": e, "particles": p, "obs_dim": o, "act_dim": a, "hidden": args.hidden,
                "layers": args.layers, "activation": args.activation, "propagation": "TSinf",
                "layout": args.layout, "rows_per_member": rows}
    title = (f"{args.planner} K={k} H={h} iterations={iters}; E={e} x {args.layers}x{args.hidden} {args.activation}, "
             f"O={o} A={a}, P={p} (TSinf), {rows} rows per member per step")
    return {"impls": impls, "obs": obs, "parity": parity, "int8_error": int8_error, "workload": workload,
            "title": title, "evals": plan_evaluations(k, h, iters, p), "flops": plan_flops(shapes, k, h, iters, p),
            "gemms": [(rows, n_in, n_out, e * h * iters) for n_in, n_out in shapes]}
