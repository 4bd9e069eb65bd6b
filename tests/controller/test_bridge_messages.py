"""The bridge's wire format: round trips, and every malformed message rejected with a reason."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from rtmpc.controller.bridge.messages import (
    CMD_HEAD,
    MAGIC,
    OBS_DONE,
    OBS_HEAD,
    OBS_WATCHDOG,
    VERSION,
    CmdEncoder,
    MessageError,
    ObsEncoder,
    cmd_size,
    decode_cmd,
    decode_obs,
    obs_size,
)


def test_observation_round_trip_is_exact():
    values = np.array([1.5, -2.25, np.pi, 1e-300, -0.0])
    enc = ObsEncoder(5, session=0xDEADBEEF)
    buf = enc.encode(seq=2**40 + 7, stamp=1234.5678, ret=-3.25, episode=4, step=999, values=values,
                     flags=OBS_DONE | OBS_WATCHDOG)
    assert len(buf) == obs_size(5) == OBS_HEAD + 40 and buf[:4] == MAGIC and buf[4] == VERSION
    m = decode_obs(buf, 5)
    assert (m.session, m.flags, m.seq, m.stamp, m.ret, m.episode, m.step) == (
        0xDEADBEEF, OBS_DONE | OBS_WATCHDOG, 2**40 + 7, 1234.5678, -3.25, 4, 999)
    assert np.array_equal(m.values, values) and m.values.dtype == np.float64
    assert m.values.flags.writeable  # a copy, not a view of the message


def test_command_round_trip_is_exact_and_the_encoder_reuses_its_buffer():
    enc = CmdEncoder(2, session=7)
    a = enc.encode(seq=1, obs_seq=41, deadline=float("inf"), action=np.array([0.25, -1.0]))
    b = enc.encode(seq=2, obs_seq=42, deadline=10.5, action=np.array([1.0, 0.0]))
    assert len(a) == len(b) == cmd_size(2) == CMD_HEAD + 16
    ma, mb = decode_cmd(a, 2), decode_cmd(b, 2)  # `a` is unchanged by the second encode
    assert (ma.session, ma.seq, ma.obs_seq, ma.deadline) == (7, 1, 41, float("inf"))
    assert np.array_equal(ma.action, [0.25, -1.0])
    assert (mb.seq, mb.obs_seq, mb.deadline) == (2, 42, 10.5) and np.array_equal(mb.action, [1.0, 0.0])


def test_layout_is_the_documented_little_endian_one():
    buf = CmdEncoder(1, session=3).encode(seq=5, obs_seq=4, deadline=2.0, action=np.array([0.5]))
    assert struct.unpack("<4sBBHIIQQdd", buf) == (MAGIC, VERSION, 2, 1, 3, 0, 5, 4, 2.0, 0.5)
    buf = ObsEncoder(1, session=9).encode(seq=6, stamp=1.0, ret=2.0, episode=3, step=4, values=np.array([7.0]))
    assert struct.unpack("<4sBBHIIQddIId", buf) == (MAGIC, VERSION, 1, 1, 9, 0, 6, 1.0, 2.0, 3, 4, 7.0)


def _obs(n=3):
    return ObsEncoder(n, session=1).encode(1, 0.5, 0.0, 0, 0, np.zeros(n))


def _cmd(n=1, **kw):
    args = dict(seq=1, obs_seq=1, deadline=1.0, action=np.zeros(n)) | kw
    return CmdEncoder(n, session=1).encode(**args)


def _patched(buf: bytes, offset: int, fmt: str, value) -> bytes:
    b = bytearray(buf)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


@pytest.mark.parametrize("buf, reason", [
    (b"", "size"),
    (b"RTMC\x01", "size"),
    (_obs()[:-1], "size"),  # truncated
    (_obs() + b"\x00" * 8, "size"),  # one value too many for its n
    (_obs(4), "size"),  # another task's size
    (_patched(_obs(), 0, "<4s", b"XXXX"), "magic"),
    (_patched(_obs(), 4, "<B", VERSION + 1), "version"),
    (_patched(_obs(), 4, "<B", 0), "version"),
    (_cmd(3), "kind"),  # a command where an observation is expected
    (_patched(_obs(), 24, "<d", float("nan")), "value"),  # NaN stamp (offset 24)
])
def test_bad_observations_are_rejected_with_their_reason(buf, reason):
    with pytest.raises(MessageError) as err:
        decode_obs(buf, 3)
    assert err.value.reason == reason


@pytest.mark.parametrize("buf, reason", [
    (_cmd()[:20], "size"),
    (_cmd(2), "size"),
    (_patched(_cmd(), 4, "<B", 2), "version"),
    (_obs(1), "kind"),
    (_cmd(deadline=float("nan")), "value"),
    (_cmd(action=np.array([np.inf])), "value"),
    (_cmd(action=np.array([np.nan])), "value"),
    (_patched(_cmd(), 12, "<I", 1), "value"),  # undefined flags
])
def test_bad_commands_are_rejected_with_their_reason(buf, reason):
    with pytest.raises(MessageError) as err:
        decode_cmd(buf, 1)
    assert err.value.reason == reason


def test_nonfinite_observation_values_pass_to_the_safety_filter():
    buf = ObsEncoder(2, session=1).encode(1, 0.0, 0.0, 0, 0, np.array([np.nan, np.inf]))
    m = decode_obs(buf, 2)
    assert np.isnan(m.values[0]) and np.isinf(m.values[1])


def test_random_bytes_only_ever_raise_message_errors():
    rng = np.random.default_rng(0)
    good = _obs()
    for i in range(3000):
        if i % 2:  # mutate a valid message: the header checks must still hold
            b = bytearray(good)
            for j in rng.integers(0, len(b), size=rng.integers(1, 4)):
                b[j] = rng.integers(0, 256)
            buf = bytes(b[: rng.integers(0, len(b) + 1)] if i % 3 == 0 else b)
        else:
            buf = rng.bytes(int(rng.integers(0, 120)))
        for decode in (decode_obs, decode_cmd):
            try:
                decode(buf, 3)
            except MessageError:
                pass


@pytest.mark.parametrize("n, session", [(70000, 1), (2, 0), (2, 1 << 32)])
def test_encoders_refuse_what_the_header_cannot_hold(n, session):
    with pytest.raises(ValueError):
        ObsEncoder(n, session)
