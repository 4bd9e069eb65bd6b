"""The model families: a family's name (a run config's ``kind``, an exported file's
``kind`` metadata) -> its package under ``rtmpc.models``, imported on first use.

A family package (``models/<family>/__init__.py``) imports neither torch nor the simulator
and provides the entry points of :class:`rtmpc.models.base.Family`: its config sections,
``train_model``, ``export_model``, ``runtime_class()`` (its RolloutModel class, ONNX Runtime
only) and ``predictor_class()`` for ``rtmpc analyze``. Adding a family is adding a folder and a line here;
nothing outside the family's folder branches on its name.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from rtmpc.models.base import ModelError

__all__ = ["FAMILIES", "family", "names"]

# name -> module. "latent" is the TD-MPC-style latent model (folder tdmpc/); the name is the
# one its exported files and run configs already carry.
FAMILIES: dict[str, str] = {
    "pets": "rtmpc.models.pets",
    "latent": "rtmpc.models.tdmpc",
    "dynaq": "rtmpc.models.dynaq",
    "mbpo": "rtmpc.models.mbpo",
}


def names() -> tuple[str, ...]:
    return tuple(FAMILIES)


def family(name: str) -> ModuleType:
    """The family package ``name`` (a ModelError naming the families if there is none)."""
    try:
        module = FAMILIES[name]
    except KeyError:
        raise ModelError(f"no model family {name!r}: choose one of {', '.join(FAMILIES)}") from None
    return importlib.import_module(module)
