"""The robot in another process: a bridge over Eclipse Zenoh (docs/bridge.md).

* :mod:`~controller.bridge.messages`: the versioned wire format (no zenoh needed);
* :class:`BridgeRobot`: the controller's side, a :class:`~controller.base.Robot`;
* :class:`RobotServer`: the robot's side (``rtmpc robot``), with its command watchdog;
* :class:`Ros2Robot`: the controller's side for a robot that speaks ROS 2 (JointState in,
  Float64MultiArray out, CDR by rosbags), e.g. through zenoh-bridge-ros2dds.

Zenoh is imported only when a session is opened (``pip install 'rtmpc[bridge]'``).
"""

from rtmpc.controller.bridge.client import BridgeRobot
from rtmpc.controller.bridge.config import DEFAULT_ENDPOINT, BridgeConfig, FaultConfig, ServerConfig
from rtmpc.controller.bridge.messages import VERSION, MessageError
from rtmpc.controller.bridge.ros2 import Ros2Config, Ros2Robot
from rtmpc.controller.bridge.server import RobotServer
from rtmpc.controller.bridge.transport import BridgeError

__all__ = ["BridgeRobot", "RobotServer", "Ros2Robot", "Ros2Config", "BridgeConfig", "ServerConfig", "FaultConfig",
           "BridgeError",
           "MessageError", "VERSION", "DEFAULT_ENDPOINT"]
