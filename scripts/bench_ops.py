"""``rtmpc bench ops``: where one call of an exported model spends its time, per operator.

Opens ``--model`` as the runtime does (the same session options and, for PETS, the same
optimizers switched off), feeds random inputs whose free dimensions are ``--rows`` unless
named with ``--dim NAME=SIZE``, and profiles ``--calls`` calls with ONNX Runtime's
profiler: the kernel time of every operator type (after ONNX Runtime's fusions, so SiLU
shows as ``QuickGelu``, Gemm + ReLU as ``FusedGemm``), per call and as a share, with how
many nodes of each type ran. Control-flow nodes (``If``, ``Loop``, ``Scan``: the latent
model's planning graph) are listed apart: their time holds that of the nodes inside them,
which are counted in the table.

    rtmpc bench ops --model runs/quickstart/model.onnx --rows 300            # PETS: rows per member
    rtmpc bench ops --model M --rows 512 --dim H=3 --dim n=0 --dim Hp=3      # latent: K candidates, horizon
    rtmpc bench ops --model M --rows 0 --dim n=24 --dim Hp=3 --dim H=3      # latent: the policy-prior call

(The latent graph computes the candidates' returns when n = 0 and the prior when K = 0.)
"""

from __future__ import annotations

import collections
import json
import os
import tempfile
import time
from pathlib import Path

from . import flags


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="exported model (model.onnx, model.int8.onnx, ...)")
    p.add_argument("--rows", type=flags.count(1, 10**7), default=1000,
                   help="size of the inputs' free dimensions (PETS: rows per "
                                                         "member)")
    p.add_argument("--dim", dest="dims", action="append", default=[], metavar="NAME=SIZE",
                   help="size of the free dimension NAME (as the model's inputs name it); repeatable")
    p.add_argument("--threads", type=flags.threads(), default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--calls", type=flags.count(1, 10**7), default=50,
                   help="timed calls, after 5 warm-up calls (the profile averages those in too)")
    p.add_argument("--json", action="store_true", help="end with one JSON line")


CONTROL_FLOW = ("If", "Loop", "Scan")


def parse_dims(items: list[str]) -> dict[str, int]:
    from rtmpc.configs import ConfigError

    dims = {}
    for item in items:
        name, sep, size = item.partition("=")
        if not sep or not name.strip() or not size.strip().isdigit():
            raise ConfigError(f"--dim {item!r}: expected NAME=SIZE with SIZE >= 0, e.g. --dim H=3")
        dims[name.strip()] = int(size)
    return dims


def _inputs(sess, rows: int, dims: dict[str, int]) -> dict:
    import numpy as np

    types = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
             "tensor(int32)": np.int32, "tensor(bool)": np.bool_}
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else dims.get(d, rows) for d in i.shape]
        dtype = types.get(i.type)
        if dtype is None:
            from rtmpc.models.base import ModelError

            raise ModelError(f"input {i.name!r} has type {i.type}, which bench ops cannot fill")
        feeds[i.name] = rng.standard_normal(shape).astype(dtype) if dtype in (np.float32, np.float64) \
            else np.zeros(shape, dtype)
    return feeds


def profile(path: Path, rows: int, threads: int, calls: int, dims: dict[str, int] | None = None) -> dict:
    """Per-operator kernel time of ``calls`` calls; the whole call timed without the profiler too."""
    from rtmpc.models.runtime import open_session

    plain = open_session(path, threads)  # a ModelError for a missing or damaged file
    kind = plain.get_modelmeta().custom_metadata_map.get("kind")
    free = {d for i in plain.get_inputs() for d in i.shape if not isinstance(d, int)}
    unknown = sorted(set(dims or {}) - free)
    if unknown:
        from rtmpc.configs import ConfigError

        raise ConfigError(f"--dim {', '.join(unknown)}: the model's inputs have no such dimension "
                          f"(free dimensions: {', '.join(sorted(map(str, free))) or 'none'})")
    feeds = _inputs(plain, rows, dims or {})
    for _ in range(5):
        plain.run(None, feeds)
    t = time.perf_counter()
    for _ in range(calls):
        plain.run(None, feeds)
    call_ms = 1e3 * (time.perf_counter() - t) / calls
    with tempfile.TemporaryDirectory(prefix="rtmpc-ops-") as tmp:
        sess = open_session(path, threads, profile_prefix=str(Path(tmp) / "ops"))
        for _ in range(5):
            sess.run(None, feeds)
        for _ in range(calls):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    us, nodes = collections.Counter(), collections.Counter()
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            op = ev.get("args", {}).get("op_name", "?")
            us[op] += ev["dur"]
            nodes[op] += 1
    ran = 5 + calls  # warm-up calls are profiled too
    total = sum(v for op, v in us.items() if op not in CONTROL_FLOW) or 1
    ops = [{"op": op, "ms_per_call": v / ran / 1e3, "share": v / total, "nodes": nodes[op] // ran}
           for op, v in us.most_common() if op not in CONTROL_FLOW]
    control = [{"op": op, "ms_per_call": us[op] / ran / 1e3, "nodes": nodes[op] // ran}
               for op in CONTROL_FLOW if op in us]
    return {"model": str(path), "kind": kind, "rows": rows, "dims": dims or {}, "threads": threads, "calls": calls,
            "call_ms": call_ms, "kernel_ms": total / ran / 1e3, "ops": ops, "control_flow": control}


def run(args) -> int:
    from rtmpc.configs import ConfigError

    if args.rows < 1 or args.threads < 1 or args.calls < 1:
        raise ConfigError("bench ops needs --rows >= 1, --threads >= 1 and --calls >= 1")
    r = profile(Path(args.model), args.rows, args.threads, args.calls, parse_dims(args.dims))
    named = "".join(f", {k} = {v}" for k, v in r["dims"].items())
    print(f"operators of {r['model']} ({r['kind']}), free dimensions = {args.rows}{named}, ONNX Runtime {args.threads} "
          f"thread(s), {os.cpu_count()} cores: a call {r['call_ms']:.3f} ms (profiler off), kernels "
          f"{r['kernel_ms']:.3f} ms (profiler on)")
    print(f"{'op':24s} {'ms/call':>9s} {'share':>6s} {'nodes':>5s}")
    for o in r["ops"]:
        print(f"{o['op']:24s} {o['ms_per_call']:9.3f} {100 * o['share']:5.1f}% {o['nodes']:5d}")
    for o in r["control_flow"]:
        print(f"{o['op']:24s} {o['ms_per_call']:9.3f}      - {o['nodes']:5d}  (holds the nodes inside it)")
    if args.json:
        print(json.dumps(r))
    return 0
