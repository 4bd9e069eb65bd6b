"""The rtmpc version stamped into saved files, and how a model file is saved. No torch.

Files are written atomically by :mod:`configs.rundir` (``atomic_write``,
``atomic_write_bytes``, ``atomic_path``): a reader sees the old file or the whole new
one, never a half-written one, so a killed run resumes from its run directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

import onnx
from rtmpc.configs.rundir import atomic_write_bytes

__all__ = ["rtmpc_version", "RTMPC_VERSION", "save_onnx", "PARITY_ATOL", "PARITY_RTOL", "OPSET"]

# Every family's export is checked against PyTorch to |onnx - torch| <= ATOL + RTOL * |torch|.
PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-4
OPSET = 18  # the ONNX opset exports use: the dynamo exporter implements 18 and newer; 17 is the floor

RTMPC_VERSION = "0.2.0"  # fallback when rtmpc is not installed (kept equal to pyproject.toml)


def rtmpc_version() -> str:
    """The installed rtmpc version (``rtmpc.__version__``), or :data:`RTMPC_VERSION` from a source tree."""
    try:
        return metadata.version("rtmpc")
    except metadata.PackageNotFoundError:
        return RTMPC_VERSION


def save_onnx(proto: onnx.ModelProto, path: str | os.PathLike, meta: Mapping[str, str], doc: str) -> Path:
    """Write an rtmpc model file: ``meta`` as its metadata_props (replacing any), producer
    "rtmpc" at ``meta["rtmpc_version"]``, ``doc`` as its doc string; checked by onnx, then
    written atomically. Returns the path."""
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "rtmpc"
    proto.producer_version = meta.get("rtmpc_version", rtmpc_version())
    proto.doc_string = doc
    onnx.checker.check_model(proto)
    return atomic_write_bytes(path, proto.SerializeToString())
