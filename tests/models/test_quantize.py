"""The opt-in int8 export: same function within a stated error, same runtime, clear errors."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from pets_toys import SMALL, sine_buffer
from rtmpc.models import ModelError, TrainConfig, load_model
from rtmpc.models.common.ensemble import ProbabilisticEnsemble, fit_ensemble
from rtmpc.models.common.ensemble_export import export_onnx
from rtmpc.models.common.quantize import compare_predictions, gemm_to_matmul, int8_path, quantize_int8
from rtmpc.models.runtime import read_metadata


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An ensemble fitted on the sine system, exported (fp32) and quantised (int8)."""
    torch.set_num_threads(1)
    buf = sine_buffer(2000, np.random.default_rng(0))
    model = ProbabilisticEnsemble(1, 1, SMALL, seed=0)
    fit_ensemble(model, buf, TrainConfig(batch_size=64, epochs=60, patience=5, lr=3e-3), rng=1)
    path = export_onnx(model.eval(), tmp_path_factory.mktemp("q") / "model.onnx", action_low=[-1.0],
                       action_high=[1.0], gamma=0.9)
    return path, quantize_int8(path)


def run(path, obs, act):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    e = int(read_metadata(path)["members"])
    return sess.run(None, {"obs": np.repeat(obs[None], e, 0), "act": np.repeat(act[None], e, 0)})


def test_gemm_to_matmul_keeps_the_function(exported, tmp_path):
    path, _ = exported
    proto = onnx.load(str(path))
    assert gemm_to_matmul(proto) == 5 * 3  # members x (2 layers + head)
    assert not any(n.op_type == "Gemm" for n in proto.graph.node)
    onnx.save(proto, str(tmp_path / "mm.onnx"))
    rng = np.random.default_rng(3)
    obs, act = rng.uniform(-1, 1, (64, 1)).astype(np.float32), rng.uniform(-1, 1, (64, 1)).astype(np.float32)
    for a, b in zip(run(path, obs, act), run(tmp_path / "mm.onnx", obs, act), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_int8_file_has_integer_layers_and_the_metadata(exported):
    path, q = exported
    assert q == int8_path(path) and q.name == "model.int8.onnx"
    ops = [n.op_type for n in onnx.load(str(q)).graph.node]
    assert ops.count("MatMulInteger") == 5  # the hidden layer of each member; input and head stay fp32
    fp32, int8 = read_metadata(path), read_metadata(q)
    assert int8.pop("precision") == "int8" and "precision" not in fp32 and int8.pop("quantization")
    assert int8 == fp32


def test_int8_predicts_held_out_transitions_as_well_as_fp32(exported):
    """Stated tolerance: predicted changes within 5% of their spread on average, and the
    one-step error on held-out data no more than 10% above the fp32 file's."""
    path, q = exported
    held_out = sine_buffer(500, np.random.default_rng(7))
    c = compare_predictions(path, q, held_out.obs, held_out.act, held_out.next_obs, held_out.reward)
    assert c["mean_rel_diff"] < 0.05, c
    assert c["mse_int8"] <= 1.1 * c["mse_fp32"] and c["reward_mse_int8"] <= 1.1 * c["reward_mse_fp32"], c
    assert c["max_abs_diff"] > 0  # it is a different model: the weights really are int8


def test_all_layers_int8_is_worse_than_the_default(exported, tmp_path):
    path, q = exported
    every = quantize_int8(path, tmp_path / "all.onnx", keep=())
    assert [n.op_type for n in onnx.load(str(every)).graph.node].count("MatMulInteger") == 15
    x = sine_buffer(500, np.random.default_rng(8))
    default = compare_predictions(path, q, x.obs, x.act)
    assert compare_predictions(path, every, x.obs, x.act)["mean_rel_diff"] > default["mean_rel_diff"]


def test_runtime_plans_over_the_int8_file(exported):
    path, q = exported
    rng = np.random.default_rng(0)
    acts = rng.uniform(-1, 1, (200, 5, 1)).astype(np.float32)
    r32 = load_model(path, propagation="expectation").rollout(np.array([0.3], np.float32), acts)
    r8 = load_model(q, propagation="expectation").rollout(np.array([0.3], np.float32), acts)
    assert np.all(np.isfinite(r8))
    assert np.corrcoef(r32, r8)[0, 1] > 0.99
    assert np.argmax(r8) in np.argsort(r32)[-10:]  # int8's best is among fp32's ten best of 200


def test_bad_inputs_are_model_errors(exported, tmp_path):
    path, q = exported
    with pytest.raises(ModelError, match="not found"):
        quantize_int8(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="damaged"):
        quantize_int8(tmp_path / "junk.onnx")
    with pytest.raises(ModelError, match="already int8"):
        quantize_int8(q, tmp_path / "again.onnx")
