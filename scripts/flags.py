"""Command-line value types: every number a flag takes is checked when it is parsed.

Each factory returns an argparse ``type`` that parses the text and checks its range; a bad
value becomes ``argparse.ArgumentTypeError`` with the value and the allowed range, which
:class:`scripts.cli.OneLineParser` prints as one line naming the flag (exit status 2)::

    rtmpc control: error: argument --rate: 0.0 is out of range: must be > 0 and <= 100000

Where a flag sets a config field, :func:`like` takes the range from the field's
:func:`configs.param`, so a flag and a ``--set`` of the same value are checked alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from typing import Callable

__all__ = ["number", "like", "rate", "count", "seed", "threads", "fraction", "MAX_SEED"]

MAX_SEED = 2**32 - 1  # numpy's SeedSequence takes any non-negative int; dm_control's RandomState wants < 2**32


def _bounds_text(ge=None, gt=None, le=None, lt=None) -> str:
    pairs = ((">=", ge), (">", gt), ("<=", le), ("<", lt))
    parts = [f"{op} {v:g}" if isinstance(v, float) else f"{op} {v}" for op, v in pairs if v is not None]
    return "must be " + " and ".join(parts)


def number(kind: type = float, *, ge=None, gt=None, le=None, lt=None) -> Callable[[str], float | int]:
    """An argparse type: ``kind`` (int or float), finite, within the bounds given."""

    def parse(text: str):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        ok = ((ge is None or value >= ge) and (gt is None or value > gt)
              and (le is None or value <= le) and (lt is None or value < lt))
        if not ok:
            raise argparse.ArgumentTypeError(f"{value!r} is out of range: {_bounds_text(ge, gt, le, lt)}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


def like(config_cls, field: str) -> Callable[[str], float | int]:
    """The argparse type of ``config_cls.field``: its type (int or float) and its param() range."""
    f = next((f for f in dataclasses.fields(config_cls) if f.name == field), None)
    if f is None:
        raise KeyError(f"{config_cls.__name__} has no field {field!r}")
    kind = int if isinstance(f.default, int) and not isinstance(f.default, bool) else float
    meta = f.metadata
    return number(kind, ge=meta.get("ge"), gt=meta.get("gt"), le=meta.get("le"), lt=meta.get("lt"))


def rate() -> Callable[[str], float]:
    """A control rate in Hz: the range of ``loop.rate_hz``."""
    from rtmpc.controller.config import LoopConfig

    return like(LoopConfig, "rate_hz")


def count(lo: int = 1, hi: int = 10**9) -> Callable[[str], int]:
    """A whole number of things (episodes, cycles, samples...) in [lo, hi]."""
    return number(int, ge=lo, le=hi)


def seed() -> Callable[[str], int]:
    """A seed: 0 .. 2**32 - 1."""
    return number(int, ge=0, le=MAX_SEED)


def threads() -> Callable[[str], int]:
    """A thread count: 1 .. 4 x this machine's cores (more only time-slices the same cores)."""
    return number(int, ge=1, le=4 * (os.cpu_count() or 1))


def fraction() -> Callable[[str], float]:
    """A fraction in [0, 1]."""
    return number(float, ge=0.0, le=1.0)
