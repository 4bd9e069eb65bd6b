"""One commit point per training step: a run directory's manifest.

A trainer's step writes each of its files under a new, step-numbered name
(``buffer.000004.npz``, ``checkpoints/ensemble.000004.pt``, ``metrics.000004.csv``),
each one fsync'ed and renamed into place (:func:`rtmpc.configs.rundir.atomic_path`), and
then commits the step by atomically replacing one small file, ``RUN/manifest.json``, that
names those files and holds the trainer's progress (counters, random-generator states).
Resume reads the manifest only: a kill or a full disk before the manifest's rename leaves
the previous step committed and whole, and after it the new one. Files that no manifest
names (a killed step's, the step before the last's) are removed after each commit and on
resume.

Files a person reads (``metrics.csv``, ``learning_curve.png``, ``model.onnx``) are
published from the committed ones after each commit; they are never read back.

    commits = Manifest(run)
    last = commits.read()                      # None: a new run
    path = commits.stage("buffer", "buffer.npz", step=4)
    buffer.save(path)
    commits.commit(step=4, files={"buffer": path}, state={"episodes": 4, "rng": ...})
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

from rtmpc.configs.rundir import RunDir, write_text
from rtmpc.models.base import ModelError

__all__ = ["Manifest", "MANIFEST_FORMAT", "committed_file"]

MANIFEST_FORMAT = 1
_STEP = re.compile(r"^(?P<stem>.+)\.(?P<step>\d{6,})(?P<suffix>\.[^.]+)$")


class Manifest:
    """The commit record of one run directory (``RUN/manifest.json``)."""

    NAME = "manifest.json"

    def __init__(self, run: RunDir | str | Path):
        self.run = run if isinstance(run, RunDir) else RunDir(run)
        self.path = self.run.root / self.NAME
        self._data: dict[str, Any] | None = None

    def read(self) -> dict[str, Any] | None:
        """The last committed step, ``{"format", "step", "files", "state"}``, or None when the
        run has none. A manifest that cannot be read, or names a missing file, is a one-line
        ModelError (the manifest is only ever replaced whole, so either means another program
        changed the run)."""
        if not self.path.exists():
            self._data = None
            return None
        try:
            data = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ModelError(f"{self.path} is unreadable ({type(err).__name__}: {err}): it is only ever replaced "
                             f"whole, so another program changed it; restore it or start over with --overwrite"
                             ) from None
        if (not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT
                or not isinstance(data.get("files"), dict) or not isinstance(data.get("state"), dict)
                or not isinstance(data.get("step"), int)):
            raise ModelError(f"{self.path} is not an rtmpc manifest of format {MANIFEST_FORMAT}: start over with "
                             f"--overwrite")
        for name, rel in data["files"].items():
            if not isinstance(rel, str) or Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise ModelError(f"{self.path}: file {name!r} = {rel!r} is not a path inside the run")
            if not (self.run.root / rel).is_file():
                raise ModelError(f"{self.path} names {rel}, which is missing: the run was changed by another "
                                 f"program; restore the file or start over with --overwrite")
        self._data = data
        return data

    @property
    def step(self) -> int:
        """The last committed step (0: none)."""
        return int(self._data["step"]) if self._data else 0

    @property
    def state(self) -> dict[str, Any]:
        return dict(self._data["state"]) if self._data else {}

    def file(self, name: str) -> Path | None:
        """The committed file ``name`` (as :meth:`read` last saw it), None if there is none."""
        rel = (self._data or {}).get("files", {}).get(name)
        return self.run.root / rel if rel else None

    def stage(self, name: str, template: str, step: int) -> Path:
        """Where step ``step`` writes its version of ``template`` (a path relative to the run,
        e.g. ``checkpoints/ensemble.pt`` -> ``checkpoints/ensemble.000004.pt``). Never the
        committed file, so writing it cannot damage the last commit."""
        rel = Path(template)
        path = self.run.root / rel.parent / f"{rel.stem}.{step:06d}{rel.suffix}"
        if path == self.file(name):
            raise ModelError(f"step {step} would overwrite the committed {path.name}: steps must increase")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def commit(self, step: int, files: Mapping[str, Path], state: Mapping[str, Any],
               keep: tuple[str, ...] = ()) -> None:
        """Commit step ``step``: ``files`` (name -> path) and the trainer's ``state`` (JSON),
        plus the names in ``keep`` carried over from the last commit unchanged. The manifest's
        rename is the commit point; the files no manifest names are removed after it."""
        if step <= self.step:
            raise ModelError(f"step {step} is not after the committed step {self.step}")
        rels = {name: (self._data or {})["files"][name] for name in keep if self.file(name) is not None}
        for name, path in files.items():
            path = Path(path)
            if not path.is_file():
                raise ModelError(f"cannot commit {name}: {path} was not written")
            rels[name] = path.relative_to(self.run.root).as_posix()
        data = {"format": MANIFEST_FORMAT, "step": int(step), "files": rels, "state": dict(state)}
        write_text(self.path, json.dumps(data, indent=1, sort_keys=True))
        self._data = data
        self.clean()

    def reset(self) -> None:
        """Forget every commit (the run starts over): the manifest goes, then every step file."""
        self.path.unlink(missing_ok=True)
        self._data = None
        self.clean()

    def clean(self) -> list[Path]:
        """Remove step-numbered files the manifest does not name, and temporary files left by a
        killed write; the removed paths."""
        named = {(self.run.root / rel).resolve() for rel in ((self._data or {}).get("files") or {}).values()}
        removed = []
        for folder in (self.run.root, self.run.checkpoints):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                stale_step = _STEP.match(path.name) and path.resolve() not in named
                stale_tmp = path.name.startswith(".") and ".tmp" in path.name
                if path.is_file() and (stale_step or stale_tmp):
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed


def committed_file(run: RunDir | str | Path, name: str, legacy: str) -> Path:
    """The run's committed file ``name``; for a run written before manifests (rtmpc <= 0.2),
    the file at ``legacy`` (relative to the run). A one-line ModelError if there is neither."""
    manifest = Manifest(run)
    manifest.read()
    path = manifest.file(name)
    if path is not None:
        return path
    old = manifest.run.root / legacy
    if manifest.step == 0 and old.is_file():
        return old
    raise ModelError(f"run {manifest.run.root} has no committed {name} yet: train it (rtmpc train ... --resume) "
                     f"until a step is committed")
