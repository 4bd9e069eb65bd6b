"""The middleware under the bridge: Eclipse Zenoh sessions on explicit endpoints, and
fault injection on the sending side.

Sessions are zenoh *peers* with multicast scouting and gossip off: the robot listens on
its endpoint, the controller connects to it (and listens nowhere), so nothing is
discovered or announced on any network. The controller's session retries a lost
connection every 0.1-0.5 s, so a restarted robot is found again without a new session.
Publishers are *express* (no batching), priority real-time, congestion control *drop*
(a slow reader never blocks the sender; the sequence numbers show what was lost).
Limits: a session accepts at most :data:`MAX_SESSIONS` peers, and zenoh's maximum message
size is set from the caller's ``max_message_bytes`` (zenoh's defaults: 1000 peers, 1 GiB
messages); receivers check a payload's length before copying it. A ``tls/`` or ``quic/`` endpoint takes
its certificates from a :class:`~controller.bridge.config.TlsConfig`; listening on a
non-loopback address without TLS logs a warning.
Zenoh is imported here only, when a session is opened (the ``[bridge]`` extra).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
from rtmpc.configs import ConfigError

from .config import SECURE, FaultConfig, TlsConfig, split_endpoint

__all__ = ["open_session", "FaultyPublisher", "BridgeError", "MAX_SESSIONS"]

MAX_SESSIONS = 16  # peers a session accepts: the controller, observers, a restarted controller
_ZENOH_OVERHEAD = 1024  # bytes of zenoh framing (key, headers, attachment) allowed above a payload
_LOOPBACK = ("localhost", "::1")

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


def open_session(endpoint: str, *, listen: bool, max_message_bytes: int = 65536, tls: TlsConfig = TlsConfig(),
                 access_control: str = "") -> Any:
    """A zenoh peer session that listens on (robot) or connects to (controller) ``endpoint``
    and nothing else: no multicast scouting, no gossip.

    max_message_bytes: the largest payload this side expects (larger messages are dropped
    by zenoh); tls: certificates of a ``tls/`` endpoint; access_control: a JSON5 file
    holding zenoh's ``access_control`` section (listening side)."""
    zenoh = _zenoh()
    cfg = zenoh.Config()
    cfg.insert_json5("mode", '"peer"')
    cfg.insert_json5("scouting/multicast/enabled", "false")
    cfg.insert_json5("scouting/gossip/enabled", "false")
    # zenoh 1.10.2 still delivered larger messages in our tests (docs/bridge.md): the receivers
    # check each payload's length before copying it
    cfg.insert_json5("transport/link/rx/max_message_size", str(max_message_bytes + _ZENOH_OVERHEAD))
    cfg.insert_json5("transport/unicast/max_sessions", str(MAX_SESSIONS))
    cfg.insert_json5("transport/unicast/accept_pending", str(MAX_SESSIONS))
    protocol, host, _ = split_endpoint(endpoint)
    if protocol in SECURE:
        _tls(cfg, tls, listen)
    elif listen and not (host in _LOOPBACK or host.startswith("127.")):
        logger.warning("listening on %s without TLS: anyone who reaches this port can read the robot and drive it "
                       "(use tls/ with --tls-cert/--tls-key/--tls-ca --mtls, docs/bridge.md)", endpoint)
    if access_control:
        try:
            cfg.insert_json5("access_control", Path(access_control).read_text())
        except Exception as err:  # OSError, or zenoh's ZError on a bad section
            raise BridgeError(f"access_control file {access_control}: {err}: it must hold zenoh's access_control "
                              f"section as JSON5 (docs/bridge.md)") from err
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


def _tls(cfg: Any, tls: TlsConfig, listen: bool) -> None:
    """zenoh's transport.link.tls keys from a TlsConfig."""
    keys = {"root_ca_certificate": tls.ca}
    if listen:
        keys.update(listen_certificate=tls.cert, listen_private_key=tls.key)
    elif tls.mutual:
        keys.update(connect_certificate=tls.cert, connect_private_key=tls.key)
    for name, path in keys.items():
        if path:
            cfg.insert_json5(f"transport/link/tls/{name}", json.dumps(str(path)))
    cfg.insert_json5("transport/link/tls/enable_mtls", json.dumps(tls.mutual))


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
