"""The robot in another process: a bridge over Eclipse Zenoh (docs/bridge.md).

* :mod:`~controller.bridge.messages`: the versioned wire format (no zenoh needed);
* :class:`BridgeRobot`: the controller's side, a :class:`~controller.base.Robot`;
* :class:`RobotServer`: the robot's side (``rtmpc robot``), with its command watchdog.

Zenoh is imported only when a session is opened (``pip install 'rtmpc[bridge]'``).
"""

from rtmpc.controller.bridge.client import BridgeRobot
from rtmpc.controller.bridge.config import DEFAULT_ENDPOINT, BridgeConfig, FaultConfig, ServerConfig
from rtmpc.controller.bridge.messages import VERSION, MessageError
from rtmpc.controller.bridge.server import RobotServer
from rtmpc.controller.bridge.transport import BridgeError

__all__ = ["BridgeRobot", "RobotServer", "BridgeConfig", "ServerConfig", "FaultConfig", "BridgeError",
           "MessageError", "VERSION", "DEFAULT_ENDPOINT"]
