"""Run directories and atomic file writes.

``runs/NAME/`` holds: ``config.yaml`` (resolved), ``manifest.json`` (the last committed
training step and the files it names: ``buffer.NNNNNN.npz``, ``checkpoints/``,
``metrics.NNNNNN.csv``), ``model.onnx``, ``metrics.csv``, plots (``*.png``), telemetry
and videos. Every file is
written to a temporary name in the same folder, flushed to disk, then renamed over the
target, so a killed run never leaves a half-written file behind. A trainer commits each
step through one manifest (:mod:`rtmpc.models.common.commit`).

:data:`fault_hook` lets a test stop the process or fail the disk at either boundary of
every write (``tests/models/fault_harness.py``).
"""

from __future__ import annotations

import csv
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Mapping

import yaml

__all__ = ["atomic_path", "atomic_write", "atomic_write_bytes", "write_text", "write_yaml", "append_csv_row",
           "write_csv", "read_csv", "RunDir", "fault_hook"]

# Fault injection for tests: when set, called as ``fault_hook(path, point)`` at both boundaries
# of every write: point "staged" (the new bytes are in the temporary file, not yet renamed;
# raising here is a failed write, e.g. ENOSPC) and "renamed" (the new file is in place).
fault_hook: Callable[[Path, str], None] | None = None


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an error the
    file is fsync'ed and renamed over ``path`` (and the directory entry made durable);
    on an error the temporary file is removed and ``path`` is left as it was. The one
    way rtmpc writes a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if fault_hook is not None:
            fault_hook(path, "staged")
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    _fsync_dir(path.parent)
    if fault_hook is not None:
        fault_hook(path, "renamed")


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; not every platform can open or fsync a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # the rename is still atomic
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(binary file)`` on a temporary file beside ``path``, then rename it to
    ``path`` (:func:`atomic_path`). Returns ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_yaml(path: str | Path, data: Mapping[str, Any]) -> Path:
    return write_text(path, yaml.safe_dump(dict(data), sort_keys=False))


def append_csv_row(path: str | Path, row: Mapping[str, Any]) -> None:
    """Append one row (header written when the file is new); rewrites atomically."""
    path = Path(path)
    rows: list[Mapping[str, Any]] = read_csv(path) if path.exists() else []
    write_csv(path, [*rows, dict(row)])


def write_csv(path: str | Path, rows: list[Mapping[str, Any]]) -> Path:
    """Write ``rows`` (header: every key, in order of first appearance) atomically."""
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
    return Path(path)


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class RunDir:
    """Paths of one run's files."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def make(self) -> "RunDir":
        self.root.mkdir(parents=True, exist_ok=True)
        self.checkpoints.mkdir(exist_ok=True)
        return self

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def model(self) -> Path:
        return self.root / "model.onnx"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    def file(self, name: str) -> Path:
        return self.root / name

    @contextmanager
    def lock(self) -> Iterator["RunDir"]:
        """Hold the run's writer lock (``RUN/.lock``, an exclusive ``flock``) for the block: a
        second writer is refused with the holder's pid. The kernel drops the lock when the
        holder dies, so a killed run never leaves the directory locked."""
        import fcntl

        from rtmpc.configs import ConfigError

        self.make()
        f = open(self.root / ".lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise ConfigError(f"run {self.root} is being written by pid {holder}: wait for it to end, or "
                              f"use another --out") from None
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            yield self
        finally:
            f.close()
