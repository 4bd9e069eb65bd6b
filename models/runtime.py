"""Load an exported model into ONNX Runtime as its family's RolloutModel. No torch.

``load_model(path, threads=1)`` reads the metadata stored in the ONNX file, builds an
``InferenceSession`` with explicit thread counts (``intra_op_num_threads=threads``,
``inter_op_num_threads=1``, sequential execution, spinning off unless asked for) and
returns the RolloutModel of the family the file's ``kind`` names, looked up in
:mod:`rtmpc.models.registry` (e.g. :class:`rtmpc.models.pets.runtime.PETSRolloutModel`
for ``kind = "pets"``). A family may switch ONNX Runtime graph optimizers off for its
sessions (its ``DISABLED_OPTIMIZERS``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnxruntime as ort
from rtmpc.models.base import ModelError, Policy, RolloutModel

__all__ = ["load_model", "open_session", "open_onnx", "session_options", "read_metadata", "family_of"]


def session_options(threads: int = 1, allow_spinning: bool = False) -> ort.SessionOptions:
    """Explicit ONNX Runtime options: ``threads`` intra-op threads, one inter-op thread,
    sequential execution, full graph optimisation, spinning off unless asked for."""
    if int(threads) < 1:
        raise ModelError(f"threads = {threads} must be >= 1")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def open_onnx(path: str | os.PathLike, threads: int, allow_spinning: bool,
              disabled_optimizers: tuple[str, ...] = (), profile_prefix: str | None = None) -> ort.InferenceSession:
    """An ONNX Runtime session of ``path`` with :func:`session_options` and those optimizers off;
    a missing or damaged file is a one-line ModelError."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file {p} not found: train a model (rtmpc train) or export one (rtmpc export)")
    _refuse_external_data(p)
    opts = session_options(threads, allow_spinning)
    if profile_prefix is not None:
        opts.enable_profiling, opts.profile_file_prefix = True, str(profile_prefix)
    try:
        return ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(disabled_optimizers))
    except Exception as err:  # ORT raises its own exception types for a bad protobuf
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"model file {p} is damaged or not an ONNX model ({first[:200]}): "
                         f"export it again") from None


def _refuse_external_data(p: Path) -> None:
    """An rtmpc model keeps its weights inside the file; one that points at external data (a
    path ONNX Runtime would open, possibly outside the model's folder) is refused."""
    import onnx

    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception:  # not a protobuf: ONNX Runtime's own message says so, below
        return
    graphs, external = [proto.graph], []
    while graphs:
        g = graphs.pop()
        external += [t.name for t in g.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        for node in g.node:
            graphs += [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
            graphs += [sub for a in node.attribute if a.type == onnx.AttributeProto.GRAPHS for sub in a.graphs]
    if external:
        raise ModelError(f"model file {p} keeps {len(external)} tensor(s) in external files (e.g. {external[0]!r}): "
                         f"rtmpc loads only self-contained models; export it again with rtmpc export")


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX model file (a ModelError if it cannot be read)."""
    return dict(open_onnx(path, 1, False).get_modelmeta().custom_metadata_map)


def family_of(path, meta: dict[str, str]):
    """The family package of the model file ``path`` whose metadata is ``meta`` (a one-line
    ModelError for a file that is no rtmpc model or of a family this install lacks)."""
    from rtmpc.models import registry

    kind = meta.get("kind")
    if kind is None:
        raise ModelError(f"model file {path} is an ONNX model but not an rtmpc model (no 'kind' in its "
                         f"metadata): export it with rtmpc export")
    if kind not in registry.FAMILIES:
        raise ModelError(f"model file {path} holds a {kind!r} model; this runtime loads "
                         f"{', '.join(sorted(registry.FAMILIES))}")
    return registry.family(kind)


def load_model(path: str | os.PathLike, threads: int = 1, *, allow_spinning: bool = False,
               **options: Any) -> RolloutModel | Policy:
    """Load an rtmpc ``.onnx`` file as the RolloutModel of its family, or, for a policy file
    (``role = "policy"``, :mod:`rtmpc.models.common.policy`), as that Policy.

    threads: CPU threads a rollout may use: the session's ONNX Runtime intra-op threads
    (inter-op is always 1, execution sequential); a PETS model by default splits its
    candidates into that many lanes instead (``parallel="lanes"``, measured faster);
    allow_spinning: let idle ORT worker threads busy-wait (lower latency, burns a core;
    only ``parallel="intra"`` has such workers);
    options: passed to the family's model, e.g. for PETS ``propagation``, ``particles``,
    ``rng``, ``reward_fn``, ``gamma``, ``parallel`` (see :class:`PETSRolloutModel`).
    A missing, damaged or foreign file is a ModelError with a one-line message.
    """
    sess = open_session(path, threads, allow_spinning=allow_spinning)
    meta = dict(sess.get_modelmeta().custom_metadata_map)
    if meta.get("role") not in (None, "policy"):  # e.g. MBPO's termination head, a part of a run
        raise ModelError(f"model file {path} is the {meta['role']!r} part of an rtmpc {meta.get('kind')} run, not a "
                         f"model or policy to deploy: use the run's model.onnx")
    if meta.get("role") == "policy":
        from rtmpc.models.common.policy import OnnxPolicy

        return OnnxPolicy(sess, meta, str(path), **{k: v for k, v in options.items() if k in ("rng", "deterministic")})
    return family_of(path, meta).runtime_class()(sess, meta, str(path), **options)


def open_session(path: str | os.PathLike, threads: int = 1, *, allow_spinning: bool = False,
                 profile_prefix: str | None = None) -> ort.InferenceSession:
    """The ONNX Runtime session of a model file, opened as :func:`load_model` opens it
    (:func:`session_options`; the optimizers its family switches off, off);
    ``profile_prefix``: write ONNX Runtime's profile (``end_profiling()``) there."""
    sess = open_onnx(path, threads, allow_spinning, profile_prefix=profile_prefix)
    meta = dict(sess.get_modelmeta().custom_metadata_map)
    if meta.get("kind") is None or meta.get("role") == "policy":
        return sess
    disabled = family_of(path, meta).DISABLED_OPTIMIZERS
    if disabled:
        sess = open_onnx(path, threads, allow_spinning, disabled, profile_prefix)
    return sess
