"""Export to ONNX (parity, metadata) and the ONNX Runtime PETS rollouts."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from pets_toys import SMALL, constant_ensemble, sine_buffer
from rtmpc.models import EnsembleConfig, ModelError, load_model
from rtmpc.models.common.ensemble import ProbabilisticEnsemble
from rtmpc.models.common.ensemble_export import PARITY_ATOL, check_parity, export_onnx
from rtmpc.models.pets.runtime import PETSRolloutModel
from rtmpc.models.runtime import read_metadata

GAMMA = 0.9
# Member e moves dim 0 by DELTAS[e, 0] (mean 1, std sqrt 2) and dim 1 by 0.5; reward e.
DELTAS = np.array([[-1.0, 0.5], [0.0, 0.5], [1.0, 0.5], [2.0, 0.5], [3.0, 0.5]])
REWARDS = np.arange(5.0)
OBS0 = np.array([0.25, -1.0])


@pytest.fixture(scope="module")
def toy_path(tmp_path_factory) -> Path:
    """The constant-prediction ensemble (known answers), exported."""
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("toy") / "model.onnx"
    return export_onnx(constant_ensemble(DELTAS, REWARDS), path, action_low=[-1.0], action_high=[1.0],
                       gamma=GAMMA)


@pytest.fixture(scope="module")
def small():
    """A random-weight ensemble (obs 3, act 2) with normalisers fitted on data, exported."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    model = ProbabilisticEnsemble(3, 2, SMALL, seed=0)
    model.fit_normalisers(rng.normal(1.0, 2.0, (200, 5)), rng.normal(0.0, 0.1, (200, 4)))
    return model


def discounted(values) -> float:
    return sum(GAMMA**t * v for t, v in enumerate(values))


def actions(k: int, h: int, a: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (k, h, a)).astype(np.float32)


# -- export and parity ------------------------------------------------------------------
def test_parity_and_metadata(small, tmp_path):
    path = export_onnx(small, tmp_path / "model.onnx", action_low=[-1, -2], action_high=[1, 2], gamma=0.99)
    buf = sine_buffer(64, np.random.default_rng(1))
    real = (np.repeat(buf.obs, 3, axis=1), np.repeat(buf.act, 2, axis=1))
    err = check_parity(small, path, real)
    assert err <= PARITY_ATOL
    meta = read_metadata(path)
    assert meta["kind"] == "pets" and meta["obs_dim"] == "3" and meta["act_dim"] == "2"
    assert meta["members"] == "5" and meta["propagation"] == "TSinf" and meta["particles"] == "5"
    assert meta["rtmpc_version"] and meta["exporter"] == "torchscript"
    assert onnx.load(path).opset_import[0].version >= 17
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # written atomically, no leftovers


def test_parity_with_dynamo_exporter(small, tmp_path):
    path = export_onnx(small, tmp_path / "model.onnx", action_low=[-1, -1], action_high=[1, 1], dynamo=True)
    assert check_parity(small, path) <= PARITY_ATOL
    assert read_metadata(path)["exporter"] == "dynamo"
    model = load_model(path, rng=0)
    assert np.all(np.isfinite(model.rollout(np.zeros(3), actions(4, 3, a=2))))


def test_parity_failure_is_reported(small, tmp_path):
    path = export_onnx(small, tmp_path / "model.onnx", action_low=[-1, -1], action_high=[1, 1])
    changed = ProbabilisticEnsemble(3, 2, SMALL, seed=1)
    changed.load_state_dict(small.state_dict())
    with torch.no_grad():
        changed.head.bias.add_(1e-2)
    with pytest.raises(ModelError, match="parity failed"):
        check_parity(changed, path)


def test_export_validates_arguments(small, tmp_path):
    with pytest.raises(ValueError, match="action bounds"):
        export_onnx(small, tmp_path / "m.onnx", action_low=[1, 1], action_high=[-1, -1])
    with pytest.raises(ValueError, match="TS1, TSinf, expectation"):
        export_onnx(small, tmp_path / "m.onnx", action_low=[-1, -1], action_high=[1, 1], propagation="TS2")


# -- loading -----------------------------------------------------------------------------
def test_dims_from_file(toy_path):
    model = load_model(toy_path, threads=2)
    assert isinstance(model, PETSRolloutModel)
    d = model.dims
    assert (d.obs_dim, d.act_dim, d.latent_dim, d.kind) == (2, 1, 0, "pets")
    assert d.gamma == pytest.approx(GAMMA)
    np.testing.assert_array_equal(d.action_low, [-1.0])
    np.testing.assert_array_equal(d.action_high, [1.0])
    assert model.propagation == "TSinf" and model.particles == 5
    opts = model._sess.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (2, 1)


def test_bad_model_files(toy_path, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "missing.onnx")
    data = toy_path.read_bytes()
    for name, content in (("truncated.onnx", data[: len(data) // 2]), ("empty.onnx", b""),
                          ("garbage.onnx", b"\x00\xff not onnx" * 10)):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelError) as err:
            load_model(tmp_path / name)
        assert "\n" not in str(err.value) and name in str(err.value)
    # A valid ONNX file that rtmpc did not write.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    plain = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]))
    onnx.save(plain, tmp_path / "plain.onnx")
    with pytest.raises(ModelError, match="not an rtmpc model"):
        load_model(tmp_path / "plain.onnx")


def test_unknown_kind(tmp_path):
    path = export_onnx(constant_ensemble(DELTAS, REWARDS), tmp_path / "m.onnx", action_low=[-1],
                       action_high=[1], extra_metadata={"kind": "teleport"})
    with pytest.raises(ModelError, match="'teleport' model"):
        load_model(path)


def test_wrong_inputs(toy_path):
    model = load_model(toy_path)
    with pytest.raises(ModelError, match="observation has 3 entries but the model expects 2"):
        model.rollout(np.zeros(3), actions(4, 5))
    with pytest.raises(ModelError, match="not finite"):
        model.rollout(np.array([0.0, np.nan]), actions(4, 5))
    with pytest.raises(ModelError, match=r"expected \(K, H, 1\)"):
        model.rollout(OBS0, actions(4, 5, a=2))
    with pytest.raises(ModelError, match=r"expected \(K, H, 1\)"):
        model.rollout(OBS0, np.zeros((4, 5)))


def test_options_are_validated(toy_path):
    with pytest.raises(ValueError, match="TS1, TSinf, expectation"):
        load_model(toy_path, propagation="moment-matching")
    with pytest.raises(ModelError, match="particles = 7"):
        load_model(toy_path, particles=7)
    with pytest.raises(ModelError, match="threads = 0"):
        load_model(toy_path, threads=0)


# -- propagation modes with known answers ------------------------------------------------
def test_expectation_is_the_member_mean_and_deterministic(toy_path, small, tmp_path):
    model = load_model(toy_path, propagation="expectation", rng=0)
    h = 6
    ret = model.rollout(OBS0, actions(4, h)).copy()
    np.testing.assert_allclose(ret, discounted([REWARDS.mean()] * h), rtol=1e-5)
    np.testing.assert_array_equal(model.rollout(OBS0, actions(4, h, seed=5)), ret)
    # no draw anywhere: another generator seed gives the same returns bit for bit, on a random-weight
    # ensemble where TS1's returns (members drawn per step) do differ between seeds
    path = export_onnx(small, tmp_path / "small.onnx", action_low=[-1, -1], action_high=[1, 1], gamma=GAMMA)
    x0, acts = np.array([1.0, 0.5, -1.0]), actions(8, h, a=2)
    runs = {(prop, s): load_model(path, propagation=prop, rng=s).rollout(x0, acts).copy()
            for prop in ("expectation", "TS1") for s in (0, 1)}
    np.testing.assert_array_equal(runs["expectation", 0], runs["expectation", 1])
    assert not np.array_equal(runs["TS1", 0], runs["TS1", 1])
    # Spread across members of the predicted next state: (std of DELTAS[:, 0] + 0) / 2.
    np.testing.assert_allclose(model.disagreement, DELTAS[:, 0].std() / 2, rtol=1e-4)
    # A task reward replaces the learned one: reward = next x, which moves by the mean delta.
    model = load_model(toy_path, propagation="expectation", reward_fn=lambda o, a, n: n[:, 0])
    x_next = [OBS0[0] + (t + 1) * DELTAS[:, 0].mean() for t in range(h)]
    np.testing.assert_allclose(model.rollout(OBS0, actions(3, h)), discounted(x_next), rtol=1e-5)


def test_tsinf_keeps_each_particle_on_its_member(toy_path):
    h = 8
    model = load_model(toy_path, propagation="TSinf", rng=0)
    ret = model.rollout(OBS0, actions(4, h))
    np.testing.assert_allclose(ret, discounted([REWARDS.mean()] * h), rtol=1e-5)
    # Particles that keep their member drift apart linearly: spread (t+1) std(delta) / 2.
    spread = (np.arange(h) + 1) * DELTAS[:, 0].std() / 2
    np.testing.assert_allclose(model.disagreement, np.broadcast_to(spread, (4, h)), rtol=1e-4)
    # Two particles per member per candidate: same answer.
    model = load_model(toy_path, propagation="TSinf", particles=10, rng=0)
    np.testing.assert_allclose(model.rollout(OBS0, actions(4, h)), ret, rtol=1e-6)
    np.testing.assert_allclose(model.disagreement, np.broadcast_to(spread, (4, h)), rtol=1e-4)


def test_ts1_resamples_members_every_step(toy_path):
    h = 12
    reward_fn = lambda o, a, n: n[:, 0]  # noqa: E731
    ts1 = load_model(toy_path, propagation="TS1", rng=0, reward_fn=reward_fn)
    tsinf = load_model(toy_path, propagation="TSinf", rng=0, reward_fn=reward_fn)
    ret = ts1.rollout(OBS0, actions(16, h)).copy()
    spread_ts1 = ts1.disagreement.copy()
    # Each step a candidate's particles use every member once, so their mean follows the
    # member mean exactly, as under TSinf.
    np.testing.assert_allclose(ret, tsinf.rollout(OBS0, actions(16, h)), rtol=1e-5)
    # The first step is the same; later a particle's steps mix members and the spread
    # grows slower than TSinf's linear (t+1) std / 2.
    np.testing.assert_allclose(spread_ts1[:, 0], tsinf.disagreement[:, 0], rtol=1e-4)
    assert np.all(spread_ts1[:, -1] < 0.6 * tsinf.disagreement[:, -1])
    assert len({tuple(row) for row in np.round(spread_ts1, 5)}) > 1  # candidates drew differently
    # The permutations come from the injected generator.
    again = load_model(toy_path, propagation="TS1", rng=0, reward_fn=reward_fn)
    again.rollout(OBS0, actions(16, h))
    np.testing.assert_array_equal(again.disagreement, spread_ts1)


def test_sampling_uses_the_injected_generator(small, tmp_path):
    path = export_onnx(small, tmp_path / "m.onnx", action_low=[-1, -1], action_high=[1, 1])
    obs0, acts = np.array([1.0, 0.5, -1.0]), actions(8, 6, a=2)
    runs = [load_model(path, rng=seed).rollout(obs0, acts).copy() for seed in (0, 0, 1)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])
    assert np.all(np.isfinite(runs[0]))


def test_expectation_rollout_matches_pytorch(small, tmp_path):
    path = export_onnx(small, tmp_path / "m.onnx", action_low=[-1, -1], action_high=[1, 1], gamma=GAMMA)
    obs0, acts = np.array([1.0, 0.5, -1.0], np.float32), actions(6, 5, a=2)
    got = load_model(path, propagation="expectation").rollout(obs0, acts)
    want = np.zeros(6)
    with torch.no_grad():
        obs = torch.from_numpy(np.tile(obs0, (6, 1)))
        for t in range(5):
            obs, rew, _ = small.propagate(obs, torch.from_numpy(acts[:, t]), "expectation")
            want += GAMMA**t * rew.double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_buffers_follow_the_largest_k(small, tmp_path):
    path = export_onnx(small, tmp_path / "m.onnx", action_low=[-1, -1], action_high=[1, 1])
    model = load_model(path, propagation="expectation")
    obs0, acts = np.array([1.0, 0.5, -1.0]), actions(10, 4, a=2)
    first = model.rollout(obs0, acts[:3]).copy()
    full = model.rollout(obs0, acts).copy()
    assert model._cap == 10
    again = model.rollout(obs0, acts[:3])
    assert model._cap == 10 and again.shape == (3,) and model.disagreement.shape == (3, 4)
    np.testing.assert_allclose(again, first, rtol=1e-6)
    np.testing.assert_allclose(full[:3], first, rtol=1e-6)


@pytest.mark.parametrize("propagation", ["TS1", "TSinf", "expectation"])
def test_nonfinite_predictions_stay_nonfinite(tmp_path, propagation):
    deltas = DELTAS.copy()
    deltas[2] = np.nan
    path = export_onnx(constant_ensemble(deltas, REWARDS), tmp_path / "m.onnx", action_low=[-1],
                       action_high=[1])
    model = load_model(path, propagation=propagation, reward_fn=lambda o, a, n: n[:, 0], rng=0)
    assert not np.any(np.isfinite(model.rollout(OBS0, actions(4, 3))))


def test_model_without_learned_reward(tmp_path):
    path = export_onnx(constant_ensemble(DELTAS, REWARDS, learned_reward=False), tmp_path / "m.onnx",
                       action_low=[-1], action_high=[1], gamma=GAMMA)
    with pytest.raises(ModelError, match="predicts no reward"):
        load_model(path)
    model = load_model(path, propagation="expectation", reward_fn=lambda o, a, n: -np.abs(a[:, 0]))
    acts = actions(5, 4)
    np.testing.assert_allclose(model.rollout(OBS0, acts),
                               [discounted(-np.abs(acts[k, :, 0])) for k in range(5)], rtol=1e-5)
    bad = load_model(path, reward_fn=lambda o, a, n: np.zeros((len(o), 2)))
    with pytest.raises(ModelError, match="reward_fn returned shape"):
        bad.rollout(OBS0, acts)


def test_runtime_imports_no_torch(toy_path):
    code = ("import sys, numpy as np\n"
            "import rtmpc.models as models, rtmpc.models.runtime, rtmpc.models.common.buffer\n"
            f"m = models.load_model({str(toy_path)!r}, propagation='TS1', rng=0)\n"
            "m.rollout(np.zeros(2), np.zeros((4, 3, 1), np.float32))\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr


def test_ensemble_config_defaults_match_file(tmp_path):
    cfg = EnsembleConfig(members=2, hidden=4, layers=1, propagation="TS1", particles=4)
    path = export_onnx(ProbabilisticEnsemble(2, 1, cfg, seed=0), tmp_path / "m.onnx", action_low=[-1],
                       action_high=[1])
    model = load_model(path)
    assert (model.propagation, model.particles, model.members) == ("TS1", 4, 2)
    assert math.isfinite(float(model.rollout(OBS0, actions(3, 2))[0]))
