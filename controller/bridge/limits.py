"""Bounds on what a stranger's messages can make the bridge remember or log."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Hashable

__all__ = ["RecentSet", "LogLimiter"]


class RecentSet:
    """A set that keeps at most ``size`` items: adding one more forgets the oldest."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"size {size} must be >= 1")
        self.size = size
        self._items: OrderedDict[Hashable, None] = OrderedDict()

    def add(self, item: Hashable) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        if len(self._items) > self.size:
            self._items.popitem(last=False)

    def discard(self, item: Hashable) -> None:
        self._items.pop(item, None)

    def __contains__(self, item: Hashable) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)


class LogLimiter:
    """Lets a log line through at most once per ``interval_s``.

    ``ready()`` returns None to hold a line back (it is counted), else the number held
    back since the last line let through (to report with it)."""

    def __init__(self, interval_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.interval_s, self._clock = interval_s, clock
        self._next = -float("inf")
        self._held = 0
        self.emitted = 0

    def ready(self) -> int | None:
        now = self._clock()
        if now < self._next:
            self._held += 1
            return None
        self._next = now + self.interval_s
        held, self._held = self._held, 0
        self.emitted += 1
        return held
