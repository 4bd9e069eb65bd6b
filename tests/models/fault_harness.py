"""Fault injection at every write of a tiny training run, then resume.

    python tests/models/fault_harness.py FAMILY WORKDIR [--modes kill,enospc] [--every K]

For the registered model family FAMILY (its shipped example config with its
SMOKE_OVERRIDES, the family contract's tiny budget), this process imports rtmpc and torch
once, sets torch to one thread (no thread pool exists when it forks), and:

1. runs a reference run, uninterrupted, in this process (it also compiles the kernels and
   warms the imports every child then inherits), listing every write: ``(index, file,
   point)``, point "staged" (the new bytes are written, not yet renamed) or "renamed" (in
   place), through :data:`rtmpc.configs.rundir.fault_hook`;
2. for every write boundary, in forked children: a run that is SIGKILLed there ("kill", both points) or whose
   write fails there with ``OSError(ENOSPC)`` ("enospc", staged points: a full disk fails
   the write, not the rename), then ``--resume`` to the end.

Each case must: keep every step committed before the fault (the manifest's step after the
fault equals the number of commits whose manifest rename came before it), resume without
an error, and end with the reference run's committed files: the same metrics (timing
columns aside) and the same buffer, bit for bit; for a family that says its resume is not
exact (``RESUME_EXACT = False``: deep Dyna-Q starts a new episode at a resume), the same
committed steps at the same env steps. Prints one JSON line per family with the
number of cases and seconds; exits 1 with the failing cases listed.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch  # noqa: F401  (imported once here, before the forks)
from rtmpc.configs import rundir
from rtmpc.models import registry
from rtmpc.scripts.train import train_run

TIMING = ("seconds", "fit_s", "wall_s", "export_s", "updates_per_s")


def _timing(column: str) -> bool:
    return column in TIMING or "_ms" in column or column.endswith("_s")  # fit_s, sac_updates_per_s, ...


def fork(fn) -> int:
    """Run ``fn()`` in a child process; its wait status."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            fn()
        except OSError as err:
            code = 4 if err.errno == errno.ENOSPC else 3
            print(f"child: {type(err).__name__}: {err}", file=sys.stderr)
        except BaseException as err:  # noqa: BLE001 - reported through the exit code
            print(f"child: {type(err).__name__}: {err}", file=sys.stderr)
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def train(family, out: Path, resume: bool) -> None:
    torch.set_num_threads(1)
    train_run(family.EXAMPLE_CONFIG, out=out, overrides=family.SMOKE_OVERRIDES, resume=resume,
              overwrite=not resume)


def committed(out: Path, exact: bool = True) -> tuple[int, list[dict], dict[str, np.ndarray]]:
    """(step, metrics rows without timing columns, buffer arrays) of the run's manifest; for a
    family whose resume is not exact (RESUME_EXACT False): only each row's env_steps, no buffer."""
    path = out / "manifest.json"
    if not path.exists():
        return 0, [], {}
    manifest = json.loads(path.read_text())
    files = manifest["files"]
    rows = rundir.read_csv(out / files["metrics"]) if "metrics" in files else []
    rows = [{k: v for k, v in r.items() if not _timing(k) and (exact or k == "env_steps")} for r in rows]
    buffer = {}
    if exact and "buffer" in files:
        with np.load(out / files["buffer"]) as z:
            buffer = {k: z[k].copy() for k in z.files}
    return int(manifest["step"]), rows, buffer


def record(family, out: Path) -> list[tuple[str, str]]:
    """The reference run, in this process; its writes in order."""
    events: list[tuple[str, str]] = []
    rundir.fault_hook = lambda path, point: events.append((str(Path(path).relative_to(out)), point))
    try:
        stdout, sys.stdout = sys.stdout, open(os.devnull, "w")
        train(family, out, resume=False)
    finally:
        sys.stdout.close()
        sys.stdout = stdout
        rundir.fault_hook = None
    return events


def faulty(family, out: Path, at: int, mode: str) -> int:
    def hooked() -> None:
        count = [0]

        def hook(path, point):
            count[0] += 1
            if count[0] == at:
                if mode == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise OSError(errno.ENOSPC, "No space left on device (injected)", str(path))

        rundir.fault_hook = hook
        train(family, out, resume=False)

    return fork(hooked)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("family", choices=registry.names())
    p.add_argument("workdir", type=Path)
    p.add_argument("--modes", default="kill,enospc")
    p.add_argument("--every", type=int, default=1, help="test every K-th write boundary (1: all)")
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)
    family = registry.family(args.family)
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    ref = args.workdir / "reference"
    events = record(family, ref)
    exact = getattr(family, "RESUME_EXACT", True)
    ref_step, ref_rows, ref_buffer = committed(ref, exact)
    failures, cases = [], 0
    for mode in args.modes.split(","):
        for i, (name, point) in enumerate(events, start=1):
            if (i - 1) % args.every or (mode == "enospc" and point != "staged"):
                continue
            cases += 1
            out = args.workdir / f"{mode}-{i}"
            where = f"{mode} at write {i} ({name}, {point})"
            status = faulty(family, out, i, mode)
            expect_signal = mode == "kill"
            if expect_signal != (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
                if not (mode == "enospc" and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 4):
                    failures.append(f"{where}: the faulty run ended with wait status {status}")
                    continue
            # the commits whose manifest rename came before the fault (a kill at a manifest's
            # "renamed" point comes after its rename: that step is committed)
            before = sum(1 for n, pt in events[:i] if n == "manifest.json" and pt == "renamed")
            step, _, _ = committed(out)
            if step != before:
                failures.append(f"{where}: {step} steps committed after the fault, {before} before it")
            status = fork(lambda: train(family, out, resume=True))  # noqa: B023
            if status != 0:
                failures.append(f"{where}: the resume failed (wait status {status})")
                continue
            step, rows, buffer = committed(out, exact)
            if step != ref_step or rows != ref_rows:
                failures.append(f"{where}: resumed to step {step} with metrics {rows}, the reference run "
                                f"{ref_step} with {ref_rows}")
            elif buffer.keys() != ref_buffer.keys() or any(not np.array_equal(buffer[k], ref_buffer[k])
                                                           for k in ref_buffer):
                failures.append(f"{where}: the resumed buffer differs from the reference run's")
    result = {"family": args.family, "writes": len(events), "cases": cases, "failures": len(failures),
              "seconds": round(time.perf_counter() - t0, 1)}
    print("\n".join(failures))
    print(json.dumps(result))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
