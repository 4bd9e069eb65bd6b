"""The robot's side of the bridge: :class:`RobotServer` runs a simulated robot in wall-clock
time, publishes its observations and applies the commands that arrive.

Per robot period (a fixed grid on the monotonic clock, never accumulated), the server
steps the robot once with the command in force, then publishes the new observation.
An episode goes through three states:

* waiting: reset, physics stopped; the reset observation is published (flag
  OBS_WAITING) until the first valid command arrives, so an episode starts when a
  controller is there, not when the process started;
* running: each period applies the newest valid command, or the safe action when no
  fresh command has arrived for ``watchdog_periods`` periods (the watchdog: logged when
  it trips and when commands resume, counted, and flagged OBS_WATCHDOG in every
  observation meanwhile);
* done: the episode ended; its last observation is published (OBS_DONE) for
  ``linger_s``, commands are ignored, then the next episode is reset.

A command is valid when it decodes (messages.py), comes from the current controller
session in sequence (a duplicate or an older seq is dropped) and arrives before its
deadline (robot clock). A new controller session replaces the current one only once the
current one is gone: its liveliness token ``KEY/ctl/SESSION`` (8 hex digits, declared by
each BridgeRobot) was dropped, or, if it never declared one, no command of it has come
for the watchdog time; until then the new session's commands are ``refused`` (counted,
logged at most every 5 s). ``ServerConfig.takeover`` (``rtmpc robot --takeover``) lets
a new session replace a live one (logged). Replaced sessions are remembered (the last
:data:`RETIRED` of them) and their commands dropped (``old_session``). Every outcome is
counted; the round trip (publication of an observation -> arrival of the first command
answering it) is measured for each answered observation.

The server knows nothing of the simulator: ``make_robot(episode)`` builds any Robot
whose ``send`` advances it by one period (``sim.SimRobot`` in lockstep), and ``rtmpc
robot`` (scripts/robot.py) wires the two. Threads: :meth:`run` in one thread (the
pacing loop), zenoh's callback thread for commands; :meth:`stop` from any thread.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable

import numpy as np
from rtmpc.controller.base import Clock, MonotonicClock, Robot

from .config import ServerConfig
from .limits import LogLimiter, RecentSet
from .messages import (
    OBS_DONE,
    OBS_WAITING,
    OBS_WATCHDOG,
    REASONS,
    MessageError,
    ObsEncoder,
    cmd_session,
    cmd_size,
    count_rejected,
    decode_cmd,
    new_session_id,
    obs_size,
)
from .transport import FaultyPublisher, declare_publisher, is_delete, open_session

__all__ = ["RobotServer", "WAITING", "RUNNING", "DONE"]

logger = logging.getLogger(__name__)

WAITING, RUNNING, DONE = "waiting", "running", "done"
COUNTS = ("received", "accepted", *REASONS, "duplicate", "out_of_order", "gaps", "old_session", "late",
          "ignored", "controllers", "refused", "takeovers")
RETIRED = 64  # replaced controller sessions remembered (their late commands are dropped)
LIVE_TOKENS = 256  # controller liveliness tokens remembered
_RING = 4096  # observations remembered for the round-trip measurement
_SAMPLES = 1 << 20  # round-trip and jitter samples kept (a ring past that)


def _percentiles(x: np.ndarray, scale: float = 1e3) -> dict[str, float]:
    if x.size == 0:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "n": 0}
    p50, p99 = np.percentile(x, [50, 99])
    return {"p50": float(scale * p50), "p99": float(scale * p99), "max": float(scale * x.max()), "n": int(x.size)}


class RobotServer:
    """Serve a robot over the bridge.

    make_robot(episode) -> Robot stepping one period per ``send``; obs_dim, act_dim: its
    sizes; period_s: the robot period (the rate observations are published at);
    safe_action: (A,) what the watchdog applies; clock: default MonotonicClock; task: the
    task's name, announced with the sizes and the period on ``KEY/info`` (a zenoh queryable
    answering JSON ``{"task", "obs_dim", "act_dim", "period_s"}``), which a BridgeRobot
    checks against its model.
    """

    def __init__(self, make_robot: Callable[[int], Robot], obs_dim: int, act_dim: int, period_s: float,
                 safe_action: np.ndarray, config: ServerConfig = ServerConfig(), *, clock: Clock | None = None,
                 session_id: int | None = None, task: str = ""):
        if not period_s > 0:
            raise ValueError(f"period_s = {period_s!r} must be > 0")
        safe = np.asarray(safe_action, dtype=np.float64).reshape(-1)
        if safe.shape != (act_dim,):
            raise ValueError(f"safe action {safe.tolist()} must have {act_dim} entries")
        self.make_robot, self.obs_dim, self.act_dim = make_robot, obs_dim, act_dim
        self.period_s, self.safe_action, self.config = period_s, safe, config
        self.watchdog_s = config.watchdog_periods * period_s
        self.clock = clock if clock is not None else MonotonicClock(spin_s=0.0)  # a sleep is precise enough here
        self.session_id = session_id or new_session_id()
        self._enc = ObsEncoder(obs_dim, self.session_id)
        self._info = json.dumps({"task": task, "obs_dim": obs_dim, "act_dim": act_dim, "period_s": period_s})
        self._stop = threading.Event()
        self._idle = threading.Event()  # set while run() is not running
        self._idle.set()
        self._lock = threading.Lock()
        # shared with the command callback (under the lock)
        self._state = WAITING
        self._armed = False
        self._action = safe.copy()  # newest valid command
        self._cmd_rx = -np.inf  # when it arrived
        self._ctl: int | None = None  # controller session
        self._ctl_seq = 0
        self._ctl_rx = -np.inf  # when the controller's last in-sequence command arrived
        self._ctl_token: bool | None = None  # its liveliness token: None never seen, True alive, False dropped
        self._live = RecentSet(LIVE_TOKENS)  # sessions whose controller token is declared
        self._retired = RecentSet(RETIRED)
        self._refused_log, self._replaced_log = LogLimiter(5.0), LogLimiter(5.0)
        self._cmd_bytes = cmd_size(act_dim)
        self._counts = dict.fromkeys(COUNTS, 0)
        self._pub_seq = np.full(_RING, -1, dtype=np.int64)  # seq published in each ring slot
        self._pub_t = np.zeros(_RING)
        self._rtt = np.zeros(_SAMPLES)
        self._n_rtt = 0
        # pacing loop only
        self._seq = 0
        self._jitter = np.zeros(_SAMPLES)
        self._n_jitter = 0
        self._stats = {"published": 0, "episodes": 0, "watchdog_trips": 0, "watchdog_periods": 0,
                       "skipped_periods": 0}
        self.returns: list[float] = []
        self._z = open_session(config.endpoint, listen=True,
                               max_message_bytes=max(obs_size(obs_dim), self._cmd_bytes), tls=config.tls,
                               access_control=config.access_control)
        try:
            self._ctl_z = self._z.liveliness().declare_subscriber(f"{config.key}/ctl/*", self._on_ctl,
                                                                  history=True)
            self._info_z = self._z.declare_queryable(f"{config.key}/info", self._on_info)
            self._token = self._z.liveliness().declare_token(f"{config.key}/alive")
            self._pub_z = declare_publisher(self._z, f"{config.key}/obs")
            self._pub = FaultyPublisher(self._pub_z.put, config.faults)
            self._sub_z = self._z.declare_subscriber(f"{config.key}/cmd", self._on_cmd)
        except BaseException:
            self._z.close()
            raise
        self._closed = False

    # -- control ----------------------------------------------------------------------------------
    def stop(self) -> None:
        """End :meth:`run` after the current period (any thread)."""
        self._stop.set()

    def run(self, duration_s: float | None = None) -> dict[str, Any]:
        """Serve episodes until ``config.episodes`` are done, :meth:`stop`, or ``duration_s``
        seconds; returns :meth:`summary`."""
        self._idle.clear()
        timer = None
        if duration_s is not None:
            timer = threading.Timer(duration_s, self.stop)
            timer.daemon = True
            timer.start()
        try:
            episodes = self.config.episodes
            while not self._stop.is_set() and (episodes == 0 or self._stats["episodes"] < episodes):
                self._episode(self._stats["episodes"])
        finally:
            if timer is not None:
                timer.cancel()
            self._idle.set()
        return self.summary()

    def close(self) -> None:
        """Stop :meth:`run` (waiting for it up to 1 s), drop the liveliness token, close the
        session (idempotent)."""
        if self._closed:
            return
        self.stop()
        if not self._idle.wait(1.0 + 2 * self.period_s):
            logger.warning("closing while run() is still going")
        self._closed = True
        try:
            self._pub.flush()
        finally:
            for obj in (self._sub_z, self._ctl_z, self._info_z, self._pub_z, self._token):
                obj.undeclare()
            self._z.close()

    def summary(self) -> dict[str, Any]:
        """Counts (observations published and the faults injected into them; commands by
        outcome), watchdog trips and periods spent in the safe action, returns, round-trip
        and wake-jitter percentiles in ms."""
        with self._lock:
            commands = dict(self._counts)
            rtt = self._rtt[:min(self._n_rtt, _SAMPLES)].copy()
        out: dict[str, Any] = dict(self._stats)
        out["returns"] = list(self.returns)
        out["obs_injected"] = {k: v for k, v in self._pub.counts.items() if k != "sent"}
        out["commands"] = commands
        out["rtt_ms"] = _percentiles(rtt)
        out["jitter_ms"] = _percentiles(self._jitter[:min(self._n_jitter, _SAMPLES)])
        out["period_s"], out["watchdog_s"] = self.period_s, self.watchdog_s
        return out

    # -- the pacing loop ----------------------------------------------------------------------------
    def _episode(self, episode: int) -> None:
        clock, period, linger = self.clock, self.period_s, self.config.linger_s
        robot = self.make_robot(episode)
        action = self.safe_action.copy()
        with self._lock:
            self._state, self._armed = WAITING, False
        logger.info("episode %d: reset, waiting for a command", episode)
        ret, step, tripped, done_at = 0.0, 0, False, 0.0
        reading = robot.read()
        try:
            t0 = clock.now()
            k = 0
            while not self._stop.is_set():
                scheduled = t0 + k * period
                clock.sleep_until(scheduled)
                now = clock.now()
                late = now - scheduled
                if late >= period:  # a whole period late: back onto the grid, no burst
                    skip = int(late / period)
                    k += skip
                    first = self._stats["skipped_periods"] == 0
                    self._stats["skipped_periods"] += skip
                    logger.log(logging.WARNING if first else logging.DEBUG, "robot fell %.1f ms behind its %.1f ms "
                               "period (skipped periods are counted)", 1e3 * late, 1e3 * period)
                self._jitter[self._n_jitter % _SAMPLES] = late
                self._n_jitter += 1
                with self._lock:
                    state = self._state
                    if state == WAITING and self._armed:
                        state = self._state = RUNNING
                        logger.info("episode %d: running", episode)
                    stale = now - self._cmd_rx > self.watchdog_s
                    if not stale:
                        np.copyto(action, self._action)
                if state == RUNNING:
                    if stale:
                        np.copyto(action, self.safe_action)
                        self._stats["watchdog_periods"] += 1
                        if not tripped:
                            tripped = True
                            self._stats["watchdog_trips"] += 1
                            logger.warning("watchdog: no fresh command for %.0f ms (%d periods): applying the safe "
                                           "action %s", 1e3 * (now - self._cmd_rx), self.config.watchdog_periods,
                                           self.safe_action.tolist())
                    elif tripped:
                        tripped = False
                        logger.info("watchdog: commands resumed")
                    robot.send(action)
                    reading = robot.read()
                    ret += reading.reward
                    step += 1
                    if reading.done:
                        state, done_at = DONE, now
                        with self._lock:
                            self._state = DONE
                        logger.info("episode %d: done after %d steps, return %.2f", episode, step, ret)
                flags = ((OBS_WAITING if state == WAITING else 0) | (OBS_DONE if state == DONE else 0)
                         | (OBS_WATCHDOG if tripped else 0))
                self._publish(reading.values, ret, episode, step, flags)
                if state == DONE and now - done_at >= linger:
                    break
                k += 1
            if state == RUNNING:  # stopped mid-episode: leave the robot in the safe action
                robot.send(self.safe_action)
        except BaseException as err:
            # Whatever failed (the robot, the transport, a bug), the robot gets the safe action
            # before the server exits; then the error goes on.
            try:
                robot.send(self.safe_action)
                logger.error("episode %d: %s: %s; applied the safe action %s before exiting", episode,
                             type(err).__name__, err, self.safe_action.tolist())
            except BaseException as send_err:  # noqa: BLE001 - the original error matters more
                logger.error("episode %d: %s: %s; could not apply the safe action either (%s: %s)", episode,
                             type(err).__name__, err, type(send_err).__name__, send_err)
            raise
        finally:
            robot.close()
            self.returns.append(ret)
            self._stats["episodes"] += 1

    def _publish(self, values: np.ndarray, ret: float, episode: int, step: int, flags: int) -> None:
        self._seq += 1
        t = self.clock.now()
        with self._lock:
            i = self._seq % _RING
            self._pub_seq[i], self._pub_t[i] = self._seq, t
        self._pub.put(self._enc.encode(self._seq, t, ret, episode, step, values, flags))
        self._stats["published"] += 1

    # -- zenoh's thread -----------------------------------------------------------------------------
    def _on_cmd(self, sample) -> None:
        now = self.clock.now()
        counts = self._counts
        size = len(sample.payload)
        try:
            if size != self._cmd_bytes:  # checked before the payload is copied
                raise MessageError("size", f"{size} bytes where a command of {self.act_dim} values has "
                                           f"{self._cmd_bytes}")
            buf = sample.payload.to_bytes()
            session = cmd_session(buf, self.act_dim)
            if session != self._ctl and self._turned_away(session, now):
                return  # a stranger's command: not decoded further (a flood costs little)
            c = decode_cmd(buf, self.act_dim)
        except MessageError as err:
            if count_rejected(counts, self._lock, err):
                logger.warning("dropped a command (%s: %s); every such message is counted", err.reason, err)
            return
        note = None  # a log line, written after the lock is released
        try:
            with self._lock:
                if c.session != self._ctl:
                    verdict = self._verdict(c.session, now)  # again: the controller may have changed
                    if verdict is not None:
                        counts["received"] += 1
                        counts[verdict] += 1
                        return
                    counts["received"] += 1
                    old = self._ctl
                    if old is not None:
                        self._retired.add(old)
                        alive = self._alive(now)
                        counts["takeovers"] += alive
                        held = self._replaced_log.ready()
                        if held is not None:
                            note = ("%s: controller session %08x replaces %08x (%d such lines held back)",
                                    "operator takeover (--takeover)" if alive else "the controller is gone",
                                    c.session, old, held)
                    counts["controllers"] += 1
                    self._ctl = c.session
                    self._ctl_token = True if c.session in self._live else None
                else:
                    counts["received"] += 1
                    if c.seq == self._ctl_seq:
                        counts["duplicate"] += 1
                        return
                    if c.seq < self._ctl_seq:
                        counts["out_of_order"] += 1
                        return
                    counts["gaps"] += c.seq - self._ctl_seq - 1
                self._ctl_seq, self._ctl_rx = c.seq, now
                i = c.obs_seq % _RING
                if self._pub_seq[i] == c.obs_seq:  # the first answer to that observation
                    self._rtt[self._n_rtt % _SAMPLES] = now - self._pub_t[i]
                    self._n_rtt += 1
                    self._pub_seq[i] = -1
                if now > c.deadline:
                    counts["late"] += 1
                elif self._state == DONE:
                    counts["ignored"] += 1
                else:
                    np.copyto(self._action, c.action)
                    self._cmd_rx = now
                    self._armed = True
                    counts["accepted"] += 1
        finally:
            self._log(note)

    def _alive(self, now: float) -> bool:
        """Whether the current controller holds control (under the lock): its liveliness token
        is declared, or it never declared one and its last command came within the watchdog time."""
        return bool(self._ctl_token or (self._ctl_token is None and now - self._ctl_rx <= self.watchdog_s))

    def _verdict(self, session: int, now: float) -> str | None:
        """Why a command of ``session`` (not the controller's) is turned away (under the lock):
        ``old_session`` (a replaced controller), ``refused`` (the controller is alive), or None."""
        if session in self._retired:
            return "old_session"
        if self._ctl is not None and not self.config.takeover and self._alive(now):
            return "refused"
        return None

    def _turned_away(self, session: int, now: float) -> bool:
        """Count (and log, at most every 5 s) a command of ``session`` that is turned away."""
        with self._lock:
            verdict = self._verdict(session, now)
            if verdict is None:
                return False
            self._counts["received"] += 1
            self._counts[verdict] += 1
            held = self._refused_log.ready() if verdict == "refused" else None
            ctl = self._ctl
        if held is not None:
            logger.warning("refused commands of session %08x: controller %08x is alive; a new controller takes over "
                           "once it is gone, or with rtmpc robot --takeover (%d such lines held back)", session, ctl,
                           held)
        return True

    @staticmethod
    def _log(note) -> None:
        if note is not None:
            logger.warning(*note)

    def _on_info(self, query) -> None:
        query.reply(query.key_expr, self._info)

    def _on_ctl(self, sample) -> None:
        """A controller's liveliness token KEY/ctl/SESSION appeared or went."""
        try:
            session = int(str(sample.key_expr).rsplit("/", 1)[-1], 16)
        except ValueError:
            return
        gone = is_delete(sample)
        with self._lock:
            if gone:
                self._live.discard(session)
            else:
                self._live.add(session)
            if session == self._ctl:
                self._ctl_token = not gone
        if gone and session == self._ctl:
            logger.info("controller %08x is gone (its liveliness token was dropped)", session)
