"""The one way rtmpc makes and writes a plot: headless pyplot, PNG written atomically.

matplotlib is imported on first use only (importing rtmpc's packages stays light), with
the Agg backend: there is no display on the machines rtmpc trains and deploys on.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["pyplot", "save_png"]


def pyplot():
    """matplotlib.pyplot on the Agg (offscreen) backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` as a PNG, atomically (configs.rundir.atomic_path), and close it."""
    from rtmpc.configs.rundir import atomic_path

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        pyplot().close(fig)
    return Path(path)
