"""The middleware under the bridge: Eclipse Zenoh sessions on explicit endpoints, and
fault injection on the sending side.

Sessions are zenoh *peers* with multicast scouting and gossip off: the robot listens on
its endpoint, the controller connects to it (and listens nowhere), so nothing is
discovered or announced on any network. The controller's session retries a lost
connection every 0.1-0.5 s, so a restarted robot is found again without a new session.
Publishers are *express* (no batching), priority real-time, congestion control *drop*
(a slow reader never blocks the sender; the sequence numbers show what was lost).
Zenoh is imported here only, when a session is opened (the ``[bridge]`` extra).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable

import numpy as np
from rtmpc.configs import ConfigError

from .config import FaultConfig

__all__ = ["open_session", "FaultyPublisher", "BridgeError"]

logger = logging.getLogger(__name__)

class BridgeError(ConfigError):
    """The bridge cannot work as set up: zenoh missing, no robot at the endpoint, sizes
    that disagree. The message says what to do. A ConfigError, so that the CLI prints it
    as one line."""


def _zenoh():
    try:
        import zenoh
    except ImportError as err:
        raise BridgeError("the bridge needs Eclipse Zenoh: pip install 'rtmpc[bridge]' "
                          "(or pip install eclipse-zenoh)") from err
    return zenoh


def open_session(endpoint: str, *, listen: bool) -> Any:
    """A zenoh peer session that listens on (robot) or connects to (controller) ``endpoint``
    and nothing else: no multicast scouting, no gossip."""
    zenoh = _zenoh()
    cfg = zenoh.Config()
    cfg.insert_json5("mode", '"peer"')
    cfg.insert_json5("scouting/multicast/enabled", "false")
    cfg.insert_json5("scouting/gossip/enabled", "false")
    if listen:
        cfg.insert_json5("listen/endpoints", json.dumps([endpoint]))
        cfg.insert_json5("connect/endpoints", "[]")
    else:
        cfg.insert_json5("listen/endpoints", "[]")
        cfg.insert_json5("connect/endpoints", json.dumps([endpoint]))
        cfg.insert_json5("connect/timeout_ms", "-1")  # keep trying in the background
        cfg.insert_json5("connect/retry",
                         "{period_init_ms: 100, period_max_ms: 500, period_increase_factor: 1.5}")
    try:
        return zenoh.open(cfg)
    except Exception as err:  # zenoh raises ZError (not exported as a type we can rely on)
        raise BridgeError(f"cannot open a zenoh session {'listening on' if listen else 'to'} "
                          f"{endpoint}: {err}") from err


def declare_publisher(session: Any, key: str) -> Any:
    zenoh = _zenoh()
    return session.declare_publisher(key, express=True, priority=zenoh.Priority.REAL_TIME,
                                     congestion_control=zenoh.CongestionControl.DROP)


def is_delete(sample: Any) -> bool:
    return sample.kind == _zenoh().SampleKind.DELETE


class FaultyPublisher:
    """``put(payload)`` through a zenoh publisher, with the faults of a FaultConfig.

    Each message is, at random: dropped (``drop``), held back and sent right after the
    next message that is sent (``reorder``), sent twice (``duplicate``), or sent. A
    held message is always overtaken by a sent one (a drop keeps it held), and
    :meth:`flush` sends it at the end, so a receiver sees each injected reorder as one
    out-of-order message. Counts: :attr:`counts` (sent, drop, reorder, duplicate).
    Thread-safe (one lock around each put).
    """

    def __init__(self, put: Callable[[bytes], None], faults: FaultConfig = FaultConfig()):
        self._put = put
        self._p = np.cumsum([faults.drop, faults.reorder, faults.duplicate])
        self._faulty = faults.any
        self._rng = np.random.default_rng(faults.seed)
        self._held: bytes | None = None
        self._lock = threading.Lock()
        self.counts = {"sent": 0, "drop": 0, "reorder": 0, "duplicate": 0}

    def put(self, payload: bytes) -> None:
        with self._lock:
            if not self._faulty:
                self._send(payload)
                return
            u = self._rng.random()
            if u < self._p[0]:
                self.counts["drop"] += 1
            elif u < self._p[1] and self._held is None:
                self.counts["reorder"] += 1
                self._held = payload
            else:
                self._send(payload)
                if self._p[1] <= u < self._p[2]:
                    self.counts["duplicate"] += 1
                    self._send(payload)
                if self._held is not None:
                    held, self._held = self._held, None
                    self._send(held)

    def flush(self) -> None:
        """Send a message still held back."""
        with self._lock:
            if self._held is not None:
                held, self._held = self._held, None
                self._send(held)

    def _send(self, payload: bytes) -> None:
        self._put(payload)
        self.counts["sent"] += 1
