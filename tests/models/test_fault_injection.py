"""Nothing lost at any write: a kill or a full disk at every write boundary of a tiny training
run of every registered family resumes to the uninterrupted run's result (fault_harness.py),
and a failed export or telemetry write leaves the previous file whole."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rtmpc.configs import rundir
from rtmpc.models import registry

HARNESS = Path(__file__).with_name("fault_harness.py")


@pytest.mark.parametrize("family", registry.names())
def test_a_kill_or_full_disk_at_any_write_resumes_to_the_same_run(family, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(HARNESS), family, str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=600)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, "\n".join(lines[-20:]) + proc.stderr[-3000:]
    result = json.loads(lines[-1])
    # every write of the run was a case: both boundaries killed, the staged one failed with ENOSPC
    assert result["failures"] == 0 and result["cases"] == result["writes"] * 3 // 2 and result["writes"] >= 10


class _Fault:
    """fault_hook that fails the ``at``-th write's staged point with ENOSPC."""

    def __init__(self, at: int):
        self.at, self.count = at, 0

    def __call__(self, path, point):
        if point == "staged":
            self.count += 1
            if self.count == self.at:
                raise OSError(errno.ENOSPC, "No space left on device (injected)", str(path))


def test_a_full_disk_during_telemetry_save_keeps_the_last_whole_files(tmp_path, monkeypatch):
    from rtmpc.controller import Observation, Telemetry
    from rtmpc.controller.telemetry import PLAN

    def telemetry(n):
        t = Telemetry(capacity=16, obs_dim=2, act_dim=1)
        for c in range(n):
            ob = Observation(values=np.array([c, -c], float), stamp=0.1 * c, seq=c, reward=1.0)
            t.record(c, 0.1 * c, 0.1 * c, 0.1 * c + 0.02, ob, np.array([0.5]), np.array([0.25]), 0.01, False, PLAN,
                     float(c), 0.0, 0)
        return t

    first = telemetry(3)
    first.save(tmp_path, summary={"cycles": 3})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for at in (1, 2):
        monkeypatch.setattr(rundir, "fault_hook", _Fault(at))
        with pytest.raises(OSError, match="No space left"):
            telemetry(5).save(tmp_path, summary={"cycles": 5})
        monkeypatch.setattr(rundir, "fault_hook", None)
        after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
        if at == 1:
            assert after == before  # neither file replaced, no temporary file left
        else:  # the npz is the new one, the summary still the old one: each file whole
            assert after.keys() == before.keys() and after["telemetry_summary.json"] == before["telemetry_summary.json"]
        with np.load(tmp_path / "telemetry.npz") as z:
            assert len(z["cycle"]) == (3 if at == 1 else 5)
