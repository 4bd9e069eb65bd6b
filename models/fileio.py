"""Atomic file writes and the rtmpc version stamped into saved files. No torch.

A file is written to a temporary file in the same directory, flushed and fsync'ed,
then renamed over the target with :func:`os.replace`, so a reader sees either the
old file or the whole new one, never a half-written one (a killed run resumes from
its run directory).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "atomic_write_bytes", "rtmpc_version", "RTMPC_VERSION"]

RTMPC_VERSION = "0.1.0"  # fallback when rtmpc is not installed (kept equal to setup.py)


def rtmpc_version() -> str:
    """The installed rtmpc version, or :data:`RTMPC_VERSION` from a source tree."""
    try:
        return metadata.version("rtmpc")
    except metadata.PackageNotFoundError:
        return RTMPC_VERSION


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, rename it to ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data))


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; not every platform can open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory: the rename is still atomic
    finally:
        os.close(fd)
