"""The safety filter between the planner and the robot.

Per cycle the loop calls :meth:`SafetyFilter.observe` on the observation, then either
:meth:`SafetyFilter.filter` on the planned action or :meth:`SafetyFilter.substitute`
when the observation is unusable, and sends :attr:`SafetyFilter.action` (A,). Each
returns the cycle's event flags, a bit mask over :data:`KINDS`:

* ``clipped``: the planned action left the bounds and was clipped;
* ``rate_limited``: it changed faster than ``max_rate`` and was limited;
* ``nonfinite_action``: it held NaN/inf: the last action sent (or the safe action) goes;
* ``nonfinite_model``: the planner had no plan (its model predicted nothing finite, or its
  actor returned NaN): the safe action goes;
* ``plan_starved``: (servo loop) the plan in use ran out before a newer one came: the safe
  action goes;
* ``nonfinite_obs``, ``stale_obs``: the observation held NaN/inf or was too old (the
  watchdog): the safe action (or the last action sent) goes and the planner is skipped.

The safe action and the bypass of the rate limit on the way to it are deliberate: the
safe action is the state the robot may always be put in. Buffers are allocated when the
filter is built; the per-cycle calls write into them (Numba kernels, controller.kernels)
and allocate nothing.
Events are counted in :attr:`counts`; each kind logs once when it starts (a warning for
observation and non-finite events, debug for clipping and rate limiting).
"""

from __future__ import annotations

import logging

import numpy as np
from rtmpc.controller.base import Observation
from rtmpc.controller.config import SafetyConfig
from rtmpc.controller.kernels import all_finite, filter_action, warm_up

__all__ = ["SafetyFilter", "KINDS", "CLIPPED", "RATE_LIMITED", "NONFINITE_ACTION",
           "NONFINITE_OBS", "STALE_OBS", "NONFINITE_MODEL", "PLAN_STARVED", "kinds_of"]

logger = logging.getLogger(__name__)

KINDS = ("clipped", "rate_limited", "nonfinite_action", "nonfinite_obs", "stale_obs", "nonfinite_model",
         "plan_starved")
CLIPPED, RATE_LIMITED, NONFINITE_ACTION, NONFINITE_OBS, STALE_OBS, NONFINITE_MODEL, PLAN_STARVED = (
    1 << i for i in range(len(KINDS)))
_LOUD = NONFINITE_ACTION | NONFINITE_OBS | STALE_OBS | NONFINITE_MODEL | PLAN_STARVED


def kinds_of(flags: int) -> list[str]:
    """The event kinds set in a flag mask."""
    return [k for i, k in enumerate(KINDS) if flags >> i & 1]


class SafetyFilter:
    """Clip, rate-limit and guard the actions sent to a robot.

    action_low, action_high: (A,) bounds. period_s: control period (for the rate limit
    and the default watchdog age). safe_action: (A,) task default, used when
    ``config.safe_action`` is empty; None = zeros (mid-range where zero is out of bounds).
    Not thread-safe: the loop thread only.
    """

    def __init__(self, action_low: np.ndarray, action_high: np.ndarray, period_s: float,
                 config: SafetyConfig = SafetyConfig(), safe_action: np.ndarray | None = None):
        lo = np.asarray(action_low, dtype=np.float64).reshape(-1)
        hi = np.asarray(action_high, dtype=np.float64).reshape(-1)
        if lo.shape != hi.shape or not np.all(lo <= hi):
            raise ValueError(f"action bounds must have one shape with low <= high, got low "
                             f"{lo.tolist()} and high {hi.tolist()}")
        if not period_s > 0:
            raise ValueError(f"period_s = {period_s!r} must be > 0")
        A = lo.shape[0]
        if config.safe_action:
            safe = np.asarray(config.safe_action, dtype=np.float64)
        elif safe_action is not None:
            safe = np.asarray(safe_action, dtype=np.float64).reshape(-1)
        else:
            safe = np.where((lo <= 0) & (hi >= 0), 0.0, 0.5 * (lo + hi))
        if safe.shape != (A,) or not np.all((safe >= lo) & (safe <= hi)):
            raise ValueError(f"safe action {safe.tolist()} must have {A} entries inside the "
                             f"bounds [{lo.tolist()}, {hi.tolist()}]")
        self.config = config
        self.act_dim = A
        self.low, self.high = lo, hi
        self.safe_action = safe
        self.safe_action.flags.writeable = False
        self.stale_after_s = 3.0 * period_s if config.stale_after_s is None else config.stale_after_s
        # (A,) largest change per cycle; inf = no limit (one code path either way)
        self.max_step = (config.max_rate * (hi - lo) * period_s if config.max_rate > 0
                         else np.full(A, np.inf))
        self._age_from_stamp = config.stale_from == "stamp"
        self._hold_on_bad_obs = config.bad_observation == "hold"
        # buffers: what to send, the last action sent
        self.action = safe.copy()
        self.last = safe.copy()
        # writable (a read-only array is another Numba type): hold = the last action sent
        self._on_nonfinite = self.last if config.nonfinite_action == "hold" else safe.copy()
        warm_up(self.low, self.high, self.max_step, self._on_nonfinite)
        self._counts = [0] * len(KINDS)
        self._prev = 0
        self._seq = None
        self._seq_time = 0.0

    # -- per episode ---------------------------------------------------------------------
    def reset(self, now: float) -> None:
        """New episode at loop time ``now``: last action = safe action, watchdog restarted."""
        np.copyto(self.last, self.safe_action)
        np.copyto(self.action, self.safe_action)
        self._prev = 0
        self._seq = None
        self._seq_time = now

    @property
    def counts(self) -> dict[str, int]:
        """Events by kind since the filter was built."""
        return dict(zip(KINDS, self._counts))

    # -- per cycle -----------------------------------------------------------------------
    def observe(self, obs: Observation, now: float) -> int:
        """Flags of an observation read at loop time ``now``: 0 = usable, else
        NONFINITE_OBS and/or STALE_OBS (then call :meth:`substitute`)."""
        flags = 0 if all_finite(obs.values) else NONFINITE_OBS
        if obs.seq != self._seq:
            self._seq = obs.seq
            self._seq_time = now
        age = now - obs.stamp if self._age_from_stamp else now - self._seq_time
        if not age <= self.stale_after_s:  # NaN stamps are stale too
            flags |= STALE_OBS
        return flags

    def filter(self, planned: np.ndarray) -> int:
        """Write the action to send for ``planned`` (A,) into :attr:`action`; returns flags.
        """
        return self._done(filter_action(planned, self.low, self.high, self.max_step,
                                        self._on_nonfinite, self.last, self.action))

    def no_plan(self) -> int:
        """The planner had no plan (``PlanStats.no_plan``: its model predicted nothing finite
        for this observation, or its actor returned NaN): write the safe action into
        :attr:`action`; returns NONFINITE_MODEL."""
        np.copyto(self.action, self.safe_action)
        np.copyto(self.last, self.safe_action)
        return self._done(NONFINITE_MODEL)

    def starved(self) -> int:
        """The plan in use has run out and no newer one came (a servo loop whose planner fell
        behind): write the safe action into :attr:`action`; returns PLAN_STARVED."""
        np.copyto(self.action, self.safe_action)
        np.copyto(self.last, self.safe_action)
        return self._done(PLAN_STARVED)

    def substitute(self, flags: int) -> int:
        """Unusable observation (``flags`` from :meth:`observe`): write the safe action (or
        hold the last one) into :attr:`action`; returns ``flags``."""
        np.copyto(self.action, self.last if self._hold_on_bad_obs else self.safe_action)
        np.copyto(self.last, self.action)
        return self._done(flags)

    def emergency(self) -> np.ndarray:
        """The safe action, now (stop, error, end of run): written into :attr:`action`."""
        np.copyto(self.action, self.safe_action)
        np.copyto(self.last, self.safe_action)
        return self.action

    def _done(self, flags: int) -> int:
        if flags:
            for i in range(len(KINDS)):
                if flags >> i & 1:
                    self._counts[i] += 1
            onset = flags & ~self._prev
            if onset:
                level = logging.WARNING if onset & _LOUD else logging.DEBUG
                if logger.isEnabledFor(level):
                    logger.log(level, "safety: %s (%s so far)", ", ".join(kinds_of(onset)),
                               ", ".join(f"{k} {self._counts[i]}" for i, k in enumerate(KINDS)
                                         if onset >> i & 1))
        self._prev = flags
        return flags
