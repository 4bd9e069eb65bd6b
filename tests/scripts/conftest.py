"""``run_dir``: a copy, per test module, of one tiny PETS run trained once per session."""

from __future__ import annotations

import shutil

import pytest
from tiny_run import TINY, rtmpc


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    res = rtmpc("train", "pets_cartpole", "--out", str(out), *TINY)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "trained" in res.stdout
    return out


@pytest.fixture(scope="module")
def run_dir(tiny_trained, tmp_path_factory):
    """The tiny run, copied: a module may write into it without touching the others."""
    return shutil.copytree(tiny_trained, tmp_path_factory.mktemp("run") / "tiny")
