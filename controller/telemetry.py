"""Per-cycle telemetry of the control loop: a preallocated ring, its summary, its files.

One row per cycle, in parallel numpy arrays allocated when the ring is built (N rows):

=================  =========  ==========================================================
column             shape      meaning
=================  =========  ==========================================================
cycle              (N,)       cycle index from 0 (one per loop iteration)
slot               (N,)       schedule slot k: scheduled = t0 + k * period
scheduled, wake    (N,)       scheduled and actual wake-up time, loop clock, seconds
jitter             (N,)       wake - scheduled, seconds
sent               (N,)       when the action was handed to the robot (NaN: none sent)
seq, stamp         (N,)       the observation's sequence number and time stamp
reward, done       (N,)       the observation's reward and end-of-episode flag
obs                (N, O)     observation values
planned            (N, A)     action from the plan or fallback, before the filter (NaN: none)
action             (N, A)     action sent, after the filter (NaN: none sent)
plan_s             (N,)       duration of the plan made on this cycle's observation
                              (filled in later for a late plan; NaN: no plan finished)
missed             (N,)       the plan made on this cycle's observation was not ready by
                              its deadline (loop commit = now: this cycle sends a fallback;
                              commit = next: the next cycle does)
source             (N,)       index into SOURCES: plan, fallback, safe, none (of the action
                              sent)
predicted_return   (N,)       the planner's predicted return of the plan acted on
disagreement       (N,)       the planner's ensemble disagreement of that plan
safety             (N,)       safety event flags, a bit mask over safety.KINDS
=================  =========  ==========================================================

Rows are written by the loop thread only (:meth:`Telemetry.record`); the files are
written after the run (:meth:`Telemetry.save`, atomically: temporary file, fsync,
os.replace). Past N cycles the oldest rows are overwritten: :meth:`summary` covers the
rows kept and says how many were dropped.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from rtmpc.configs.rundir import atomic_write
from rtmpc.controller.base import Observation
from rtmpc.controller.safety import KINDS

__all__ = ["Telemetry", "SOURCES", "PLAN", "FALLBACK", "SAFE", "NONE", "summarize"]

logger = logging.getLogger(__name__)

SOURCES = ("plan", "fallback", "safe", "none")
PLAN, FALLBACK, SAFE, NONE = range(len(SOURCES))


class Telemetry:
    """Ring of per-cycle records: capacity N rows, observations (O,), actions (A,)."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        if capacity < 1 or obs_dim < 0 or act_dim < 1:
            raise ValueError(f"telemetry needs capacity >= 1, obs_dim >= 0 and act_dim >= 1, got "
                             f"{capacity}, {obs_dim}, {act_dim}")
        N = capacity
        self.capacity, self.obs_dim, self.act_dim = N, obs_dim, act_dim
        self.count = 0  # rows recorded since reset (more than N once the ring wrapped)
        f8 = np.float64
        self.columns: dict[str, np.ndarray] = {
            "cycle": np.zeros(N, np.int64), "slot": np.zeros(N, np.int64),
            "scheduled": np.zeros(N, f8), "wake": np.zeros(N, f8), "jitter": np.zeros(N, f8),
            "sent": np.zeros(N, f8), "seq": np.zeros(N, np.int64), "stamp": np.zeros(N, f8),
            "reward": np.zeros(N, f8), "done": np.zeros(N, bool),
            "obs": np.zeros((N, obs_dim), f8), "planned": np.zeros((N, act_dim), f8),
            "action": np.zeros((N, act_dim), f8), "plan_s": np.zeros(N, f8),
            "missed": np.zeros(N, bool), "source": np.zeros(N, np.uint8),
            "predicted_return": np.zeros(N, f8), "disagreement": np.zeros(N, f8),
            "safety": np.zeros(N, np.uint16),
        }
        for name, column in self.columns.items():  # self._cycle, self._wake, ...: hot-path access
            column.fill(0)  # touch every page now: no first-touch page faults (and RSS growth) in the loop
            setattr(self, f"_{name}", column)

    def reset(self) -> None:
        self.count = 0

    # -- hot path (loop thread) -----------------------------------------------------------
    def record(self, slot: int, scheduled: float, wake: float, sent: float, obs: Observation,
               planned: np.ndarray, action: np.ndarray, plan_s: float, missed: bool, source: int,
               predicted_return: float, disagreement: float, flags: int) -> int:
        """Write one row (planned, action: (A,)); returns its cycle index."""
        n = self.count
        i = n % self.capacity
        if n == self.capacity:
            logger.warning("telemetry ring of %d rows is full: overwriting the oldest rows "
                           "(raise loop.telemetry_size to keep them)", self.capacity)
        self._cycle[i] = n
        self._slot[i] = slot
        self._scheduled[i] = scheduled
        self._wake[i] = wake
        self._jitter[i] = wake - scheduled
        self._sent[i] = sent
        self._seq[i] = obs.seq
        self._stamp[i] = obs.stamp
        self._reward[i] = obs.reward
        self._done[i] = obs.done
        self._obs[i] = obs.values
        self._planned[i] = planned
        self._action[i] = action
        self._plan_s[i] = plan_s
        self._missed[i] = missed
        self._source[i] = source
        self._predicted_return[i] = predicted_return
        self._disagreement[i] = disagreement
        self._safety[i] = flags
        self.count = n + 1
        return n

    def set_plan(self, cycle: int, plan_s: float, missed: bool) -> None:
        """Fill in the plan time and miss flag of the row just recorded for ``cycle`` (loop
        commit = next: the row is recorded at the send, before the cycle plans)."""
        i = cycle % self.capacity
        self._plan_s[i] = plan_s
        self._missed[i] = missed

    def set_plan_time(self, cycle: int, plan_s: float) -> None:
        """Fill in the duration of a plan that finished after its cycle was recorded."""
        if 0 <= cycle < self.count and self.count - cycle <= self.capacity:
            self._plan_s[cycle % self.capacity] = plan_s

    # -- after the run ----------------------------------------------------------------------
    @property
    def kept(self) -> int:
        return min(self.count, self.capacity)

    def records(self) -> dict[str, np.ndarray]:
        """Copies of the kept rows in cycle order: column name -> (n, ...) array."""
        n, N = self.kept, self.capacity
        if self.count <= N:
            return {k: v[:n].copy() for k, v in self.columns.items()}
        start = self.count % N
        return {k: np.concatenate([v[start:], v[:start]]) for k, v in self.columns.items()}

    def summary(self) -> dict[str, Any]:
        """:func:`summarize` of the kept rows, plus how many rows were dropped."""
        out = summarize(self.records())
        out["dropped"] = self.count - self.kept
        return out

    def save(self, run_dir: str | Path, summary: dict[str, Any] | None = None,
             name: str = "telemetry") -> Path:
        """Write ``<name>.npz`` (the kept rows, plus ``safety_kinds`` and ``sources``) and,
        if given, ``<name>_summary.json`` into ``run_dir``, each atomically."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        arrays = self.records()
        arrays["safety_kinds"] = np.array(KINDS)
        arrays["sources"] = np.array(SOURCES)
        path = run_dir / f"{name}.npz"
        atomic_write(path, lambda f: np.savez(f, **arrays))
        if summary is not None:
            text = json.dumps(_json_safe(summary), indent=2, sort_keys=True) + "\n"
            atomic_write(run_dir / f"{name}_summary.json", lambda f: f.write(text.encode()))
        return path


def summarize(r: dict[str, np.ndarray]) -> dict[str, Any]:
    """Run statistics from telemetry records (the columns of :class:`Telemetry`).

    cycles, misses, miss_rate, fallbacks, safe_actions, skipped_slots, rate_hz (achieved,
    from wake times), plan_ms/jitter_ms/latency_ms (send - wake) p50/p99/max,
    safety_events (total and by kind), episode_return (sum of observation rewards).
    """
    n = int(r["cycle"].shape[0])
    wake = r["wake"]
    flags = r["safety"].astype(np.int64)
    by_kind = {k: int(np.count_nonzero(flags >> i & 1)) for i, k in enumerate(KINDS)}
    out: dict[str, Any] = {
        "cycles": n,
        "misses": int(np.count_nonzero(r["missed"])),
        "fallbacks": int(np.count_nonzero(r["source"] == FALLBACK)),
        "safe_actions": int(np.count_nonzero(r["source"] == SAFE)),
        "skipped_slots": int(r["slot"][-1] - r["slot"][0] + 1 - n) if n else 0,
        "rate_hz": float((n - 1) / (wake[-1] - wake[0])) if n > 1 and wake[-1] > wake[0] else math.nan,
        "safety_events": {"total": sum(by_kind.values()), **by_kind},
        "episode_return": float(r["reward"].sum()),
    }
    out["miss_rate"] = out["misses"] / n if n else math.nan
    out.update(_percentiles_ms("plan_ms", r["plan_s"]))
    out.update(_percentiles_ms("jitter_ms", r["jitter"]))
    out.update(_percentiles_ms("latency_ms", r["sent"] - wake))
    return out


def _percentiles_ms(name: str, seconds: np.ndarray) -> dict[str, float]:
    x = seconds[np.isfinite(seconds)] * 1e3
    if x.size == 0:
        return {f"{name}_p50": math.nan, f"{name}_p99": math.nan, f"{name}_max": math.nan}
    p50, p99 = np.percentile(x, [50, 99])
    return {f"{name}_p50": float(p50), f"{name}_p99": float(p99), f"{name}_max": float(x.max())}


def _json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return _json_safe(v.item())
    return v
