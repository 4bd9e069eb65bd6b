"""The fixed-rate receding-horizon control loop: scheduling, deadline and fallback,
safety filter, telemetry. Imports no torch."""

from rtmpc.controller import deploy  # noqa: E402  (after the names it uses)
from rtmpc.controller.base import Clock, MonotonicClock, Observation, Robot
from rtmpc.controller.clocks import FastForwardClock, VirtualClock
from rtmpc.controller.config import LoopConfig, LoopTiming, SafetyConfig
from rtmpc.controller.loop import ControlLoop
from rtmpc.controller.safety import KINDS, SafetyFilter
from rtmpc.controller.telemetry import SOURCES, Telemetry, summarize
from rtmpc.controller.worker import PlannerFailed

__all__ = [
    "Clock", "MonotonicClock", "Observation", "Robot",
    "FastForwardClock", "VirtualClock",
    "LoopConfig", "LoopTiming", "SafetyConfig",
    "ControlLoop", "PlannerFailed",
    "KINDS", "SafetyFilter",
    "SOURCES", "Telemetry", "summarize", "deploy",
]
