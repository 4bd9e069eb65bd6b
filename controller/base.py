"""The robot interface and the clock the control loop runs on."""

from __future__ import annotations

import abc
import threading
import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Observation", "Robot", "Clock", "MonotonicClock"]


@dataclass(frozen=True)
class Observation:
    """One reading of the robot: values (O,), the robot-side time stamp in seconds on
    the robot's monotonic clock, and a sequence number that increases by one per reading."""

    values: np.ndarray
    stamp: float
    seq: int
    reward: float = 0.0  # task reward since the last reading, where the robot knows it
    done: bool = False  # the episode ended (termination or time limit)


@runtime_checkable
class Robot(Protocol):
    """What the loop drives: read the latest state, send an action, close.

    ``read()`` returns the latest :class:`Observation` (values (O,)); ``send(action)``
    takes an (A,) array that the loop reuses next cycle: copy what you keep.
    """

    def read(self) -> Observation:
        ...

    def send(self, action: np.ndarray) -> None:
        ...

    def close(self) -> None:
        ...


class Clock(abc.ABC):
    """Monotonic seconds and a way to wait until a given time (injected for tests)."""

    @abc.abstractmethod
    def now(self) -> float:
        ...

    @abc.abstractmethod
    def sleep_until(self, t: float) -> None:
        ...

    def wait_for(self, event: threading.Event, deadline: float) -> bool:
        """Wait until ``event`` is set or the clock reaches ``deadline``; True if it is set.

        The control loop waits on its planner thread with this, so a fake clock can decide
        in its own time whether a plan is late.
        """
        return event.wait(max(0.0, deadline - self.now()))


class MonotonicClock(Clock):
    """time.monotonic with a coarse sleep then a short spin for sub-100-µs wake-ups."""

    def __init__(self, spin_s: float = 0.0002):
        self.spin_s = spin_s

    def now(self) -> float:
        return time.monotonic()

    def sleep_until(self, t: float) -> None:
        remaining = t - time.monotonic()
        if remaining > self.spin_s:
            time.sleep(remaining - self.spin_s)
        while time.monotonic() < t:
            pass
