"""``rtmpc bench activation``: what SiLU costs next to the matrix products of an MLP.

The planner benchmark's FLOP bound counts only the matrix products; bias, activation and
everything else count as nothing. This bench measures, over ``--rows`` rows, in ONNX
Runtime at ``--threads`` intra-op threads, the time per output element of

- ``matmul``: a hidden layer's matrix product alone (``--width`` -> ``--width``, ``Gemm``
  without bias; ONNX Runtime packs its constant weights once, as it does the layer's);
  ``matmul_op``: the same as a ``MatMul`` node,
- ``layer``: the hidden layer as rtmpc exports it (Gemm with bias, then x * sigmoid(x),
  which ONNX Runtime fuses into one ``QuickGelu`` pass),
- ``quickgelu`` / ``relu``: ONNX Runtime's SiLU pass and its ReLU pass alone (ReLU: about
  the least any separate elementwise pass over a layer's output costs),
- ``in_matmul`` / ``in_layer``: the same for the input layer (``--inputs`` -> ``--width``),
  whose product is small but whose SiLU is as wide as a hidden layer's,

each also as a share of ``matmul``, in rounds (every call in turn, 7 times; medians). The
products' time over the layers' time is then the most of the FLOP bound a planner over
such a network can reach in ONNX Runtime, before sampling, propagation, the head and the
other operators of a call: for one hidden layer, and for the network of one input layer and
``--hidden-layers`` hidden layers (PETS's default workload: 6 inputs, 3 x 200 units).
"""

from __future__ import annotations

import json
import os
import time
from statistics import median

from . import flags

COLUMNS = ("matmul", "matmul_op", "layer", "quickgelu", "relu", "in_matmul", "in_layer")


def add_arguments(p) -> None:
    p.add_argument("--rows", type=flags.count(1, 10**7), default=1000,
                   help="rows per call (the planner: candidates x particles "
                                                         "per member)")
    p.add_argument("--width", type=int, default=200, help="hidden units")
    p.add_argument("--inputs", type=int, default=6, help="the input layer's inputs (PETS: obs + action dims)")
    p.add_argument("--hidden-layers", type=int, default=2, help="width -> width layers after the input layer "
                                                                "(the PETS workload's 3 hidden layers: 2)")
    p.add_argument("--threads", type=flags.threads(), default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--seconds", type=float, default=0.5, help="time per operator, spread over 7 rounds (medians kept)")
    p.add_argument("--json", action="store_true", help="end with one JSON line")


def ort_call(nodes, inputs, inits, out_shape, threads: int, spinning: bool = False):
    """One ONNX Runtime session over ``nodes`` (inputs: (name, array) pairs, output ``y``),
    called through IOBinding on fixed buffers; returns the callable."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "layer",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape)) for n, a in inputs],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 9
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    opts.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    y = np.empty(out_shape, np.float32)
    io = sess.io_binding()
    for name, a in inputs:
        io.bind_input(name, "cpu", 0, np.float32, a.shape, a.ctypes.data)
    io.bind_output("y", "cpu", 0, np.float32, y.shape, y.ctypes.data)
    keep = (inputs, y)
    return lambda: sess.run_with_iobinding(io) or keep


def _ort_calls(rows: int, inputs: int, width: int, threads: int) -> dict:
    """The timed calls: a hidden layer (width -> width) and an input layer (inputs -> width),
    each with and without its bias and SiLU, and the elementwise passes alone."""
    import numpy as np
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    shape = (rows, width)
    calls = {}
    for prefix, n_in in (("", width), ("in_", inputs)):
        x = rng.standard_normal((rows, n_in)).astype(np.float32)
        w = numpy_helper.from_array((rng.standard_normal((n_in, width)) / np.sqrt(n_in)).astype(np.float32), "w")
        b = numpy_helper.from_array(rng.standard_normal(width).astype(np.float32) * 0.1, "b")
        calls[prefix + "matmul"] = ort_call([helper.make_node("Gemm", ["x", "w"], ["y"])], [("x", x)], [w], shape,
                                             threads)
        calls[prefix + "layer"] = ort_call([helper.make_node("Gemm", ["x", "w", "b"], ["h"]),
                                             helper.make_node("Sigmoid", ["h"], ["s"]),
                                             helper.make_node("Mul", ["h", "s"], ["y"])], [("x", x)], [w, b], shape,
                                            threads)
    x = rng.standard_normal(shape).astype(np.float32)
    calls["matmul_op"] = ort_call([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", x)], [
        numpy_helper.from_array((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), "w")],
        shape, threads)
    silu = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])]
    calls["quickgelu"] = ort_call(silu, [("x", x)], [], shape, threads)
    calls["relu"] = ort_call([helper.make_node("Relu", ["x"], ["y"])], [("x", x)], [], shape, threads)
    return calls


def _rounds(calls: dict, seconds: float, rounds: int = 7) -> list[dict]:
    """Seconds per call of every entry, measured in turn, ``rounds`` times over: this VM's
    speed drifts, so each round compares the entries at about the same moment."""
    batch = {}
    for name, fn in calls.items():
        fn()
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < 0.02:
            fn()
            n += 1
        batch[name] = max(1, int(n * seconds / rounds / 0.02))
    out = []
    for _ in range(rounds):
        row = {}
        for name, fn in calls.items():
            t = time.perf_counter()
            for _ in range(batch[name]):
                fn()
            row[name] = (time.perf_counter() - t) / batch[name]
        out.append(row)
    return out


def run(args) -> int:
    from rtmpc.configs import ConfigError

    if args.rows < 1 or args.width < 16 or args.inputs < 1 or args.hidden_layers < 0 or args.threads < 1 \
            or args.seconds <= 0:
        raise ConfigError("bench activation needs --rows >= 1, --width >= 16, --inputs >= 1, --hidden-layers >= 0, "
                          "--threads >= 1 and --seconds > 0")
    elements = args.rows * args.width
    rounds = _rounds(_ort_calls(args.rows, args.inputs, args.width, args.threads), args.seconds)
    ns = {name: 1e9 * median(r[name] for r in rounds) / elements for name in COLUMNS}
    share = {name: median(r[name] / r["matmul"] for r in rounds) for name in COLUMNS}
    # the network: one input layer and --hidden-layers width -> width layers (the head left out)
    network = median((r["in_matmul"] + args.hidden_layers * r["matmul"])
                      / (r["in_layer"] + args.hidden_layers * r["layer"]) for r in rounds)
    layer = 1.0 / share["layer"]
    gemm_gflops = 2 * args.width / ns["matmul"]
    print(f"activation cost: {args.rows} rows, {args.inputs} -> {args.width} and {args.width} -> {args.width} layers, "
          f"ONNX Runtime {args.threads} thread(s), {os.cpu_count()} cores; hidden matmul {gemm_gflops:.1f} GFLOP/s")
    print(f"{'':12s} {'ns/element':>10s} {'x matmul':>9s}   (per output element; medians of {len(rounds)} rounds)")
    for name in COLUMNS:
        print(f"{name:12s} {ns[name]:10.3f} {share[name]:9.3f}")
    print(f"most of the FLOP bound reachable (matrix products over the whole layers, nothing else counted): "
          f"hidden layer {layer:.2f}, network of 1 input + {args.hidden_layers} hidden layers {network:.2f}")
    if args.json:
        print(json.dumps({"rows": args.rows, "inputs": args.inputs, "width": args.width,
                          "hidden_layers": args.hidden_layers, "threads": args.threads, "matmul_gflops": gemm_gflops,
                          "ns_per_element": ns, "share_of_matmul": share, "ceiling_layer": layer,
                          "ceiling_network": network}))
    return 0
