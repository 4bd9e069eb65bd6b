"""The bridge's wire format, version 1: observations (robot -> controller) and commands
(controller -> robot), struct-packed little-endian binary. Pure Python + NumPy: neither
the middleware nor the simulator is imported here.

Every message starts with the same 16-byte header::

    offset size type     field
    0      4    bytes    magic    b"RTMC"
    4      1    uint8    version  1 (VERSION)
    5      1    uint8    kind     1 = observation, 2 = command
    6      2    uint16   n        length of the vector at the end (O or A)
    8      4    uint32   session  sender's id, random per robot process / controller
                                  connection, never 0; a new value = the sender restarted
    12     4    uint32   flags    bit mask, per kind (below)

Observation (kind 1), 48 + 8 O bytes::

    16     8    uint64   seq      +1 per observation published by this session
    24     8    float64  stamp    robot's monotonic clock at publication, seconds
    32     8    float64  ret      the episode's return so far (rewards summed since reset):
                                  the reward between two readings is the difference, so
                                  a lost message loses no reward
    40     4    uint32   episode  episode index of this robot session, from 0
    44     4    uint32   step     physics steps taken in this episode
    48     8 O  float64  values   the observation (O,)
    flags: OBS_DONE (1) the episode has ended; OBS_WAITING (2) reset, waiting for the
    first command before the physics starts; OBS_WATCHDOG (4) no fresh command for the
    robot's watchdog time: the robot is applying its safe action.

Command (kind 2), 40 + 8 A bytes::

    16     8    uint64   seq      +1 per command sent by this session
    24     8    uint64   obs_seq  seq of the observation the command answers: the newest
                                  one read when it was sent, i.e. the period it is for
                                  (commit "next": planned a cycle earlier, for this period)
    32     8    float64  deadline robot-clock time after which the command must not be
                                  applied (it arrived too late: dropped); +inf = none
    40     8 A  float64  action   the action (A,)
    flags: none defined in version 1 (must be 0).

A receiver checks, in order: length >= 16 (else ``size``), magic (``magic``), version
(``version``), kind (``kind``), n against the size it expects and the length against
n (``size``), then kind-specific values: a command's deadline must not be NaN and its
action must be finite (``value``). A failing message raises :class:`MessageError`
with ``reason`` one of :data:`REASONS`; the receiver drops it and counts it under that
reason. A later version that only appends fields raises the version number; a receiver
of this module drops it (a mismatch is never guessed at).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

__all__ = ["count_rejected", "VERSION", "MAGIC", "OBS", "CMD", "OBS_DONE", "OBS_WAITING", "OBS_WATCHDOG", "REASONS",
           "MessageError", "ObsMessage", "CmdMessage", "ObsEncoder", "CmdEncoder", "decode_obs",
           "decode_cmd", "cmd_session", "obs_size", "cmd_size", "new_session_id"]

MAGIC = b"RTMC"
VERSION = 1
OBS, CMD = 1, 2
OBS_DONE, OBS_WAITING, OBS_WATCHDOG = 1, 2, 4
REASONS = ("size", "magic", "version", "kind", "value")

_HEADER = struct.Struct("<4sBBHII")  # magic, version, kind, n, session, flags
_OBS = struct.Struct("<QddII")  # seq, stamp, ret, episode, step
_CMD = struct.Struct("<QQd")  # seq, obs_seq, deadline
_OBS_AT = _HEADER.size  # 16
_CMD_AT = _HEADER.size
OBS_HEAD = _HEADER.size + _OBS.size  # 48: where the values start
CMD_HEAD = _HEADER.size + _CMD.size  # 40
_U64 = (1 << 64) - 1


class MessageError(ValueError):
    """A received message is malformed; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, text: str):
        super().__init__(text)
        self.reason = reason


def obs_size(n: int) -> int:
    """Bytes of an observation message with n values."""
    return OBS_HEAD + 8 * n


def cmd_size(n: int) -> int:
    """Bytes of a command message with n action values."""
    return CMD_HEAD + 8 * n


def new_session_id(rng: np.random.Generator | None = None) -> int:
    """A random non-zero uint32 (pass a generator for reproducible ids)."""
    rng = rng if rng is not None else np.random.default_rng()
    return int(rng.integers(1, 1 << 32))


@dataclass(frozen=True)
class ObsMessage:
    session: int
    flags: int
    seq: int
    stamp: float
    ret: float
    episode: int
    step: int
    values: np.ndarray  # (O,) float64, a copy


@dataclass(frozen=True)
class CmdMessage:
    session: int
    flags: int
    seq: int
    obs_seq: int
    deadline: float
    action: np.ndarray  # (A,) float64, a copy


class _Encoder:
    """Packs messages of one kind and size into a buffer allocated once."""

    def __init__(self, kind: int, n: int, head: int, session: int):
        if not 0 <= n <= 0xFFFF:
            raise ValueError(f"vector length {n} does not fit the 16-bit size field")
        if not 0 < session <= 0xFFFFFFFF:
            raise ValueError(f"session id {session} must be a non-zero uint32")
        self.n, self.session, self._kind = n, session, kind
        self.buf = bytearray(head + 8 * n)
        self._vec = np.frombuffer(self.buf, dtype="<f8", count=n, offset=head)

    def _pack(self, flags: int, vector: np.ndarray) -> bytes:
        _HEADER.pack_into(self.buf, 0, MAGIC, VERSION, self._kind, self.n, self.session, flags)
        np.copyto(self._vec, np.asarray(vector, dtype=np.float64).reshape(self.n))
        return bytes(self.buf)


class ObsEncoder(_Encoder):
    """Observation messages of O values from one robot session."""

    def __init__(self, obs_dim: int, session: int):
        super().__init__(OBS, obs_dim, OBS_HEAD, session)

    def encode(self, seq: int, stamp: float, ret: float, episode: int, step: int,
               values: np.ndarray, flags: int = 0) -> bytes:
        _OBS.pack_into(self.buf, _OBS_AT, seq & _U64, stamp, ret, episode, step)
        return self._pack(flags, values)


class CmdEncoder(_Encoder):
    """Command messages of A values from one controller session."""

    def __init__(self, act_dim: int, session: int):
        super().__init__(CMD, act_dim, CMD_HEAD, session)

    def encode(self, seq: int, obs_seq: int, deadline: float, action: np.ndarray) -> bytes:
        _CMD.pack_into(self.buf, _CMD_AT, seq & _U64, obs_seq & _U64, deadline)
        return self._pack(0, action)


def _header(buf: bytes, kind: int, n: int, head: int) -> tuple[int, int]:
    if len(buf) < _HEADER.size:
        raise MessageError("size", f"{len(buf)} bytes is shorter than the {_HEADER.size}-byte header")
    magic, version, got_kind, got_n, session, flags = _HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise MessageError("magic", f"magic {magic!r} is not {MAGIC!r}")
    if version != VERSION:
        raise MessageError("version", f"version {version} is not {VERSION}")
    if got_kind != kind:
        raise MessageError("kind", f"kind {got_kind} where {kind} was expected")
    if got_n != n or len(buf) != head + 8 * n:
        raise MessageError("size", f"{len(buf)} bytes with n = {got_n}: expected n = {n}, "
                                   f"{head + 8 * n} bytes")
    return session, flags


def decode_obs(buf: bytes, obs_dim: int) -> ObsMessage:
    """An observation message of ``obs_dim`` values, validated; raises MessageError.

    Non-finite values pass (the controller's safety filter flags them); a NaN stamp or
    return is a ``value`` error.
    """
    session, flags = _header(buf, OBS, obs_dim, OBS_HEAD)
    seq, stamp, ret, episode, step = _OBS.unpack_from(buf, _OBS_AT)
    if math.isnan(stamp) or math.isnan(ret):
        raise MessageError("value", f"observation {seq} has a NaN stamp or return")
    values = np.frombuffer(buf, dtype="<f8", count=obs_dim, offset=OBS_HEAD).astype(np.float64)
    return ObsMessage(session, flags, seq, stamp, ret, episode, step, values)


def count_rejected(counts: dict[str, int], lock, err: MessageError) -> bool:
    """Count a received message that failed validation (``received`` and its ``reason``)
    under ``lock``; True when it is the first with that reason (log it once)."""
    with lock:
        counts["received"] += 1
        counts[err.reason] += 1
        return counts[err.reason] == 1


def cmd_session(buf: bytes, act_dim: int) -> int:
    """The sender's session of a command message of ``act_dim`` values, after the header's
    checks (length, magic, version, kind, size); raises MessageError. What a receiver reads
    to turn a stranger away before decoding the rest."""
    return _header(buf, CMD, act_dim, CMD_HEAD)[0]


def decode_cmd(buf: bytes, act_dim: int) -> CmdMessage:
    """A command message of ``act_dim`` values, validated; raises MessageError.

    A NaN deadline, a non-finite action or undefined flags are ``value`` errors: a robot
    never applies them.
    """
    session, flags = _header(buf, CMD, act_dim, CMD_HEAD)
    seq, obs_seq, deadline = _CMD.unpack_from(buf, _CMD_AT)
    action = np.frombuffer(buf, dtype="<f8", count=act_dim, offset=CMD_HEAD).astype(np.float64)
    if flags or math.isnan(deadline) or not np.all(np.isfinite(action)):
        raise MessageError("value", f"command {seq}: flags {flags}, deadline {deadline}, action "
                                    f"{action.tolist()} (flags must be 0, deadline a number, "
                                    f"action finite)")
    return CmdMessage(session, flags, seq, obs_seq, deadline, action)
