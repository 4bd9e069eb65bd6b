"""ReplayBuffer: growth, atomic save, round trip, damaged files."""

from __future__ import annotations

import numpy as np
import pytest
from rtmpc.models import ModelError, ReplayBuffer


def filled(n: int = 37) -> ReplayBuffer:
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(3, 2, capacity=4)
    for i in range(n):
        buf.add(rng.standard_normal(3), rng.uniform(-1, 1, 2), float(rng.standard_normal()),
                rng.standard_normal(3), terminated=(i % 10 == 9), episode=i // 10)
    return buf


def test_grows_and_keeps_contents():
    buf = filled(37)
    assert len(buf) == 37 and buf.capacity >= 37
    assert buf.obs.shape == (37, 3) and buf.act.shape == (37, 2) and buf.reward.shape == (37,)
    assert buf.num_episodes == 4
    assert buf.terminated.sum() == 3
    assert buf.obs.dtype == np.float32 and buf.episode.dtype == np.int64


def test_round_trip(tmp_path):
    buf = filled()
    path = buf.save(tmp_path / "run" / "buffer.npz")
    again = ReplayBuffer.load(path)
    assert (again.obs_dim, again.act_dim, len(again)) == (3, 2, 37)
    for name in ("obs", "act", "reward", "next_obs", "terminated", "episode"):
        np.testing.assert_array_equal(getattr(again, name), getattr(buf, name))
    assert [p.name for p in path.parent.iterdir()] == ["buffer.npz"]  # no temporary left behind


def test_save_replaces_atomically(tmp_path, monkeypatch):
    import errno

    from rtmpc.configs import rundir

    path = tmp_path / "buffer.npz"
    filled(5).save(path)

    def full_disk(p, point):
        if point == "staged":
            raise OSError(errno.ENOSPC, "No space left on device", str(p))

    monkeypatch.setattr(rundir, "fault_hook", full_disk)
    with pytest.raises(OSError, match="No space left"):
        filled(12).save(path)
    monkeypatch.setattr(rundir, "fault_hook", None)
    assert len(ReplayBuffer.load(path)) == 5 and [p.name for p in tmp_path.iterdir()] == ["buffer.npz"]
    filled(12).save(path)
    assert len(ReplayBuffer.load(path)) == 12


def test_empty_round_trip(tmp_path):
    path = ReplayBuffer(4, 1).save(tmp_path / "b.npz")
    assert len(ReplayBuffer.load(path)) == 0


def test_missing_and_damaged_files(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        ReplayBuffer.load(tmp_path / "nope.npz")
    good = filled().save(tmp_path / "good.npz")
    data = good.read_bytes()
    for name, content in (("truncated.npz", data[: len(data) // 2]), ("garbage.npz", b"not a zip file")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelError, match="damaged") as err:
            ReplayBuffer.load(tmp_path / name)
        assert "\n" not in str(err.value)


def test_wrong_sizes_are_refused():
    buf = ReplayBuffer(3, 2)
    with pytest.raises(ModelError, match="obs has 4 entries"):
        buf.add(np.zeros(4), np.zeros(2), 0.0, np.zeros(3), False, 0)
    with pytest.raises(ModelError, match="act has 1 entries"):
        buf.add(np.zeros(3), np.zeros(1), 0.0, np.zeros(3), False, 0)
