"""The rtmpc version stamped into saved files. No torch.

Files are written atomically by :mod:`configs.rundir` (``atomic_write``,
``atomic_write_bytes``, ``atomic_path``): a reader sees the old file or the whole new
one, never a half-written one, so a killed run resumes from its run directory.
"""

from __future__ import annotations

from importlib import metadata

__all__ = ["rtmpc_version", "RTMPC_VERSION"]

RTMPC_VERSION = "0.1.0"  # fallback when rtmpc is not installed (kept equal to setup.py)


def rtmpc_version() -> str:
    """The installed rtmpc version, or :data:`RTMPC_VERSION` from a source tree."""
    try:
        return metadata.version("rtmpc")
    except metadata.PackageNotFoundError:
        return RTMPC_VERSION
