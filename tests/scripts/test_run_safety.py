"""A run directory has one writer, and an existing run is never silently overwritten."""

from __future__ import annotations

import os

from rtmpc.configs.rundir import RunDir
from tiny_run import TINY, rtmpc


def test_an_existing_run_needs_resume_or_overwrite(run_dir):
    before = {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    res = rtmpc("train", "pets_cartpole", "--out", str(run_dir), *TINY)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "already holds a run: --resume to continue it, --overwrite to start over" in res.stderr
    after = {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    assert (run_dir / "metrics.csv") in before and after == before  # untouched, every file byte for byte
    res = rtmpc("train", "pets_cartpole", "--out", str(run_dir), *TINY, "--overwrite")
    assert res.returncode == 0, res.stderr[-2000:]


def test_a_second_writer_is_refused_with_the_holder_s_pid(run_dir):
    with RunDir(run_dir).lock():
        res = rtmpc("train", "pets_cartpole", "--out", str(run_dir), *TINY, "--resume")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"is being written by pid {os.getpid()}" in res.stderr.strip().splitlines()[-1]
    res = rtmpc("train", "pets_cartpole", "--out", str(run_dir), *TINY, "--resume")  # released
    assert res.returncode == 0, res.stderr[-2000:]


def _export_faults(run_dir, monkeypatch, fault):
    from rtmpc.configs import rundir
    from rtmpc.scripts.export import export_run

    monkeypatch.setattr(rundir, "fault_hook", fault)
    try:
        export_run(run_dir, samples=16)
    finally:
        monkeypatch.setattr(rundir, "fault_hook", None)


def test_a_failed_export_leaves_the_previous_model_in_place(run_dir, monkeypatch):
    """The new file is checked (parity, the runtime reads it back) beside the old one and
    moved over it only then: a failed check or a full disk at any write keeps the old model."""
    import errno

    import pytest
    from rtmpc.models import registry
    from rtmpc.models.base import ModelError
    from rtmpc.models.runtime import load_model

    model = run_dir / "model.onnx"
    old = model.read_bytes()
    writes = []
    _export_faults(run_dir, monkeypatch, lambda path, point: writes.append(point))
    assert writes.count("staged") >= 1
    model.write_bytes(old)
    for at in range(1, writes.count("staged") + 1):
        count = [0]

        def enospc(path, point, at=at, count=count):
            count[0] += point == "staged"
            if point == "staged" and count[0] == at:
                raise OSError(errno.ENOSPC, "No space left on device (injected)", str(path))

        with pytest.raises(OSError, match="No space left"):
            _export_faults(run_dir, monkeypatch, enospc)
        assert model.read_bytes() == old, at
        load_model(model)
    family = registry.family("pets")

    def bad_parity(*args, **kwargs):
        raise ModelError("ONNX/PyTorch parity failed (injected)")

    monkeypatch.setattr("rtmpc.models.common.ensemble_export.check_parity", bad_parity)
    with pytest.raises(ModelError, match="parity failed"):
        _export_faults(run_dir, monkeypatch, None)
    assert model.read_bytes() == old and family.NAME == "pets"
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".model.onnx")]  # nothing left behind
