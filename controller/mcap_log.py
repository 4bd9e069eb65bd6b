"""Telemetry streamed to an MCAP file while the loop runs, from a writer thread.

:class:`McapStream` drains the loop's :class:`~rtmpc.controller.telemetry.Telemetry` ring
every ``flush_s`` seconds (0.5, or a quarter of the ring's duration if that is shorter)
into ``telemetry-<date>-<time>[-n].mcap`` (a new name per run: a second run never
overwrites the first), one JSON message per cycle on the channel
``/rtmpc/cycle`` (JSON schema ``rtmpc.Cycle``): times, plan time and age, source, predicted
return, disagreement, safety events by name, and the observation, planned and sent actions
as objects keyed by the task's entry names (``obs_names`` / ``act_names``; ``obs[i]`` where
it has none). Foxglove, PlotJuggler and the ``mcap`` CLI open it.

The file is written without chunks and flushed to the OS after every batch, so a run killed
with SIGKILL leaves a file readable (by a streaming reader) up to its last batch: at most
``flush_s`` seconds of cycles are lost. :meth:`close` writes the rest and the summary. The
ring may wrap during a long run: the stream keeps every cycle as long as it drains the ring
faster than the loop fills it (it warns with the count of rows it missed otherwise). The
loop thread never waits for it: the writer reads rows the loop has finished, one cycle
behind the newest (whose plan time the loop may still fill in).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from pathlib import Path

from rtmpc.controller.priority import lower_this_thread
from rtmpc.controller.safety import kinds_of
from rtmpc.controller.telemetry import SOURCES, Telemetry

__all__ = ["McapStream", "unique_path", "read_cycles", "records_from_mcap", "CHANNEL"]

logger = logging.getLogger(__name__)

CHANNEL = "/rtmpc/cycle"
_SCHEMA = {
    "type": "object", "title": "rtmpc.Cycle",
    "properties": {
        "cycle": {"type": "integer"}, "slot": {"type": "integer"}, "scheduled": {"type": "number"},
        "wake": {"type": "number"}, "sent": {"type": "number"}, "jitter_ms": {"type": "number"},
        "plan_ms": {"type": "number"}, "missed": {"type": "boolean"}, "source": {"type": "string"},
        "predicted_return": {"type": "number"}, "disagreement": {"type": "number"}, "reward": {"type": "number"},
        "safety": {"type": "array", "items": {"type": "string"}},
        "obs": {"type": "object"}, "planned": {"type": "object"}, "action": {"type": "object"},
    },
}


def unique_path(folder: str | Path, stem: str = "telemetry", suffix: str = ".mcap") -> Path:
    """``folder/stem-YYYYmmdd-HHMMSS.suffix``, with ``-2``, ``-3``... if that exists already."""
    folder = Path(folder)
    base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = folder / f"{base}{suffix}", 1
    while path.exists():
        n += 1
        path = folder / f"{base}-{n}{suffix}"
    return path


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None  # JSON has no NaN


# The writer gives the GIL away every this many messages. Encoding a drain's messages holds
# the GIL for milliseconds at a time; a loop thread waking meanwhile waited in the GIL's
# convoy with the planner and physics threads: at a 500 Hz servo, 2-5 ticks in 5,000 woke
# ~1.9 ms late, each during a drain (docs/servo.md); yielding every 8 messages: none.
YIELD_EVERY = 8


class McapStream:
    """``McapStream(telemetry, folder, obs_names, act_names)``; :meth:`start` before the loop,
    :meth:`close` after it (writes the remaining rows, the summary, and returns the path)."""

    def __init__(self, telemetry: Telemetry, folder: str | Path, obs_names=(), act_names=(), flush_s: float = 0.5,
                 period_s: float | None = None, nice: int = 0):
        from mcap.writer import CompressionType, Writer

        # drain at least four times per ring's worth of cycles, so that a long run keeps them all
        ring_s = telemetry.capacity * period_s if period_s else math.inf
        self.telemetry, self.flush_s = telemetry, float(min(flush_s, ring_s / 4))
        self.nice = nice  # the writer thread's nice value (below the loop's thread; 0 = unchanged)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = unique_path(folder)
        self._obs_names = [obs_names[i] if i < len(obs_names) else f"obs[{i}]" for i in range(telemetry.obs_dim)]
        self._act_names = [act_names[i] if i < len(act_names) else f"action[{i}]" for i in range(telemetry.act_dim)]
        self._file = open(self.path, "wb")
        self._writer = Writer(self._file, use_chunking=False, compression=CompressionType.NONE)
        self._writer.start(profile="", library="rtmpc")
        schema = self._writer.register_schema("rtmpc.Cycle", "jsonschema", json.dumps(_SCHEMA).encode())
        self._channel = self._writer.register_channel(CHANNEL, "json", schema)
        self._file.flush()
        self.written = 0  # cycles written
        self.missed = 0  # cycles the ring overwrote before they were written
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtmpc-mcap", daemon=True)

    def start(self) -> "McapStream":
        self._thread.start()
        return self

    def close(self) -> Path:
        self._stop.set()
        self._thread.join()
        self._drain(final=True)
        self._writer.finish()
        self._file.close()
        if self.missed:
            logger.warning("telemetry stream: %d cycles were overwritten in the ring before they were written "
                           "(raise loop.telemetry_size)", self.missed)
        return self.path

    def _run(self) -> None:
        lower_this_thread(self.nice)
        while not self._stop.wait(self.flush_s):
            try:
                self._drain(final=False)
            except Exception:  # noqa: BLE001 - the loop goes on without its stream
                logger.exception("telemetry stream failed: no more cycles are written to %s", self.path)
                return

    def _drain(self, final: bool) -> None:
        tel = self.telemetry
        end = tel.count if final else tel.count - 1  # the newest row may still get its plan time
        start = max(self.written, end - tel.capacity)
        self.missed += start - self.written
        cols, N = tel.columns, tel.capacity
        for n in range(start, end):
            if n % YIELD_EVERY == 0:
                time.sleep(0)  # let a waiting loop thread have the GIL (see YIELD_EVERY)
            i = n % N
            ns = int(cols["sent"][i] * 1e9) if math.isfinite(cols["sent"][i]) else int(cols["wake"][i] * 1e9)
            msg = {"cycle": int(cols["cycle"][i]), "slot": int(cols["slot"][i]),
                   "scheduled": _num(cols["scheduled"][i]), "wake": _num(cols["wake"][i]),
                   "sent": _num(cols["sent"][i]), "jitter_ms": _num(1e3 * cols["jitter"][i]),
                   "plan_ms": _num(1e3 * cols["plan_s"][i]), "missed": bool(cols["missed"][i]),
                   "source": SOURCES[int(cols["source"][i])], "predicted_return": _num(cols["predicted_return"][i]),
                   "disagreement": _num(cols["disagreement"][i]), "reward": _num(cols["reward"][i]),
                   "safety": kinds_of(int(cols["safety"][i])),
                   "obs": {k: _num(v) for k, v in zip(self._obs_names, cols["obs"][i])},
                   "planned": {k: _num(v) for k, v in zip(self._act_names, cols["planned"][i])},
                   "action": {k: _num(v) for k, v in zip(self._act_names, cols["action"][i])}}
            self._writer.add_message(self._channel, log_time=max(ns, 0), publish_time=max(ns, 0),
                                     data=json.dumps(msg).encode(), sequence=n)
        self.written = max(self.written, end)
        self._file.flush()


def read_cycles(path: str | Path) -> list[dict]:
    """The cycle messages of an MCAP file, in order; a file cut short (a killed run) is read up
    to its last whole message."""
    from mcap.exceptions import McapError
    from mcap.records import Channel, Message
    from mcap.stream_reader import StreamReader

    out, channels = [], {}
    with open(path, "rb") as f:
        try:
            for record in StreamReader(f, skip_magic=False).records:
                if isinstance(record, Channel):
                    channels[record.id] = record.topic
                elif isinstance(record, Message) and channels.get(record.channel_id) == CHANNEL:
                    out.append(json.loads(record.data))
        except (McapError, EOFError, ValueError, json.JSONDecodeError):
            pass  # the end of what reached the disk
    return out


def records_from_mcap(path: str | Path) -> dict:
    """The telemetry columns :func:`controller.plot.plot_episode` draws (scheduled, obs,
    action, source, reward, plan_s, missed, cycle), read back from an MCAP file: every cycle
    the run streamed, also those a long run's ring no longer holds (NaN where a value was not
    finite)."""
    import numpy as np

    cycles = read_cycles(path)

    def num(v) -> float:
        return float("nan") if v is None else float(v)

    def rows(key: str) -> np.ndarray:
        return np.array([[num(v) for v in c[key].values()] for c in cycles], dtype=float).reshape(len(cycles), -1)

    return {"cycle": np.array([c["cycle"] for c in cycles], dtype=np.int64),
            "scheduled": np.array([num(c["scheduled"]) for c in cycles]),
            "obs": rows("obs"), "action": rows("action"),
            "source": np.array([SOURCES.index(c["source"]) for c in cycles], dtype=np.int8),
            "reward": np.array([num(c["reward"]) for c in cycles]),
            "plan_s": np.array([num(c["plan_ms"]) / 1e3 for c in cycles]),
            "missed": np.array([bool(c["missed"]) for c in cycles], dtype=bool)}
