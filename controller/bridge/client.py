"""The controller's side of the bridge: :class:`BridgeRobot`, the Robot protocol over Zenoh."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from typing import Callable

import numpy as np
from rtmpc.controller.base import Observation

from .config import BridgeConfig
from .limits import RecentSet
from .messages import (
    OBS_DONE,
    OBS_WATCHDOG,
    REASONS,
    CmdEncoder,
    MessageError,
    cmd_size,
    count_rejected,
    decode_obs,
    new_session_id,
    obs_size,
)
from .transport import BridgeError, FaultyPublisher, declare_publisher, is_delete, open_session

__all__ = ["BridgeRobot"]

logger = logging.getLogger(__name__)

COUNTS = ("received", "accepted", *REASONS, "duplicate", "out_of_order", "gaps", "old_session",
          "restarts", "lost", "robot_watchdog", "sent")
# After the robot's liveliness token is dropped, observations of its session that were
# already on the way (they can arrive after the drop: zenoh does not order the two) are
# kept but leave the robot lost; this many in a row mean it is alive after all.
ALIVE_AGAIN_AFTER = 3


def _task(name: str) -> str:
    return f"task {name}" if name else "a task"


class BridgeRobot:
    """A robot in another process, reached through the bridge (``rtmpc robot`` on the
    other side). Implements :class:`~controller.base.Robot`.

    obs_dim, act_dim: the sizes both sides must agree on (messages of another size are
    dropped and counted). period_s: the control loop's period (the default command
    deadline is 3 of them). clock: seconds on the loop's monotonic clock (default
    time.monotonic, what MonotonicClock reads).

    task: the task the controller's model is for; the robot announces its task and sizes
    on ``KEY/info`` and a robot whose task (when both are named) or sizes differ is
    refused with a BridgeError (a robot that announces nothing is used, with a warning).

    Threads: zenoh's callback thread stores each valid observation under a lock; the
    loop thread calls :meth:`read` and :meth:`send` (one caller). Building it waits (up to
    ``config.connect_timeout_s``) for a first observation of an episode that has not
    ended, and raises BridgeError if none comes.

    What :meth:`read` returns: ``seq`` counts the observations accepted here (so it keeps
    increasing across robot restarts); ``stamp`` is the time the observation arrived, on
    the loop's clock (so ``safety.stale_from: stamp`` measures the true age of the data,
    whatever the robot's clock), NaN once the robot's liveliness token is gone (its
    process or connection died: stale at the next cycle) until the token comes back, a new
    robot session starts, or :data:`ALIVE_AGAIN_AFTER` observations of the same session
    arrive after the loss (one still in flight at the loss does not revive a dead robot);
    ``reward`` is the change in the episode's return since the last read (nothing lost
    with a lost message).

    Received observations are dropped and counted (:attr:`stats`) when malformed (by
    :data:`~controller.bridge.messages.REASONS`), a duplicate or out of order (seq not
    above the newest), or from a robot session that has been replaced; ``gaps`` counts
    sequence numbers never seen (lost, or overtaken and then dropped); ``restarts``
    counts new robot sessions after the first; ``lost`` liveliness losses;
    ``robot_watchdog`` the times the robot reported that its watchdog tripped.
    """

    def __init__(self, obs_dim: int, act_dim: int, period_s: float, config: BridgeConfig = BridgeConfig(), *,
                 clock: Callable[[], float] = time.monotonic, session_id: int | None = None, task: str = ""):
        if not period_s > 0:
            raise ValueError(f"period_s = {period_s!r} must be > 0")
        self.obs_dim, self.act_dim, self.config = obs_dim, act_dim, config
        self.endpoint = config.endpoint
        self._clock = clock
        self._deadline_s = config.command_deadline_s or 3.0 * period_s
        self._enc = CmdEncoder(act_dim, session_id or new_session_id())
        self._lock = threading.Lock()
        self._fresh = threading.Event()  # set by each accepted observation
        self._counts = dict.fromkeys(COUNTS, 0)
        self._latest = None  # newest accepted ObsMessage
        self._rx = math.nan  # when it arrived (clock)
        self._session: int | None = None
        self._retired = RecentSet(64)  # replaced robot sessions
        self._obs_bytes = obs_size(obs_dim)
        self._lost = False
        self._after_loss = 0  # observations of the lost robot's session accepted since the loss
        self._ret_key: tuple[int, int] | None = None  # (session, episode) of the last read
        self._ret_read = 0.0
        self._answer = (0, math.nan)  # robot seq and stamp of the last observation read
        self._cmd_seq = 0
        self._closed = False
        self._session_z = open_session(config.endpoint, listen=False,
                                       max_message_bytes=max(self._obs_bytes, cmd_size(act_dim)), tls=config.tls)
        try:
            z = self._session_z
            # the robot refuses another controller while this token lives (server.py)
            self._token_z = z.liveliness().declare_token(f"{config.key}/ctl/{self._enc.session:08x}")
            self._pub_z = declare_publisher(z, f"{config.key}/cmd")
            self._pub = FaultyPublisher(self._pub_z.put, config.faults)
            self._sub_z = z.declare_subscriber(f"{config.key}/obs", self._on_obs)
            self._live_z = z.liveliness().declare_subscriber(f"{config.key}/alive", self._on_alive,
                                                             history=True)
            end = time.monotonic() + config.connect_timeout_s  # one deadline for both
            self._check_robot(task, end)
            self._wait_first(config.connect_timeout_s, end)
        except BaseException:
            self.close()
            raise

    # -- Robot protocol (loop thread) ---------------------------------------------------------
    def read(self) -> Observation:
        with self._lock:
            m = self._latest
            stamp = math.nan if self._lost else self._rx
            seq = self._counts["accepted"]
            key = (m.session, m.episode)
            reward = m.ret - self._ret_read if key == self._ret_key else m.ret
            self._ret_key, self._ret_read = key, m.ret
            self._answer = (m.seq, m.stamp)
            self._fresh.clear()
        return Observation(m.values.copy(), stamp, seq, reward, bool(m.flags & OBS_DONE))

    def send(self, action: np.ndarray) -> None:
        """Publish ``action`` (A,) as the answer to the observation last read, with the
        deadline (robot clock) = that observation's stamp + the command deadline."""
        obs_seq, stamp = self._answer
        self._cmd_seq += 1
        self._pub.put(self._enc.encode(self._cmd_seq, obs_seq, stamp + self._deadline_s, action))

    def close(self) -> None:
        """Send any held-back message, undeclare everything, close the session (idempotent)."""
        if self._closed:
            return
        self._closed = True
        pub = getattr(self, "_pub", None)
        try:
            if pub is not None:
                pub.flush()
        finally:
            for name in ("_live_z", "_sub_z", "_pub_z", "_token_z"):
                obj = getattr(self, name, None)
                if obj is not None:
                    obj.undeclare()
            self._session_z.close()

    # -- for benchmarks and tests ----------------------------------------------------------------
    def wait_new(self, timeout: float) -> bool:
        """Wait until an observation newer than the last read has arrived; True if one has."""
        return self._fresh.wait(timeout)

    @property
    def latest(self):
        """The newest accepted :class:`~controller.bridge.messages.ObsMessage` (robot seq,
        stamp on the robot's clock, flags, episode, step), read or not."""
        with self._lock:
            return self._latest

    @property
    def episode_return(self) -> float:
        """The return of the episode of the last observation read, so far."""
        return self._ret_read

    @property
    def stats(self) -> dict[str, int]:
        """Counts of received observations by outcome (see the class doc), commands sent
        and the faults injected into them (``cmd_drop``, ``cmd_reorder``, ``cmd_duplicate``)."""
        with self._lock:
            out = dict(self._counts)
        injected = self._pub.counts if hasattr(self, "_pub") else {}
        out["sent"] = self._cmd_seq
        out.update({f"cmd_{k}": v for k, v in injected.items() if k != "sent"})
        return out

    # -- zenoh's threads -------------------------------------------------------------------------
    def _check_robot(self, task: str, end: float) -> None:
        """Ask the robot (KEY/info) for its task and sizes until it answers, observations arrive
        without an answer for 1 s (a robot that announces nothing), or ``end``; refuse a robot
        whose task or sizes differ from the model's."""
        heard = None
        while time.monotonic() < end:
            for reply in self._session_z.get(f"{self.config.key}/info", timeout=0.3):
                if reply.ok is None:
                    continue
                try:
                    info = json.loads(reply.ok.payload.to_string())
                    got = (str(info["task"]), int(info["obs_dim"]), int(info["act_dim"]))
                except (ValueError, KeyError, TypeError):
                    raise BridgeError(f"the robot at {self.endpoint} announced {reply.ok.payload.to_string()[:200]!r}, "
                                      f"not its task and sizes: is it an rtmpc robot?") from None
                mine = (task if task and got[0] else got[0], self.obs_dim, self.act_dim)  # names: when both have one
                if got != mine:
                    fix = (f"start `rtmpc robot --task {mine[0]}`" if mine[0] else "start the robot with a task of "
                           "the model's sizes") + (f" or use a model trained on {got[0]}" if got[0] else "")
                    raise BridgeError(f"the robot at {self.endpoint} runs {_task(got[0])} with obs {got[1]}, act "
                                      f"{got[2]}, but the model is for {_task(mine[0])} with obs {mine[1]}, act "
                                      f"{mine[2]}: {fix}")
                return
            with self._lock:
                received = self._counts["received"]
            if received:
                heard = heard or time.monotonic()
                if time.monotonic() - heard >= 1.0:
                    logger.warning("bridge: the robot at %s does not announce its task and sizes (KEY/info): "
                                   "they are not checked", self.endpoint)
                    return
            else:
                threading.Event().wait(0.05)  # the connection is retried in the background

    def _wait_first(self, timeout_s: float, end: float) -> None:
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0 or not self._fresh.wait(remaining):
                counts = self.stats
                bad = {k: counts[k] for k in REASONS if counts[k]}
                hint = (f"; {sum(bad.values())} messages were dropped as malformed ({bad}): does the robot run "
                        f"a task with {self.obs_dim} observations?" if bad else
                        f": is `rtmpc robot --endpoint {self.endpoint}` running?")
                raise BridgeError(f"no observation from a robot at {self.endpoint} within {timeout_s:g} s{hint}")
            with self._lock:
                self._fresh.clear()
                if not self._latest.flags & OBS_DONE:
                    self._fresh.set()  # stays set: the first read is new
                    return

    def _on_obs(self, sample) -> None:
        now = self._clock()
        counts = self._counts
        size = len(sample.payload)
        try:
            if size != self._obs_bytes:  # checked before the payload is copied
                raise MessageError("size", f"{size} bytes where an observation of {self.obs_dim} values has "
                                           f"{self._obs_bytes}")
            m = decode_obs(sample.payload.to_bytes(), self.obs_dim)
        except MessageError as err:
            if count_rejected(counts, self._lock, err):
                logger.warning("bridge: dropped an observation (%s: %s); every such message is counted", err.reason,
                               err)
            return
        with self._lock:
            counts["received"] += 1
            latest = self._latest
            if m.session != self._session:
                if m.session in self._retired:
                    counts["old_session"] += 1
                    return
                if self._session is not None:
                    self._retired.add(self._session)
                    counts["restarts"] += 1
                    logger.warning("bridge: a new robot session at %s (restart %d)", self.endpoint,
                                   counts["restarts"])
                self._session = m.session
            elif m.seq == latest.seq:
                counts["duplicate"] += 1
                return
            elif m.seq < latest.seq:
                counts["out_of_order"] += 1
                return
            else:
                counts["gaps"] += m.seq - latest.seq - 1
            if m.flags & OBS_WATCHDOG and (latest is None or not latest.flags & OBS_WATCHDOG
                                           or latest.session != m.session):
                counts["robot_watchdog"] += 1
                logger.warning("bridge: the robot reports no fresh command: it is applying its safe action")
            counts["accepted"] += 1
            if self._lost and latest is not None and m.session == latest.session:
                self._after_loss += 1
                self._lost = self._after_loss < ALIVE_AGAIN_AFTER
            else:
                self._lost = False
            self._latest, self._rx = m, now
            self._fresh.set()

    def _on_alive(self, sample) -> None:
        if is_delete(sample):
            with self._lock:
                self._lost, self._after_loss = True, 0
                self._counts["lost"] += 1
            logger.warning("bridge: the robot at %s is gone (its liveliness token was dropped)", self.endpoint)
        else:
            with self._lock:
                self._lost = False
            logger.info("bridge: robot alive at %s", self.endpoint)
