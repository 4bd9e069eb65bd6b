"""A controller process for the bridge's fault tests: the control loop over a BridgeRobot
(cartpole sizes: 5 observations, 1 action) with a constant planner, until stopped.

Usage: python bridge_controller.py ENDPOINT RATE_HZ
"""

from __future__ import annotations

import logging
import sys

import numpy as np
from bridge_fakes import ConstantPlanner
from rtmpc.controller import ControlLoop, LoopConfig, SafetyConfig, SafetyFilter
from rtmpc.controller.bridge import BridgeConfig, BridgeRobot


def main(endpoint: str, rate: float) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    robot = BridgeRobot(5, 1, 1.0 / rate, BridgeConfig(endpoint=endpoint))
    try:
        safety = SafetyFilter(np.array([-1.0]), np.array([1.0]), 1.0 / rate, SafetyConfig(stale_from="stamp"))
        loop = ControlLoop(robot, ConstantPlanner(value=0.3), safety, LoopConfig(rate_hz=rate))
        summary = loop.run(max_cycles=0)
        print(summary["stop_reason"], summary["cycles"], flush=True)
    finally:
        robot.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2])))
