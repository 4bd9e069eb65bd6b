"""MuJoCo as the robot: the :class:`controller.base.Robot` protocol over a simulated task.

``lockstep``: the simulation advances one agent step (``steps_per_send`` env steps) each
time an action is sent; for evaluation, independent of how long planning takes.

``wallclock``: a thread advances the physics in real time, one env step per
``env.spec.control_period`` seconds of the monotonic clock, applying whatever action was
sent last, as a real robot would: a late action has real consequences. The physics starts
at the first command (as a robot that waits for its controller), so the controller's
set-up and warm-up plans cost the episode nothing.

Observation stamps are in seconds: simulated time in lockstep, the monotonic clock in
wall-clock mode. SimRobot knows nothing of the controller (it only has the same methods).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from .base import Env

log = logging.getLogger(__name__)

__all__ = ["SimRobot", "RobotReading"]


@dataclass(frozen=True)
class RobotReading:
    """Matches controller.base.Observation field for field (values, stamp, seq, reward, done)."""

    values: np.ndarray
    stamp: float
    seq: int
    reward: float = 0.0
    done: bool = False


class SimRobot:
    def __init__(self, env: Env, mode: str = "lockstep", steps_per_send: int = 1, seed: int | None = None,
                 clock=time.monotonic, record_every_s: float = 0.0):
        if mode not in ("lockstep", "wallclock"):
            raise ValueError(f"mode = {mode!r}: choose lockstep or wallclock")
        if steps_per_send < 1:
            raise ValueError(f"steps_per_send = {steps_per_send} must be >= 1")
        self.env, self.mode, self.steps_per_send = env, mode, steps_per_send
        self.spec = env.spec
        self._clock = clock
        self._lock = threading.Lock()
        self._action = env.spec.safe_action.astype(np.float64)
        self._obs, _ = env.reset(seed=seed)
        self._seq = 0
        self._t = 0.0
        self._reward = 0.0  # since the last read
        self.episode_return = 0.0
        self.steps = 0
        self._done = False
        self.actions_received = 0
        self._thread: threading.Thread | None = None  # wall clock: the physics, from the first command
        self._stamp_wall = clock()
        self._stop = threading.Event()
        # Physics states kept for a video rendered after the run (rendering is too slow for the loop).
        self._record_steps = max(1, int(round(record_every_s / env.spec.control_period))) if record_every_s else 0
        self.states: list[np.ndarray] = [env.get_state()] if record_every_s else []

    # ---------------------------------------------------------------- Robot protocol
    def read(self) -> RobotReading:
        with self._lock:
            r = RobotReading(self._obs.copy(), self._t if self.mode == "lockstep" else self._stamp_wall,
                             self._seq, self._reward, self._done)
            self._reward = 0.0
            return r

    def send(self, action: np.ndarray) -> None:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        with self._lock:
            self._action = a.copy()
            self.actions_received += 1
        if self.mode == "wallclock" and self._thread is None:  # the episode starts at the first command
            self._stamp_wall = self._clock()
            self._thread = threading.Thread(target=self._run, name="sim-robot", daemon=True)
            self._thread.start()
        if self.mode == "lockstep":
            for _ in range(self.steps_per_send):
                if self._done:
                    break
                self._advance(a)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self.env.close()

    # ---------------------------------------------------------------- simulation
    _stamp_wall = 0.0

    def _advance(self, a: np.ndarray) -> None:
        obs, reward, terminated, truncated, _ = self.env.step(a)
        with self._lock:
            self._obs = obs
            self._seq += 1
            self._t += self.env.spec.control_period
            self._stamp_wall = self._clock()
            self._reward += reward
            self.episode_return += reward
            self.steps += 1
            self._done = bool(terminated or truncated)
        if self._record_steps and self.steps % self._record_steps == 0:
            self.states.append(self.env.get_state())

    def _run(self) -> None:
        period = self.env.spec.control_period
        self._stamp_wall = self._clock()
        next_t = self._clock() + period
        while not self._stop.is_set() and not self._done:
            delay = next_t - self._clock()
            if delay > 0:
                time.sleep(delay)
            with self._lock:
                a = self._action
            self._advance(a)
            next_t += period
            if self._clock() - next_t > 10 * period:  # fell far behind: don't try to catch up in a burst
                log.warning("simulation fell %.1f ms behind real time", 1e3 * (self._clock() - next_t))
                next_t = self._clock() + period

    @property
    def done(self) -> bool:
        return self._done

    @property
    def record_period_s(self) -> float:
        """Simulated seconds between recorded states."""
        return self._record_steps * self.env.spec.control_period
