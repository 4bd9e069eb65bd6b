"""Thread priorities for wall-clock runs: the loop's thread above the planner's (Linux).

On two cores the servo thread shares the CPU with the planner thread (and ONNX Runtime's
pool), the simulated robot's physics and the MCAP writer; at normal priority a servo that
wakes while both cores plan waits for the scheduler. Measured on the 2-core machine
(docs/servo.md, 100 Hz servo, the quickstart's model): wake jitter p99 2-3 ms at normal
priority, 0.06 ms with the planner thread at nice 10, 0.01 ms with the loop thread at
SCHED_FIFO 50. As ros2_control does for its update loop, the loop thread asks for SCHED_FIFO
(:func:`raise_to_fifo`), which needs root, CAP_SYS_NICE or an rtprio limit (``ulimit -r``);
without them it says so once and runs on at normal priority. Lowering a thread's own
priority (:func:`lower_this_thread`) needs no privilege, so the planner always does it.

Threads inherit their creator's policy: the loop raises itself only after its planner and
writer threads exist, and restores what it had when the run ends.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

__all__ = ["raise_to_fifo", "restore", "lower_this_thread", "supported"]

logger = logging.getLogger(__name__)
_warned = False


def supported() -> bool:
    """Per-thread policies and nice values: Linux (elsewhere these functions do nothing)."""
    return sys.platform.startswith("linux") and hasattr(os, "sched_setscheduler")


def raise_to_fifo(priority: int):
    """Put the calling thread under SCHED_FIFO at ``priority`` (1-99); returns what
    :func:`restore` needs, or None when nothing changed (0, not Linux, or not permitted: then
    one warning per process says how to allow it)."""
    global _warned
    if priority <= 0 or not supported():
        return None
    saved = (os.sched_getscheduler(0), os.sched_getparam(0))
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as err:  # PermissionError without the privilege
        if not _warned:
            _warned = True
            logger.warning("the loop thread runs at normal priority (SCHED_FIFO %d refused: %s): allow real-time "
                           "priorities with `ulimit -r 99` (or rtprio in /etc/security/limits.conf) or "
                           "CAP_SYS_NICE, or set loop.rt_priority: 0 to stop asking", priority,
                           err.strerror or err)
        return None
    return saved


def restore(saved) -> None:
    """Give the calling thread back the policy :func:`raise_to_fifo` found."""
    if saved is None:
        return
    policy, param = saved
    try:
        os.sched_setscheduler(0, policy, param)
    except OSError:
        logger.warning("could not restore the loop thread's scheduling policy %d", policy)


def lower_this_thread(nice: int) -> None:
    """The calling thread to normal scheduling at ``nice`` (0-19; 0 = leave it as it is):
    below a SCHED_FIFO loop, and below normal threads when the loop could not get FIFO."""
    if nice <= 0 or not supported():
        return
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:  # inherited from a raised creator
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))
    except OSError as err:
        logger.warning("could not lower thread %s to nice %d: %s", threading.current_thread().name, nice, err)
