"""A checkpoint carrying pickled code is refused without running it (rtmpc export and --resume
load checkpoints that may come from someone else's run)."""

from __future__ import annotations

import os

import pytest
import torch
from rtmpc.models.base import ModelError
from rtmpc.models.common.ensemble import load_ensemble
from rtmpc.models.tdmpc.config import LatentTrainConfig
from rtmpc.models.tdmpc.model import load_latent, load_latent_learner


class _Payload:
    """Unpickling this runs ``os.system`` (writes a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("load", [load_ensemble, load_latent, lambda p: load_latent_learner(p, LatentTrainConfig())],
                         ids=["pets", "latent", "latent-learner"])
def test_a_pickle_payload_is_refused_and_not_run(tmp_path, load):
    marker = tmp_path / "ran"
    ckpt = tmp_path / "evil.pt"
    torch.save({"format": 1, "kind": "latent", "state": {}, "extra": _Payload(marker)}, ckpt)
    with pytest.raises(ModelError):
        load(ckpt)
    assert not marker.exists(), "the checkpoint's code ran"


def test_an_onnx_file_with_external_data_is_refused(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from rtmpc.models.runtime import load_model

    weight = numpy_helper.from_array(np.ones((2, 2), np.float32), name="W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [weight])
    model = helper.make_model(graph)
    entry = model.metadata_props.add()
    entry.key, entry.value = "kind", "pets"
    path = tmp_path / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").is_file()
    with pytest.raises(ModelError, match="external files"):
        load_model(path)


def _with_meta(src, dst, **changes):
    import onnx

    proto = onnx.load(str(src))
    for entry in proto.metadata_props:
        if entry.key in changes:
            entry.value = str(changes[entry.key])
    onnx.save(proto, str(dst))
    return dst


@pytest.mark.parametrize("key,value", [("members", 10**9), ("obs_dim", 0), ("particles", 10**8), ("act_dim", -1)])
def test_pets_metadata_sizes_are_bounded(tmp_path, key, value):
    import numpy as np
    from rtmpc.models.common.ensemble import ProbabilisticEnsemble
    from rtmpc.models.common.ensemble_config import EnsembleConfig
    from rtmpc.models.common.ensemble_export import export_onnx
    from rtmpc.models.runtime import load_model

    model = ProbabilisticEnsemble(2, 1, EnsembleConfig(members=2, hidden=8, layers=1), seed=0).eval()
    good = export_onnx(model, tmp_path / "good.onnx", action_low=np.array([-1.0]), action_high=np.array([1.0]))
    load_model(good)
    bad = _with_meta(good, tmp_path / "bad.onnx", **{key: value})
    with pytest.raises(ModelError, match=rf"declares {key} = {value}, outside 1\.\.\d+"):
        load_model(bad)


def test_latent_metadata_sizes_are_bounded(tmp_path):
    import numpy as np
    from rtmpc.models.runtime import load_model
    from rtmpc.models.tdmpc.config import LatentModelConfig
    from rtmpc.models.tdmpc.export import export_latent
    from rtmpc.models.tdmpc.model import LatentWorldModel

    cfg = LatentModelConfig(latent_dim=8, hidden=16, enc_hidden=16, num_q=2, num_bins=11)
    model = LatentWorldModel(3, 1, cfg, np.array([-1.0]), np.array([1.0]), seed=0).eval()
    good = export_latent(model, tmp_path / "good.onnx", gamma=0.9)
    load_model(good)
    for key in ("latent_dim", "num_q"):
        with pytest.raises(ModelError, match=rf"declares {key} = 100000000, outside"):
            load_model(_with_meta(good, tmp_path / f"{key}.onnx", **{key: 10**8}))
