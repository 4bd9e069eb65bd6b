"""Typed configs of the bridge: the controller side, the robot side, and fault injection."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rtmpc.configs import Config, ConfigError, param

__all__ = ["FaultConfig", "TlsConfig", "BridgeConfig", "ServerConfig", "DEFAULT_PORT", "DEFAULT_ENDPOINT",
           "check_endpoint", "split_endpoint"]

# 7447 is zenohd's, rmw_zenohd's and zenoh-bridge-ros2dds's; 7446 zenoh's scouting; 7400-7650+
# DDS/RTPS domains 0-1 (ROS 2's default transport): 7390 is none of them (docs/bridge.md)
DEFAULT_PORT = 7390
DEFAULT_ENDPOINT = f"tcp/127.0.0.1:{DEFAULT_PORT}"
SECURE = ("tls", "quic")  # protocols that take a TlsConfig (QUIC runs over TLS 1.3)
_ENDPOINT = re.compile(r"^(tcp|udp|tls|quic)/(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
_KEY = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")


def check_endpoint(name: str, endpoint: str) -> None:
    """Raise ConfigError unless ``endpoint`` is ``tcp|udp|tls|quic/HOST:PORT`` with a port in 1..65535."""
    m = _ENDPOINT.match(endpoint)
    if not m or not 0 < int(m.group(3)) < 65536:
        raise ConfigError(f"{name} = {endpoint!r} is not an endpoint: write PROTOCOL/HOST:PORT, "
                          f"e.g. {DEFAULT_ENDPOINT} (protocol tcp, udp, tls or quic, port 1-65535)")


def split_endpoint(endpoint: str) -> tuple[str, str, int]:
    """(protocol, host, port) of a checked endpoint; the host without IPv6 brackets."""
    m = _ENDPOINT.match(endpoint)
    return m.group(1), m.group(2).strip("[]"), int(m.group(3))


@dataclass(frozen=True)
class TlsConfig(Config):
    """Certificates (PEM files) for a ``tls/`` or ``quic/HOST:PORT`` endpoint (zenoh's transport.link.tls)."""

    ca: str = param("", "root CA certificate that signed the other side's certificate (the controller "
                        "checks the robot's with it; with mutual TLS the robot checks the controller's)")
    cert: str = param("", "this side's certificate: the robot's (needed to listen on tls/), or the "
                          "controller's (needed with mutual TLS)")
    key: str = param("", "the private key of cert")
    mutual: bool = param(False, "mutual TLS: the robot refuses a controller without a certificate signed by ca")

    def check(self) -> None:
        for name in ("ca", "cert", "key"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ConfigError(f"tls.{name} = {path!r} is not a file: give the path of a PEM file")
        if bool(self.cert) != bool(self.key):
            raise ConfigError("tls.cert and tls.key go together: give both (a certificate and its private key)")
        if self.mutual and not (self.ca and self.cert):
            raise ConfigError("tls.mutual needs tls.ca, tls.cert and tls.key on both sides")


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
    endpoint: str = param(DEFAULT_ENDPOINT, "where the robot listens: tcp/HOST:PORT, udp/HOST:PORT, "
                                            "tls/HOST:PORT or quic/HOST:PORT (explicit endpoints only: no "
                                            "scouting)")
    key: str = param("rtmpc/robot", "key prefix of the topics: KEY/obs, KEY/cmd, KEY/alive, KEY/ctl/*")
    faults: FaultConfig = param(FaultConfig(), "faults injected into the messages this side sends")
    tls: TlsConfig = param(TlsConfig(), "certificates for a tls/ or quic/ endpoint")

    @property
    def secure(self) -> bool:
        """Whether the endpoint is tls/ or quic/ (certificates needed)."""
        return split_endpoint(self.endpoint)[0] in SECURE

    def check(self) -> None:
        check_endpoint("endpoint", self.endpoint)
        if not self.secure and (self.tls.ca or self.tls.cert):
            raise ConfigError(f"tls certificates are given but endpoint = {self.endpoint!r} is not tls/ or quic/: "
                              f"write tls/HOST:PORT or leave the certificates out")
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

    def check(self) -> None:
        super().check()
        if self.secure and not self.tls.ca:
            raise ConfigError(f"endpoint {self.endpoint} needs tls.ca, the CA certificate that signed the "
                              f"robot's (rtmpc control --tls-ca FILE)")


@dataclass(frozen=True)
class ServerConfig(_Common):
    """The robot's side: :class:`~controller.bridge.RobotServer`."""

    watchdog_periods: int = param(25, "apply the safe action when no fresh command has arrived "
                                      "for this many robot periods (25 = 250 ms at 100 Hz)", ge=1)
    linger_s: float = param(0.5, "after an episode ends, keep publishing its last observation "
                                 "(flagged done) this long before resetting", ge=0.0)
    episodes: int = param(0, "stop after this many episodes (0 = until stopped)", ge=0)
    takeover: bool = param(False, "let a new controller session replace the current one while the current "
                                  "one is alive (operator override, logged); default: only once it is gone")
    access_control: str = param("", "JSON5 file with zenoh's access_control section (docs/bridge.md)")

    def check(self) -> None:
        super().check()
        if self.secure and not self.tls.cert:
            raise ConfigError(f"endpoint {self.endpoint} needs tls.cert and tls.key, the robot's certificate "
                              f"and private key (rtmpc robot --tls-cert FILE --tls-key FILE)")
        if self.access_control and not Path(self.access_control).is_file():
            raise ConfigError(f"access_control = {self.access_control!r} is not a file: give a JSON5 file "
                              f"with zenoh's access_control section")
