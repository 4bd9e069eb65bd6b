"""Opt-in reduced precision: an int8 copy of an exported PETS-format ensemble (PETS planning, MBPO rollouts). No torch.

``quantize_int8(src, dst)`` writes ``dst`` (by convention ``model.int8.onnx`` beside
``model.onnx``): the same graph, inputs, outputs and metadata, with every weight matrix
stored as int8 and evaluated by ONNX Runtime's dynamic quantisation (activations are
quantised to uint8 per call from their observed range, weights per output column with
``per_channel``; the products run as integer GEMMs and are rescaled to float32). The
normalisers are folded into the first layer and the head, so nothing else changes, and
the runtime and planners load the file exactly as the float32 one (``precision = "int8"``
in its metadata).

ONNX Runtime quantises ``MatMul`` dynamically but not ``Gemm``, the op the "members"
layout exports, so each ``Gemm`` (alpha = beta = 1, no transposed input) is first
rewritten as ``MatMul`` + ``Add``; ONNX Runtime fuses the pair back (with the rescale)
into one ``DynamicQuantizeMatMul``.

The input layer and the head stay float32 by default (``keep``). The input layer reads
raw observations (the input normaliser is folded into its weights), whose entries differ
in scale by orders of magnitude, and dynamic quantisation gives an activation one scale
per tensor: quantising it moved the cartpole model's predicted changes by 4.7% of their
spread on average (138% at worst) and quadrupled the reward error. Both layers hold ~4%
of the FLOPs, so quantising them saves less than the extra quantise pass costs. Measured
on the quickstart's cartpole model (5 x 3x200 SiLU; 1 thread, one rollout of K = 1000
candidates x H = 15, 1875 buffer transitions; this 2-core machine, quiet):

    int8 layers          rollout ms  vs fp32   mean / max change diff   next-state MSE
    fp32 (none)              151       1.00          -                    0.0271
    all                      116       1.30       4.7% / 138%             0.0288
    all but input            111       1.36       1.1% / 11%              0.0272
    hidden only (default)    107       1.42       0.6% / 7.6%             0.0272

ONNX Runtime fuses each quantised layer into ``DynamicQuantizeMatMul`` (VNNI kernels on
this CPU); SiLU stays a float32 pass between them.

Accuracy is the caller's to check: :func:`compare_predictions` runs both files on the
same inputs and reports the largest difference of the predicted means, relative to the
spread of the float32 predictions, and each file's one-step error against known next
states (``rtmpc export RUN --precision int8`` prints both on the run's buffer).
Numbers for the cartpole model: docs/planner_benchmark.md.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from rtmpc.models.base import ModelError
from rtmpc.models.common.fileio import save_onnx

__all__ = ["quantize_int8", "gemm_to_matmul", "compare_predictions", "int8_path", "PRECISIONS"]

PRECISIONS = ("fp32", "int8")


class _QuietQuantizer(logging.Filter):
    """The quantiser logs to the root logger: advice on a pre-pass, a line per tensor."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "root" or record.levelno >= logging.ERROR


def int8_path(path: str | os.PathLike) -> Path:
    """Where the int8 copy of ``path`` goes: ``model.onnx`` -> ``model.int8.onnx``."""
    p = Path(path)
    stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.name
    return p.with_name(stem + ".int8.onnx")


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Move ``Constant`` nodes holding a tensor (how the TorchScript exporter writes the
    weights) into the graph's initializers, where the quantiser looks for weights."""
    nodes = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def gemm_to_matmul(proto: onnx.ModelProto) -> int:
    """Rewrite, in place, every ``Gemm`` whose B is a constant as ``MatMul`` (+ ``Add`` of
    C when there is one), so that dynamic quantisation reaches it. Returns how many were
    rewritten. A Gemm with alpha or beta other than 1 or a transposed A stays as it is."""
    graph = proto.graph
    _constants_to_initializers(graph)
    inits = {t.name: t for t in graph.initializer}
    nodes, done = [], 0
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        b_name = node.input[1]
        if attrs.get("transB", 0):
            w = numpy_helper.to_array(inits[b_name]).T.copy()
            b_name = f"{b_name}__t"
            graph.initializer.append(numpy_helper.from_array(w, b_name))
        has_c = len(node.input) > 2 and node.input[2]
        out = f"{node.output[0]}__mm" if has_c else node.output[0]
        nodes.append(onnx.helper.make_node("MatMul", [node.input[0], b_name], [out], name=f"{node.name}_matmul"))
        if has_c:
            nodes.append(onnx.helper.make_node("Add", [out, node.input[2]], [node.output[0]], name=f"{node.name}_add"))
        done += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return done


def _layers(proto: onnx.ModelProto, n_in: int, which: tuple[str, ...]) -> list[str]:
    """Names of the MatMul nodes of the layers in ``which``: "input" (weights [O + A, .]),
    "head" (the last MatMul of each member, by graph order)."""
    inits = {t.name: t.dims for t in proto.graph.initializer}
    mm = [n for n in proto.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    first = [n.name for n in mm if inits[n.input[1]][0] == n_in]
    names = list(first) if "input" in which else []
    if "head" in which:  # the layer before the next member's input layer, and the very last
        starts = [i for i, n in enumerate(mm) if n.name in first]
        names += [mm[i - 1].name for i in starts[1:]] + [mm[-1].name]
    return names


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike | None = None, *,
                  per_channel: bool = True, keep: tuple[str, ...] = ("input", "head")) -> Path:
    """Write an int8 copy of the rtmpc ONNX model ``src`` to ``dst`` (default
    :func:`int8_path` of ``src``), atomically; returns ``dst``. The metadata is copied,
    with ``precision = "int8"`` added. A file that is not an rtmpc PETS model float32
    export is a ModelError.

    per_channel: one weight scale per output column (else one per matrix);
    keep: layers left in float32, "input" and/or "head" (see the module docstring: both
    are kept by default, which is more accurate *and* faster)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = Path(src)
    dst = Path(dst) if dst is not None else int8_path(src)
    if not src.is_file():
        raise ModelError(f"model file {src} not found: export one first (rtmpc export RUN_DIR)")
    try:
        proto = onnx.load(str(src))
    except Exception as err:  # protobuf's DecodeError and friends
        raise ModelError(f"model file {src} is damaged or not an ONNX model ({type(err).__name__}): "
                         f"export it again") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("kind") != "pets":
        raise ModelError(f"model file {src} holds a {meta.get('kind', 'non-rtmpc')!r} model: int8 export is "
                         f"for PETS ensembles")
    if meta.get("precision", "fp32") != "fp32":
        raise ModelError(f"model file {src} is already {meta['precision']}: quantise the float32 export")
    if gemm_to_matmul(proto) == 0 and not any(n.op_type == "MatMul" for n in proto.graph.node):
        raise ModelError(f"model file {src} has no weight matrices to quantise")
    exclude = _layers(proto, int(meta["obs_dim"]) + int(meta["act_dim"]), keep)
    with tempfile.TemporaryDirectory(prefix="rtmpc-int8-") as tmp:
        plain = os.path.join(tmp, "fp32.onnx")
        quant = os.path.join(tmp, "int8.onnx")
        onnx.save(proto, plain)
        root = logging.getLogger()
        quiet = _QuietQuantizer()
        root.addFilter(quiet)
        try:
            quantize_dynamic(plain, quant, weight_type=QuantType.QInt8, per_channel=per_channel,
                             op_types_to_quantize=["MatMul"], nodes_to_exclude=exclude)
        finally:
            root.removeFilter(quiet)
        out = onnx.load(quant)
    meta.update({"precision": "int8", "quantization": "dynamic, weights int8 "
                 + ("per output channel" if per_channel else "per tensor") + ", activations uint8 per call"})
    return save_onnx(out, dst, meta, proto.doc_string + " (int8 weights)")


def _predict(path: Path, obs: np.ndarray, act: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Every member's predicted state change (E, N, O) and reward mean (E, N) or None."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    e = int(sess.get_modelmeta().custom_metadata_map["members"])
    feed = {"obs": np.ascontiguousarray(np.broadcast_to(obs, (e,) + obs.shape)),
            "act": np.ascontiguousarray(np.broadcast_to(act, (e,) + act.shape))}
    got = dict(zip(names, sess.run(names, feed), strict=True))
    return got["delta_mean"].astype(np.float64), got.get("reward_mean")


def compare_predictions(fp32: str | os.PathLike, int8: str | os.PathLike, obs: np.ndarray, act: np.ndarray,
                        next_obs: np.ndarray | None = None, reward: np.ndarray | None = None) -> dict:
    """Both files on the same transitions (obs (N, O), act (N, A), optionally the true
    next_obs (N, O) and reward (N,)). Returns, for every member's predicted state change:
    ``max_abs_diff`` (int8 vs fp32, raw units), ``max_rel_diff`` and ``mean_rel_diff``
    (relative to each dimension's spread, the std of the fp32 predicted changes over the
    rows); with ``next_obs`` each file's one-step ``mse_fp32`` / ``mse_int8`` of the
    predicted next state (mean over members, rows and dimensions, raw units); likewise
    ``reward_mse_*`` when the model learns the reward and ``reward`` is given."""
    obs = np.asarray(obs, np.float32)
    act = np.asarray(act, np.float32)
    if obs.ndim != 2 or act.ndim != 2 or len(obs) != len(act) or len(obs) < 2:
        raise ValueError(f"obs {obs.shape} and act {act.shape} must be (N, O) and (N, A) with N >= 2")
    df, rf = _predict(Path(fp32), obs, act)
    dq, rq = _predict(Path(int8), obs, act)
    spread = np.maximum(df.reshape(-1, df.shape[-1]).std(axis=0), 1e-9)
    diff = np.abs(dq - df)
    out = {"rows": int(len(obs)), "max_abs_diff": float(diff.max()),
           "max_rel_diff": float((diff / spread).max()), "mean_rel_diff": float((diff / spread).mean())}
    if next_obs is not None:
        change = (np.asarray(next_obs, np.float64) - obs)[None]
        out["mse_fp32"] = float(np.mean((df - change) ** 2))
        out["mse_int8"] = float(np.mean((dq - change) ** 2))
    if reward is not None and rf is not None:
        r = np.asarray(reward, np.float64).reshape(1, -1)
        out["reward_mse_fp32"] = float(np.mean((rf - r) ** 2))
        out["reward_mse_int8"] = float(np.mean((rq - r) ** 2))
    return out
