"""The PETS ensemble in PyTorch: fitting a known system, uncertainty, early stopping,
propagation modes, configs and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pets_toys import SMALL, constant_ensemble, sine_buffer, sine_step
from rtmpc.configs import ConfigError
from rtmpc.models import EnsembleConfig, ModelError, TrainConfig
from rtmpc.models.common.ensemble import ProbabilisticEnsemble, fit_ensemble, load_ensemble, save_ensemble


@pytest.fixture(scope="module")
def fitted():
    """An ensemble fitted on the sine system with x in [-1, 1] (noise std 0.01)."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    buf = sine_buffer(2000, rng)
    model = ProbabilisticEnsemble(1, 1, SMALL, seed=0)
    seen = []
    cfg = TrainConfig(batch_size=64, epochs=60, patience=5, lr=3e-3)
    result = fit_ensemble(model, buf, cfg, rng=1, callback=lambda epoch, stats: seen.append(epoch))
    return model, result, seen


def member_predictions(model, x: np.ndarray, u: np.ndarray):
    """Per-member raw-unit delta mean and std (E, n) for 1-D inputs x, u (n,)."""
    e = model.members
    obs = torch.tensor(x, dtype=torch.float32)[None, :, None].expand(e, -1, 1)
    act = torch.tensor(u, dtype=torch.float32)[None, :, None].expand(e, -1, 1)
    with torch.no_grad():
        dm, dlv, rm, _ = model.predict(obs, act)
    return dm[..., 0].numpy(), np.exp(0.5 * dlv[..., 0].numpy()), rm.numpy()


def test_fits_known_system_better_than_constant(fitted):
    model, result, seen = fitted
    assert seen == list(range(1, result.epochs + 1))  # the callback saw every epoch
    rng = np.random.default_rng(99)
    x, u = rng.uniform(-1, 1, 1000), rng.uniform(-1, 1, 1000)
    true_delta = sine_step(x, u) - x
    dm, std, rm = member_predictions(model, x, u)
    mse = np.mean((dm.mean(0) - true_delta) ** 2)
    constant_mse = np.var(true_delta)
    assert mse < 0.02 * constant_mse, (mse, constant_mse)
    assert np.sqrt(mse) < 0.01  # below the noise level of the data
    # The reward (-x'^2) is learned too.
    assert np.mean((rm.mean(0) + sine_step(x, u) ** 2) ** 2) < 0.02 * np.var(sine_step(x, u) ** 2)
    # The aleatoric std is close to the noise of the data (0.01).
    assert 0.003 < np.median(std) < 0.03
    assert result.val_mse < 0.05 and np.isfinite(result.val_nll)


def test_uncertainty_grows_away_from_data(fitted):
    model = fitted[0]
    u = np.zeros(50)
    near, _, _ = member_predictions(model, np.linspace(-0.9, 0.9, 50), u)
    far, far_std, _ = member_predictions(model, np.linspace(3.0, 4.0, 50), u)
    near_spread, far_spread = near.std(0).mean(), far.std(0).mean()
    assert far_spread > 5.0 * near_spread, (near_spread, far_spread)


def test_early_stopping_keeps_each_members_best():
    torch.set_num_threads(1)
    rng = np.random.default_rng(3)
    buf = sine_buffer(60, rng, noise=0.05)  # little data, big net: overfits quickly
    model = ProbabilisticEnsemble(1, 1, EnsembleConfig(members=3, hidden=64, layers=2), seed=1)
    cfg = TrainConfig(batch_size=16, epochs=300, patience=3, lr=1e-2, val_fraction=0.3,
                      min_improvement=0.0)
    result = fit_ensemble(model, buf, cfg, rng=2)
    assert result.epochs < 300  # stopped early
    assert len(result.best_epoch) == 3 and max(result.best_epoch) <= result.epochs - 3
    # Each member is back at its best epoch, so the mean of the kept members is no worse
    # than the mean of any single epoch.
    assert result.val_mse <= min(h["val_mse"] for h in result.history) + 1e-6


def test_max_updates_caps_the_fit():
    rng = np.random.default_rng(0)
    model = ProbabilisticEnsemble(1, 1, EnsembleConfig(members=2, hidden=8, layers=1), seed=0)
    result = fit_ensemble(model, sine_buffer(500, rng), TrainConfig(batch_size=50, max_updates=7), rng=0)
    assert result.updates == 7 and result.epochs == 1


def test_fit_refuses_bad_data():
    model = ProbabilisticEnsemble(1, 1, EnsembleConfig(members=2, hidden=8, layers=1))
    buf = sine_buffer(20, np.random.default_rng(0))
    buf.obs[3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        fit_ensemble(model, buf, rng=0)


def test_logvar_stays_within_learned_bounds():
    model = ProbabilisticEnsemble(2, 1, SMALL, seed=0)
    x = torch.randn(SMALL.members, 64, 3) * 100.0  # far outside any data
    _, logvar = model(x)
    # Soft bounds: beyond a bound by at most log(1 + exp(-(max - min))) ~ 3e-5.
    assert torch.all(logvar <= model.max_logvar + 1e-4) and torch.all(logvar >= model.min_logvar - 1e-4)


# -- propagation modes (PyTorch reference) ----------------------------------------------
DELTAS = np.array([[-2.0, 0.0], [-1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])


def test_propagation_modes():
    model = constant_ensemble(DELTAS, np.arange(5.0))
    obs, act = torch.zeros(10, 2), torch.zeros(10, 1)
    gen = torch.Generator().manual_seed(0)
    # expectation: the mean over members, the same every call.
    nxt, rew, members = model.propagate(obs, act, "expectation")
    assert members is None
    torch.testing.assert_close(nxt, torch.zeros(10, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(rew, torch.full((10,), 2.0), atol=1e-5, rtol=0)
    # TSinf: particle i stays on member i mod E.
    nxt, rew, members = model.propagate(obs, act, "TSinf", generator=gen)
    assert members.tolist() == [i % 5 for i in range(10)]
    nxt2, _, members2 = model.propagate(nxt, act, "TSinf", member_of=members, generator=gen)
    assert torch.equal(members2, members)
    want = 2 * torch.as_tensor(DELTAS[members.numpy(), 0], dtype=torch.float32)
    torch.testing.assert_close(nxt2[:, 0], want, atol=1e-4, rtol=0)
    # TS1: a fresh balanced assignment every step.
    draws = {tuple(model.propagate(obs, act, "TS1", member_of=members, generator=gen)[2].tolist())
             for _ in range(5)}
    assert len(draws) > 1 and all(sorted(d) == sorted(members.tolist()) for d in draws)
    with pytest.raises(ValueError, match="TS1, TSinf, expectation"):
        model.propagate(obs, act, "TSfoo")


def test_config_validation():
    with pytest.raises(ConfigError, match="propagation"):
        EnsembleConfig(propagation="random")
    with pytest.raises(ConfigError, match="particles = 7 is not a multiple of members = 5"):
        EnsembleConfig(particles=7)
    assert EnsembleConfig().particles_per_candidate() == 5
    assert EnsembleConfig(particles=20).particles_per_candidate() == 20
    with pytest.raises(ConfigError, match="val_fraction"):
        TrainConfig(val_fraction=1.0)


def test_checkpoint_round_trip(tmp_path):
    model = ProbabilisticEnsemble(2, 1, SMALL, seed=4)
    model.fit_normalisers(np.random.default_rng(0).normal(3, 2, (50, 3)), np.ones((50, 3)))
    path = save_ensemble(model, tmp_path / "ckpt" / "ensemble.pt")
    again = load_ensemble(path)
    assert again.cfg == model.cfg
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelError, match="damaged"):
        load_ensemble(path)
