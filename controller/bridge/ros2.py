"""The ROS 2 profile of the bridge: a robot that speaks ROS 2 messages over Zenoh.

A ros2_control robot publishes ``sensor_msgs/msg/JointState`` and its
``forward_command_controller`` subscribes to ``std_msgs/msg/Float64MultiArray``. Through
zenoh-bridge-ros2dds each ROS 2 topic is a zenoh key (the topic name without its leading
``/``) carrying the CDR-serialized message (with its 4-byte encapsulation header), so
:class:`Ros2Robot` subscribes to ``Ros2Config.joint_states`` and publishes on
``Ros2Config.commands``. CDR is read and written by ``rosbags`` (its bundled ROS 2
message definitions: no ROS install, nothing fetched at run time).

Observation: each entry of the model's observation is ``FIELD:JOINT`` (``Ros2Config.observation``),
FIELD one of position, velocity, effort, or cos / sin of the position (an angle the model
sees as a point on the circle), looked up by joint name in each JointState, whatever its
order. Command: Float64MultiArray with the action in ``data`` (no layout), because that
is what forward_command_controller subscribes to and ROS 2 has no stamped variant of it;
the command's sequence number and deadline ride in the zenoh attachment (``<Qd``: seq,
deadline on the robot's ROS clock = the answered JointState's header stamp + the command
deadline). zenoh-bridge-ros2dds does not carry attachments into DDS: a DDS robot gets the
array, a zenoh-native one can drop late commands.
"""

from __future__ import annotations

import logging
import math
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from rtmpc.configs import Config, ConfigError, param
from rtmpc.controller.base import Observation

from .config import BridgeConfig
from .transport import BridgeError, declare_publisher, open_session

__all__ = ["Ros2Config", "Ros2Robot", "JointMap", "ATTACHMENT", "JOINT_STATE", "FLOAT64_ARRAY", "typestore"]

logger = logging.getLogger(__name__)

JOINT_STATE = "sensor_msgs/msg/JointState"
FLOAT64_ARRAY = "std_msgs/msg/Float64MultiArray"
ATTACHMENT = struct.Struct("<Qd")  # command seq, deadline (robot's ROS clock, s)
FIELDS = ("position", "velocity", "effort", "cos", "sin")
_MAX_BYTES = 1 << 16  # a JointState of a few hundred joints


@dataclass(frozen=True)
class Ros2Config(Config):
    """Topics and the joint mapping of the ROS 2 profile (docs/bridge.md)."""

    joint_states: str = param("joint_states", "zenoh key of the sensor_msgs/msg/JointState topic "
                                              "(zenoh-bridge-ros2dds: the topic name without its leading /)")
    commands: str = param("forward_command_controller/commands", "zenoh key of the std_msgs/msg/"
                                                                 "Float64MultiArray command topic")
    observation: tuple[str, ...] = param((), "the model's observation in order, one FIELD:JOINT per entry, "
                                             "FIELD position, velocity, effort, cos or sin")

    def check(self) -> None:
        if not self.observation:
            raise ConfigError("ros2.observation is empty: list the model's observation as FIELD:JOINT entries, "
                              "e.g. [position:slider, cos:hinge, sin:hinge, velocity:slider, velocity:hinge]")
        for entry in self.observation:
            field, _, joint = entry.partition(":")
            if field not in FIELDS or not joint:
                raise ConfigError(f"ros2.observation entry {entry!r} is not FIELD:JOINT with FIELD one of "
                                  f"{', '.join(FIELDS)}")


def typestore():
    """rosbags' ROS 2 (Humble) message definitions; BridgeError if rosbags is missing."""
    try:
        from rosbags.typesys import Stores, get_typestore
    except ImportError as err:
        raise BridgeError("the ROS 2 profile needs rosbags: pip install 'rtmpc[bridge]' (or pip install "
                          "rosbags)") from err
    return get_typestore(Stores.ROS2_HUMBLE)


class JointMap:
    """Maps a JointState's (name, position, velocity, effort) to the model's observation (O,)."""

    def __init__(self, observation: tuple[str, ...]):
        self.entries = [entry.partition(":")[::2] for entry in observation]
        self._names: tuple[str, ...] | None = None
        self._index = np.zeros(0, np.int64)

    def values(self, names: list[str], position, velocity, effort) -> np.ndarray:
        """The observation; raises KeyError (a message naming the joint) when one is missing."""
        if tuple(names) != self._names:  # the joint order is fixed per publisher: resolved once
            where = {n: i for i, n in enumerate(names)}
            missing = sorted({j for _, j in self.entries if j not in where})
            if missing:
                raise KeyError(f"joint(s) {', '.join(missing)} not in the JointState (it has {', '.join(names)})")
            self._names, self._index = tuple(names), np.array([where[j] for _, j in self.entries])
        out = np.empty(len(self.entries))
        arrays = {"position": position, "velocity": velocity, "effort": effort}
        for k, ((field, _), i) in enumerate(zip(self.entries, self._index)):
            src = arrays["position" if field in ("cos", "sin") else field]
            if i >= len(src):
                raise KeyError(f"the JointState has no {field} for joint {self.entries[k][1]}")
            x = float(src[i])
            out[k] = math.cos(x) if field == "cos" else math.sin(x) if field == "sin" else x
        return out


class Ros2Robot:
    """A ROS 2 robot over Zenoh (see the module doc). Implements :class:`~controller.base.Robot`.

    obs_dim must equal ``len(ros2.observation)``; act_dim is the length of each command's
    data. ``read()`` returns the newest JointState mapped to the observation, ``stamp`` its
    arrival on the loop's clock (``clock``), ``seq`` the count of JointStates accepted,
    reward 0 and done False (ROS 2 says neither: the robot's side measures the return).
    Building it waits up to ``config.connect_timeout_s`` for a first JointState.
    """

    def __init__(self, obs_dim: int, act_dim: int, period_s: float, config: BridgeConfig, ros2: Ros2Config, *,
                 clock: Callable[[], float] = time.monotonic):
        if len(ros2.observation) != obs_dim:
            raise BridgeError(f"ros2.observation has {len(ros2.observation)} entries but the model has {obs_dim} "
                              f"observations: map each one to FIELD:JOINT")
        self.obs_dim, self.act_dim, self.config, self.ros2 = obs_dim, act_dim, config, ros2
        self._clock = clock
        self._deadline_s = config.command_deadline_s or 3.0 * period_s
        self._ts = typestore()
        f64 = self._ts.types[FLOAT64_ARRAY]
        self._cmd = f64(layout=self._ts.types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0),
                        data=np.zeros(act_dim))
        self._map = JointMap(ros2.observation)
        self._lock = threading.Lock()
        self._fresh = threading.Event()
        self.stats = {"received": 0, "accepted": 0, "bad": 0, "sent": 0}
        self._latest: tuple[np.ndarray, float, float] | None = None  # values, ROS stamp, arrival
        self._answer_stamp = math.nan
        self._seq = 0
        self._closed = False
        self._z = open_session(config.endpoint, listen=False, max_message_bytes=_MAX_BYTES, tls=config.tls)
        try:
            self._pub = declare_publisher(self._z, ros2.commands)
            self._sub = self._z.declare_subscriber(ros2.joint_states, self._on_joint_state)
            if not self._fresh.wait(config.connect_timeout_s):
                raise BridgeError(f"no {JOINT_STATE} on {ros2.joint_states} from {config.endpoint} within "
                                  f"{config.connect_timeout_s:g} s ({self.stats['bad']} unreadable): is the robot "
                                  f"(or zenoh-bridge-ros2dds) there, and is the topic right?")
        except BaseException:
            self.close()
            raise

    def read(self) -> Observation:
        with self._lock:
            values, ros_stamp, rx = self._latest
            seq = self.stats["accepted"]
            self._answer_stamp = ros_stamp
            self._fresh.clear()
        return Observation(values.copy(), rx, seq, 0.0, False)

    def send(self, action: np.ndarray) -> None:
        """Publish ``action`` (A,) as a Float64MultiArray, seq and deadline in the attachment."""
        self._cmd.data[:] = np.asarray(action, np.float64).reshape(self.act_dim)
        self._seq += 1
        payload = self._ts.serialize_cdr(self._cmd, FLOAT64_ARRAY)
        self._pub.put(bytes(payload), attachment=ATTACHMENT.pack(self._seq, self._answer_stamp + self._deadline_s))
        self.stats["sent"] += 1

    @property
    def episode_return(self) -> float:
        """NaN: a JointState carries no reward (the robot's side measures the return)."""
        return math.nan

    def wait_new(self, timeout: float) -> bool:
        return self._fresh.wait(timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for name in ("_sub", "_pub"):
            obj = getattr(self, name, None)
            if obj is not None:
                obj.undeclare()
        self._z.close()

    def _on_joint_state(self, sample) -> None:
        now = self._clock()
        size = len(sample.payload)
        try:
            if size > _MAX_BYTES:
                raise ValueError(f"{size} bytes")
            msg = self._ts.deserialize_cdr(sample.payload.to_bytes(), JOINT_STATE)
            values = self._map.values(msg.name, msg.position, msg.velocity, msg.effort)
            stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        except Exception as err:  # noqa: BLE001 - any unreadable message is dropped and counted
            with self._lock:
                self.stats["received"] += 1
                self.stats["bad"] += 1
                first = self.stats["bad"] == 1
            if first:
                logger.warning("ros2: dropped an unreadable %s on %s (%s: %s); every such message is counted",
                               JOINT_STATE, self.ros2.joint_states, type(err).__name__, err)
            return
        with self._lock:
            self.stats["received"] += 1
            self.stats["accepted"] += 1
            self._latest = (values, stamp, now)
            self._fresh.set()
