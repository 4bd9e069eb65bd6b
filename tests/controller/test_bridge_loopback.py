"""The bridge in one process over real Zenoh sessions on 127.0.0.1 (a free port per test):
the robot server in a thread with a toy lockstep robot, a BridgeRobot on the other side."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from bridge_fakes import ConstantPlanner, ToyRobot, endpoint, free_port, wait_until

pytest.importorskip("zenoh")

from rtmpc.configs import ConfigError  # noqa: E402
from rtmpc.controller import ControlLoop, LoopConfig, Observation, SafetyConfig, SafetyFilter  # noqa: E402
from rtmpc.controller.bridge import (  # noqa: E402
    BridgeConfig,
    BridgeError,
    BridgeRobot,
    FaultConfig,
    RobotServer,
    ServerConfig,
)
from rtmpc.controller.bridge.client import ALIVE_AGAIN_AFTER  # noqa: E402
from rtmpc.controller.bridge.messages import OBS_DONE, OBS_WAITING, OBS_WATCHDOG, VERSION, CmdEncoder, ObsEncoder  # noqa: E402
from rtmpc.controller.bridge.transport import declare_publisher, open_session  # noqa: E402

PERIOD = 0.01


@contextlib.contextmanager
def serving(port, *, steps=10**9, robots=None, **cfg):
    """A RobotServer (toy robots, 100 Hz) running in a thread; stopped and closed after."""
    made = robots if robots is not None else []

    def make(ep):
        made.append(ToyRobot(steps))
        return made[-1]

    server = RobotServer(make, 2, 1, PERIOD, np.zeros(1), ServerConfig(endpoint=endpoint(port), **cfg))
    result = {}
    thread = threading.Thread(target=lambda: result.update(server.run(duration_s=30)), daemon=True)
    thread.start()
    try:
        yield server, made, result
    finally:
        server.stop()
        thread.join(5)
        server.close()
        assert not thread.is_alive()


@contextlib.contextmanager
def bridge(port, **cfg):
    cfg.setdefault("connect_timeout_s", 10.0)
    robot = BridgeRobot(2, 1, PERIOD, BridgeConfig(endpoint=endpoint(port), **cfg))
    try:
        yield robot
    finally:
        robot.close()


def test_observations_flow_and_commands_are_applied():
    port = free_port()
    with serving(port) as (server, robots, _), bridge(port) as robot:
        first = robot.read()
        assert robot.latest.flags & OBS_WAITING  # nothing moves before the first command
        assert first.seq >= 1 and math.isfinite(first.stamp) and abs(first.stamp - time.monotonic()) < 1.0
        for _ in range(20):
            assert robot.wait_new(2.0)
            obs = robot.read()
            robot.send(np.array([0.5]))
        wait_until(lambda: len(robots[0].applied) > 30, what="steps")
        assert not robot.latest.flags & OBS_WAITING
        assert 0.5 in robots[0].applied and robot.read().values[0] > 0
        assert obs.seq > first.seq
        s = server.summary()
        assert s["commands"]["accepted"] >= 19 and s["rtt_ms"]["n"] >= 19 and s["rtt_ms"]["p50"] > 0
        stats = robot.stats
        assert stats["accepted"] >= 20 and stats["sent"] == 20
        assert sum(stats[k] for k in ("size", "magic", "version", "kind", "value", "duplicate",
                                      "out_of_order", "restarts")) == 0


def test_rewards_add_up_to_the_robots_return_despite_dropped_observations():
    port = free_port()
    with serving(port, faults=FaultConfig(drop=0.3, seed=1)) as (server, robots, _), bridge(port) as robot:
        robot.read()
        robot.send(np.array([0.0]))  # arms the episode
        total = 0.0
        for _ in range(40):
            assert robot.wait_new(2.0)
            total += robot.read().reward
        assert robot.stats["gaps"] > 0
        assert total == pytest.approx(robot.latest.ret) and robot.episode_return == pytest.approx(total)


def test_malformed_messages_are_dropped_and_counted_on_both_sides():
    port = free_port()
    with serving(port) as (server, robots, _), bridge(port) as robot:
        robot.read()
        robot.send(np.array([0.1]))
        # bad commands from another session that connects to the robot; bad observations
        # from the robot's own publisher (peers do not forward: the controller hears only the robot)
        rogue = open_session(endpoint(port), listen=False)
        try:
            cmd_pub = declare_publisher(rogue, "rtmpc/robot/cmd")
            wrong_version = bytearray(CmdEncoder(1, session=99).encode(1, 1, math.inf, np.zeros(1)))
            wrong_version[4] = VERSION + 1
            bad_cmds = [bytes(wrong_version), CmdEncoder(3, 98).encode(1, 1, 0.0, np.zeros(3)),
                        # a stranger's well-formed header is refused before its values are read;
                        # a non-finite action under the controller's own session is a value error
                        CmdEncoder(1, 97).encode(1, 1, math.inf, np.zeros(1)),
                        CmdEncoder(1, robot._enc.session).encode(1, 1, math.inf, np.array([np.nan]))]
            bad_obs = [b"short", ObsEncoder(7, 5).encode(1, 0.0, 0.0, 0, 0, np.zeros(7)), b"X" * 64]
            for payload in bad_obs:
                server._pub_z.put(payload)

            def counted():
                for payload in bad_cmds:  # again until heard: the rogue's routes take a moment
                    cmd_pub.put(payload)
                s, c = robot.stats, server.summary()["commands"]
                return s["size"] >= 2 and s["magic"] >= 1 and c["version"] >= 1 and c["size"] >= 1 and c["value"] >= 1 \
                    and c["refused"] >= 1

            wait_until(counted, what="the bad messages to be counted")
        finally:
            rogue.close()
        before = robot.read().seq
        for _ in range(5):  # both sides still work
            assert robot.wait_new(2.0)
            robot.read()
            robot.send(np.array([0.1]))
        assert robot.read().seq >= before + 5
        assert server.summary()["commands"]["controllers"] == 1  # the rogue's commands never counted as one


def test_injected_reorders_duplicates_and_drops_are_each_counted_by_the_robot():
    port = free_port()
    faults = FaultConfig(drop=0.1, reorder=0.05, duplicate=0.05, seed=3)
    with serving(port) as (server, robots, _), bridge(port, faults=faults) as robot:
        for _ in range(300):  # one command per observation, as a controller sends them: an unpaced burst
            robot.wait_new(1.0)  # can overrun the transport, whose congestion control drops (by design)
            robot.read()
            robot.send(np.array([0.0]))
        robot.close()  # flushes a held-back command
        sent, inj = robot.stats["sent"], robot.stats
        expected = sent - inj["cmd_drop"] + inj["cmd_duplicate"]
        wait_until(lambda: server.summary()["commands"]["received"] == expected, what="every command sent")
        c = server.summary()["commands"]
        assert inj["cmd_drop"] > 10 and inj["cmd_reorder"] > 5 and inj["cmd_duplicate"] > 5
        assert c["duplicate"] == inj["cmd_duplicate"]
        # each reorder is overtaken by a later command (one still held at the end is sent last)
        assert inj["cmd_reorder"] - 1 <= c["out_of_order"] <= inj["cmd_reorder"]
        assert c["gaps"] <= inj["cmd_drop"] + inj["cmd_reorder"]
        assert c["gaps"] >= inj["cmd_drop"] + c["out_of_order"] - 5  # less only by drops at the very end


def test_watchdog_applies_the_safe_action_when_commands_stop_and_reports_it():
    port = free_port()
    with serving(port, watchdog_periods=5) as (server, robots, _), bridge(port) as robot:
        for _ in range(10):
            assert robot.wait_new(2.0)
            robot.read()
            robot.send(np.array([0.7]))
        last = time.monotonic()
        assert robot.stats["robot_watchdog"] == 0
        wait_until(lambda: robot.latest.flags & OBS_WATCHDOG, what="the watchdog flag")
        tripped_at = robot.latest.stamp  # the robot's clock: the same monotonic clock here
        assert tripped_at - last <= 5 * PERIOD + 2 * PERIOD + 0.05
        assert robot.stats["robot_watchdog"] == 1
        n = len(robots[0].applied)
        wait_until(lambda: len(robots[0].applied) > n + 3, what="more steps")
        assert robots[0].applied[-1] == 0.0 and 0.7 in robots[0].applied
        assert server.summary()["watchdog_trips"] == 1
        robot.read()
        robot.send(np.array([0.7]))  # commands resume
        wait_until(lambda: not robot.latest.flags & OBS_WATCHDOG, what="the watchdog to clear")
        assert robots[0].applied[-1] == 0.7


def test_episodes_end_linger_and_restart_for_the_next_controller():
    port = free_port()
    with serving(port, steps=20, linger_s=0.3) as (server, robots, _):
        with bridge(port) as robot:
            done = False
            for _ in range(200):
                assert robot.wait_new(2.0)
                done = robot.read().done
                if done:
                    break
                robot.send(np.array([1.0]))
            assert done and robot.episode_return == pytest.approx(20.0)
            assert robots[0].x == pytest.approx(20.0)
        with bridge(port) as robot:  # waits out the linger: the first observation is a new episode
            obs = robot.read()
            assert not obs.done and robot.latest.episode == 1 and robot.latest.flags & OBS_WAITING
            assert not robot.latest.flags & OBS_DONE


def test_the_control_loop_runs_over_the_bridge():
    port = free_port()
    with serving(port) as (server, robots, _), bridge(port) as robot:
        safety = SafetyFilter(np.array([-1.0]), np.array([1.0]), PERIOD, SafetyConfig(stale_from="stamp",
                                                                                      stale_after_s=0.5))
        loop = ControlLoop(robot, ConstantPlanner(value=0.25), safety, LoopConfig(rate_hz=100.0))
        summary = loop.run(max_cycles=100)
        assert summary["stop_reason"] == "max_cycles" and summary["cycles"] == 100
        wait_until(lambda: 0.25 in robots[0].applied, what="a planned action applied")
        assert robot.stats["sent"] == 101  # 100 cycles and the safe action at the end


def test_the_robots_death_makes_the_next_read_stale_at_once():
    port = free_port()
    with serving(port) as (server, robots, _):
        robot = BridgeRobot(2, 1, PERIOD, BridgeConfig(endpoint=endpoint(port)))
        try:
            assert math.isfinite(robot.read().stamp)
            server.stop()
            server.close()  # drops the liveliness token
            wait_until(lambda: robot.stats["lost"] == 1, timeout=5.0, what="the loss to be seen")
            assert math.isnan(robot.read().stamp)
        finally:
            robot.close()


class _Payload(bytes):
    """A zenoh payload: its length and its bytes."""

    def to_bytes(self) -> bytes:
        return bytes(self)


def _sample(payload: bytes) -> SimpleNamespace:
    """What the client's observation callback reads from a zenoh sample."""
    return SimpleNamespace(payload=_Payload(payload))


def test_observations_in_flight_at_the_robots_death_do_not_revive_it():
    port = free_port()
    with serving(port) as (server, robots, _):
        robot = BridgeRobot(2, 1, PERIOD, BridgeConfig(endpoint=endpoint(port)))
        try:
            server.stop()
            server.close()
            wait_until(lambda: robot.stats["lost"] == 1, timeout=5.0, what="the loss to be seen")
            with robot._lock:
                # a real observation still in flight at the loss may have arrived after it (and counts)
                last, already = robot._latest, robot._after_loss
            assert already < ALIVE_AGAIN_AFTER and math.isnan(robot.read().stamp)
            enc = ObsEncoder(2, last.session)
            for k in range(1, ALIVE_AGAIN_AFTER - already + 1):
                # as if sent before the token was dropped and delivered after it
                robot._on_obs(_sample(enc.encode(last.seq + k, last.stamp, 0.0, last.episode, last.step + k,
                                                 np.full(2, float(k)))))
                obs = robot.read()
                assert obs.values[0] == k  # kept: no data lost
                # alive again only after a run of them
                assert math.isnan(obs.stamp) == (already + k < ALIVE_AGAIN_AFTER), (already, k)
        finally:
            robot.close()


def test_no_robot_is_a_clear_error():
    with pytest.raises(BridgeError, match="no observation from a robot at tcp/127.0.0.1"):
        BridgeRobot(2, 1, PERIOD, BridgeConfig(endpoint=endpoint(free_port()), connect_timeout_s=0.3))


def test_a_robot_of_another_size_is_a_clear_error():
    port = free_port()
    with serving(port):
        with pytest.raises(BridgeError, match="runs a task with obs 2, act 1, but the model is for a task with "
                                              "obs 3, act 1: start the robot with a task of the model's sizes$"):
            BridgeRobot(3, 1, PERIOD, BridgeConfig(endpoint=endpoint(port), connect_timeout_s=1.0))


@pytest.mark.parametrize("bad", ["127.0.0.1:7390", "tcp/127.0.0.1", "tcp/127.0.0.1:0", "shm/x:1",
                                 "tcp/127.0.0.1:99999"])
def test_endpoints_are_validated(bad):
    with pytest.raises(ConfigError, match="is not an endpoint"):
        BridgeConfig(endpoint=bad)


class _FailingRobot(ToyRobot):
    """A toy robot whose reading fails after ``fail_after`` applied commands."""

    def __init__(self, fail_after: int):
        super().__init__()
        self.fail_after = fail_after

    def read(self) -> Observation:
        if len(self.applied) >= self.fail_after:
            raise RuntimeError("encoder bus fault (injected)")
        return super().read()


def test_the_server_applies_the_safe_action_before_it_exits_on_an_error():
    port = free_port()
    made = []

    def make(ep):
        made.append(_FailingRobot(fail_after=15))
        return made[-1]

    server = RobotServer(make, 2, 1, PERIOD, np.array([-0.75]), ServerConfig(endpoint=endpoint(port)))
    errors = []

    def serve():
        try:
            server.run(duration_s=30)
        except RuntimeError as err:
            errors.append(err)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with bridge(port) as robot:
            robot.read()
            while thread.is_alive() and len(made[0].applied) < 15:
                robot.send(np.array([0.5]))
                time.sleep(PERIOD / 2)
        thread.join(5)
    finally:
        server.close()
    assert errors and "encoder bus fault" in str(errors[0])
    assert made[0].applied[:14].count(0.5) >= 1 and made[0].applied[-1] == -0.75
