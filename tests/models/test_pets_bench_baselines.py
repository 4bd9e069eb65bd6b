"""The planner benchmark's PyTorch baselines compute what rtmpc's runtime computes, and count
the same work (the equal-FLOP accounting of ``rtmpc bench planner``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pets_toys import SMALL
from rtmpc.models import load_model
from rtmpc.models.common.ensemble import ProbabilisticEnsemble
from rtmpc.models.common.ensemble_export import export_onnx
from rtmpc.models.pets.bench import PETSBmmPlanner, PETSTorchPlanner

OBS, A, K, H, P, GAMMA = 3, 2, 6, 4, 5, 0.9


def ensemble(std_scale: str) -> ProbabilisticEnsemble:
    """SMALL with normalisers fitted on random data; ``tiny``: log-variances pinned near
    -25 (std ~1e-5: the sampled rollout is deterministic to 1e-4)."""
    model = ProbabilisticEnsemble(OBS, A, SMALL, seed=0)
    rng = np.random.default_rng(0)
    model.fit_normalisers(rng.standard_normal((500, OBS + A)), 0.1 * rng.standard_normal((500, model.out_dim)))
    if std_scale == "tiny":
        with torch.no_grad():
            model.min_logvar.fill_(-26.0)
            model.max_logvar.fill_(-24.0)
    return model.eval()


def planners(model):
    common = dict(kind="mppi", samples=K, horizon=H, iterations=1, elites=0, temperature=0.5, alpha=0.0,
                  init_std=0.5, min_std=0.05, low=-np.ones(A), high=np.ones(A), particles=P, gamma=GAMMA, seed=3)
    return PETSTorchPlanner(model, **common), PETSBmmPlanner(model, **common)


def inputs():
    rng = np.random.default_rng(1)
    return (0.3 * rng.standard_normal(OBS)).astype(np.float32), rng.uniform(-1, 1, (K, H, A)).astype(np.float32)


@pytest.mark.parametrize("std_scale", ["tiny", "trained-like"])
def test_careful_baseline_matches_the_plain_one_draw_for_draw(std_scale):
    obs, acts = inputs()
    plain, bmm = planners(ensemble(std_scale))
    with torch.inference_mode():
        r_plain = plain.rollout(torch.from_numpy(obs), torch.from_numpy(acts)).numpy()
        r_bmm = bmm.rollout(torch.from_numpy(obs), torch.from_numpy(acts)).numpy()
    # Same generator, same draws in the same order: the same returns, up to float32 rounding
    # (folded normalisers and the softplus-free std against the ensemble's own predict).
    np.testing.assert_allclose(r_bmm, r_plain, rtol=1e-4, atol=1e-4)
    assert plain.evaluations == bmm.evaluations == K * P * H  # rows through one member


def test_rtmpc_runtime_and_baselines_agree_when_the_model_is_nearly_deterministic(tmp_path):
    model = ensemble("tiny")
    path = export_onnx(model, tmp_path / "model.onnx", action_low=-np.ones(A), action_high=np.ones(A), gamma=GAMMA)
    obs, acts = inputs()
    plain, bmm = planners(model)
    with torch.inference_mode():
        ref = plain.rollout(torch.from_numpy(obs), torch.from_numpy(acts)).numpy()
    for threads, extra in ((1, {}), (2, {"min_lane": 1})):  # one lane, and two lanes
        rt = load_model(path, threads=threads, propagation="TSinf", particles=P, rng=0, **extra)
        got = rt.rollout(obs, acts)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
        assert rt.evaluations == K * P * H
