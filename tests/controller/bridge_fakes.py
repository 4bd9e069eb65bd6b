"""Helpers for the bridge tests: free loopback ports, a toy lockstep robot, a constant
planner, and robot / controller processes that are always killed.

Every wait is bounded: a bug fails a test, never hangs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
from rtmpc.controller import Observation
from rtmpc.planners.base import Planner, PlanStats

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GUARD_S = 20.0  # the longest any single wait may take


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoint(port: int) -> str:
    return f"tcp/127.0.0.1:{port}"


def wait_until(cond: Callable[[], bool], timeout: float = GUARD_S, poll: threading.Event | None = None,
               what: str = "condition") -> float:
    """Wait until ``cond()`` (checked every ms, or whenever ``poll`` is set); returns the
    time.monotonic() at which it held; fails after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        if cond():
            return time.monotonic()
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        if poll is not None:
            poll.wait(0.001)
            poll.clear()
        else:
            threading.Event().wait(0.001)


class ToyRobot:
    """Lockstep 1-D integrator: x += a per send, reward 1 per step, done after ``steps``.
    Values (2,): x and the step count."""

    def __init__(self, steps: int = 10**9):
        self.x, self.k, self.steps = 0.0, 0, steps
        self.applied: list[float] = []
        self._reward = 0.0

    def read(self) -> Observation:
        r, self._reward = self._reward, 0.0
        return Observation(np.array([self.x, float(self.k)]), 0.01 * self.k, self.k, r, self.k >= self.steps)

    def send(self, action: np.ndarray) -> None:
        a = float(action[0])
        self.applied.append(a)
        self.x += a
        self.k += 1
        self._reward += 1.0

    def close(self) -> None:
        pass


class ConstantPlanner(Planner):
    """Plans ``value`` (A,) for every row of an H-step plan; no time spent."""

    def __init__(self, act_dim: int = 1, horizon: int = 5, value: float = 0.5):
        self._plan = np.full((horizon, act_dim), value)
        self.stats = PlanStats()
        self.calls = 0

    def plan(self, obs: np.ndarray, first_action: np.ndarray | None = None) -> np.ndarray:
        self.calls += 1
        return self._plan[0 if first_action is None else 1].copy()

    def planned_actions(self) -> np.ndarray:
        return self._plan

    def reset(self) -> None:
        pass


class Process:
    """A child process with its output in files; :meth:`kill` (SIGKILL) is always safe."""

    def __init__(self, args: list[str], log_dir: Path, name: str):
        self.out_path, self.err_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
        self._out, self._err = open(self.out_path, "w"), open(self.err_path, "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.p = subprocess.Popen(args, stdout=self._out, stderr=self._err, cwd=ROOT, env=env)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(GUARD_S)
        self._out.close()
        self._err.close()

    def terminate(self, timeout: float = GUARD_S) -> int:
        """SIGTERM, wait (SIGKILL after ``timeout``), return the exit status."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout)
        finally:
            self.kill()

    def json_line(self) -> dict:
        return json.loads(self.out_path.read_text().strip().splitlines()[-1])

    def logs(self) -> str:
        return f"--- stdout\n{self.out_path.read_text()[-3000:]}\n--- stderr\n{self.err_path.read_text()[-3000:]}"


@contextlib.contextmanager
def process(args: list[str], log_dir: Path, name: str):
    proc = Process(args, log_dir, name)
    try:
        yield proc
    finally:
        proc.kill()


def robot_args(port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rtmpc.scripts.cli", "robot", "--task", "cartpole-swingup", "--endpoint",
            endpoint(port), "--json", "--duration", "60", *extra]


def controller_args(port: int, rate: float) -> list[str]:
    return [sys.executable, str(HERE / "bridge_controller.py"), endpoint(port), str(rate)]


def make_certs(out: Path) -> dict[str, str]:
    """A CA and, signed by it, a certificate for the robot (localhost, 127.0.0.1) and one for a
    controller, made with the openssl command line (skips the test without it). Returns
    the PEM paths: ca, robot_cert, robot_key, ctl_cert, ctl_key, obs_cert, obs_key (common
    name observer); and a second CA (other_ca)."""
    import shutil

    import pytest

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("making test certificates needs the openssl command line (apt install openssl)")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=out, check=True, capture_output=True, timeout=GUARD_S)

    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for ca in ("ca", "other_ca"):
        run("req", "-x509", *key, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN=rtmpc {ca}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, cn in (("robot", "robot"), ("ctl", "controller"), ("obs", "observer")):
        run("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        (out / f"{name}.ext").write_text("basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                         "extendedKeyUsage=serverAuth,clientAuth\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return {"ca": str(out / "ca.pem"), "other_ca": str(out / "other_ca.pem"), "robot_cert": str(out / "robot.pem"),
            "robot_key": str(out / "robot.key"), "ctl_cert": str(out / "ctl.pem"), "ctl_key": str(out / "ctl.key"),
            "obs_cert": str(out / "obs.pem"), "obs_key": str(out / "obs.key")}
