"""A ROS 2 cartpole for the bridge's ROS 2 profile: MuJoCo's cartpole-swingup (rtmpc's sim,
100 Hz, wall-clock) behind zenoh as zenoh-bridge-ros2dds would carry a ros2_control robot:
sensor_msgs/msg/JointState (slider, hinge_1) on ``joint_states``, the newest
std_msgs/msg/Float64MultiArray from ``forward_command_controller/commands`` applied each
period, CDR written and read by rosbags' own serializer (nothing of rtmpc's ROS 2 code).
The episode starts at the first command; at its end one JSON line: return, steps,
commands received.

Usage: python ros2_cartpole.py ENDPOINT SEED
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time

import numpy as np
from rosbags.typesys import Stores, get_typestore
from rtmpc.controller.bridge.transport import open_session

from rtmpc import sim


def main(endpoint: str, seed: int) -> int:
    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types
    env = sim.make(sim.TaskConfig(name="cartpole-swingup"), seed=seed)
    robot = sim.SimRobot(env, mode="lockstep", seed=seed)
    period = env.spec.control_period
    action, got = np.zeros(1), {"n": 0}
    lock, first = threading.Lock(), threading.Event()

    def on_cmd(sample):
        msg = ts.deserialize_cdr(sample.payload.to_bytes(), "std_msgs/msg/Float64MultiArray")
        with lock:
            action[:] = msg.data[:1]
            got["n"] += 1
        first.set()

    z = open_session(endpoint, listen=True)
    pub = z.declare_publisher("joint_states")
    sub = z.declare_subscriber("forward_command_controller/commands", on_cmd)
    ret, steps, t0 = 0.0, 0, time.monotonic()
    try:
        k = 0
        while True:
            reading = robot.read()
            x, c, s, xdot, thdot = reading.values
            t = k * period
            msg = T["sensor_msgs/msg/JointState"](
                header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](
                    sec=int(t), nanosec=int(round((t - int(t)) * 1e9)) % 1_000_000_000), frame_id="world"),
                name=["slider", "hinge_1"], position=np.array([x, math.atan2(s, c)]),
                velocity=np.array([xdot, thdot]), effort=np.zeros(0))
            pub.put(bytes(ts.serialize_cdr(msg, "sensor_msgs/msg/JointState")))
            if steps:
                ret += reading.reward
            if reading.done:
                break
            k += 1
            threading.Event().wait(max(0.0, t0 + k * period - time.monotonic()))  # the robot's own pace
            if first.is_set():
                with lock:
                    a = action.copy()
                robot.send(a)
                steps += 1
            elif time.monotonic() - t0 > 60:
                break
    finally:
        sub.undeclare()
        pub.undeclare()
        z.close()
        robot.close()
    print(json.dumps({"return": ret, "steps": steps, "commands": got["n"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
