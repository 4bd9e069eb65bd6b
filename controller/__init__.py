"""The fixed-rate receding-horizon control loop: scheduling, deadline and fallback,
safety filter, telemetry. Imports no torch."""

from controller.base import Clock, MonotonicClock, Observation, Robot
from controller.clocks import FastForwardClock, VirtualClock
from controller.config import LoopConfig, LoopTiming, SafetyConfig
from controller.loop import ControlLoop
from controller.safety import KINDS, SafetyFilter
from controller.telemetry import SOURCES, Telemetry, summarize
from controller.worker import PlannerFailed

__all__ = [
    "Clock", "MonotonicClock", "Observation", "Robot",
    "FastForwardClock", "VirtualClock",
    "LoopConfig", "LoopTiming", "SafetyConfig",
    "ControlLoop", "PlannerFailed",
    "KINDS", "SafetyFilter",
    "SOURCES", "Telemetry", "summarize",
]
