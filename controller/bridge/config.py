"""Typed configs of the bridge: the controller side, the robot side, and fault injection."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rtmpc.configs import Config, ConfigError, param

__all__ = ["FaultConfig", "BridgeConfig", "ServerConfig", "DEFAULT_ENDPOINT", "check_endpoint"]

DEFAULT_ENDPOINT = "tcp/127.0.0.1:7447"
_ENDPOINT = re.compile(r"^(tcp|udp)/(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
_KEY = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")


def check_endpoint(name: str, endpoint: str) -> None:
    """Raise ConfigError unless ``endpoint`` is ``tcp|udp/HOST:PORT`` with a port in 1..65535."""
    m = _ENDPOINT.match(endpoint)
    if not m or not 0 < int(m.group(3)) < 65536:
        raise ConfigError(f"{name} = {endpoint!r} is not an endpoint: write PROTOCOL/HOST:PORT, "
                          f"e.g. {DEFAULT_ENDPOINT} (protocol tcp or udp, port 1-65535)")


@dataclass(frozen=True)
class FaultConfig(Config):
    """Faults injected into the messages a side sends (tests, benchmarks): each message is
    dropped, held back behind the next one sent (reordered) or sent twice, at random."""

    drop: float = param(0.0, "fraction of messages dropped", ge=0.0, lt=1.0)
    reorder: float = param(0.0, "fraction held back and sent after the next message", ge=0.0, lt=1.0)
    duplicate: float = param(0.0, "fraction sent twice", ge=0.0, lt=1.0)
    seed: int = param(0, "seed of the fault draws", ge=0)

    @property
    def any(self) -> bool:
        return self.drop > 0 or self.reorder > 0 or self.duplicate > 0

    def check(self) -> None:
        if self.drop + self.reorder + self.duplicate >= 1.0:
            raise ConfigError(f"drop + reorder + duplicate = "
                              f"{self.drop + self.reorder + self.duplicate:g} must be below 1")


@dataclass(frozen=True)
class _Common(Config):
    endpoint: str = param(DEFAULT_ENDPOINT, "where the robot listens: tcp/HOST:PORT or udp/HOST:PORT "
                                            "(explicit endpoints only: no scouting)")
    key: str = param("rtmpc/robot", "key prefix of the topics: KEY/obs, KEY/cmd, KEY/alive")
    faults: FaultConfig = param(FaultConfig(), "faults injected into the messages this side sends")

    def check(self) -> None:
        check_endpoint("endpoint", self.endpoint)
        if not _KEY.match(self.key):
            raise ConfigError(f"key = {self.key!r} must be words (letters, digits, _ or -) joined "
                              f"by /, e.g. rtmpc/robot")


@dataclass(frozen=True)
class BridgeConfig(_Common):
    """The controller's side: :class:`~controller.bridge.BridgeRobot`."""

    connect_timeout_s: float = param(10.0, "how long to wait for the robot's first observation", gt=0.0)
    command_deadline_s: float | None = param(None, "a command must reach the robot within this "
                                                   "long after the observation it answers was "
                                                   "published, else the robot drops it; null = 3 "
                                                   "control periods", gt=0.0)


@dataclass(frozen=True)
class ServerConfig(_Common):
    """The robot's side: :class:`~controller.bridge.RobotServer`."""

    watchdog_periods: int = param(25, "apply the safe action when no fresh command has arrived "
                                      "for this many robot periods (25 = 250 ms at 100 Hz)", ge=1)
    linger_s: float = param(0.5, "after an episode ends, keep publishing its last observation "
                                 "(flagged done) this long before resetting", ge=0.0)
    episodes: int = param(0, "stop after this many episodes (0 = until stopped)", ge=0)
