"""Smoke runs of ``rtmpc robot`` + ``rtmpc control --robot`` (a tiny model trained on the
spot, point-target, two processes on 127.0.0.1) and of ``rtmpc bench bridge``."""

import json
import socket
import subprocess
import sys

import pytest
from tiny_run import RTMPC, rtmpc

pytest.importorskip("zenoh")


def free_endpoint() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp/127.0.0.1:{s.getsockname()[1]}"


def test_control_drives_a_robot_in_another_process(run_dir):
    endpoint = free_endpoint()
    # the model's step is 8 physics steps (the config's action repeat): 15 model steps = 120 robot steps
    robot = subprocess.Popen([*RTMPC, "robot", "--task", "point-target", "--endpoint", endpoint, "--episodes", "1",
                              "--episode-steps", "120", "--linger", "0", "--duration", "60", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        res = rtmpc("control", "--model", str(run_dir / "model.onnx"), "--config", str(run_dir / "config.yaml"),
                    "--robot", endpoint, "--json", timeout=120)
        assert res.returncode == 0, res.stderr[-3000:]
        out, err = robot.communicate(timeout=30)
    finally:
        if robot.poll() is None:
            robot.kill()
            robot.wait()
    assert robot.returncode == 0, err[-3000:]
    ctl, served = json.loads(res.stdout.strip().splitlines()[-1]), json.loads(out.strip().splitlines()[-1])
    assert ctl["mode"] == "bridge" and ctl["stop_reason"] == "done" and ctl["cycles"] >= 14
    assert ctl["bridge"]["accepted"] > 0 and ctl["bridge"]["size"] == 0 and ctl["bridge"]["restarts"] == 0
    assert served["episodes"] == 1 and served["commands"]["accepted"] >= 14
    assert ctl["returns"][0] == pytest.approx(served["returns"][0])  # the same episode, seen from both sides
    assert "  bridge        received" in res.stdout


def test_control_without_a_robot_is_one_line(run_dir):
    res = rtmpc("control", "--model", str(run_dir / "model.onnx"), "--config", str(run_dir / "config.yaml"),
                "--robot", free_endpoint(), "--set", "task.name=point-target", timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "no observation from a robot at tcp/127.0.0.1" in res.stderr.strip().splitlines()[-1]


def test_bench_bridge_prints_a_table_and_a_json_line():
    res = rtmpc("bench", "bridge", "--cycles", "100", "--json", timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("rtt_ms_p50", "rtt_ms_p99", "rtt_ms_max", "read_ms_p99", "send_ms_p99", "answered"):
        assert key in out, key
    assert out["answered"] >= 100 and 0 < out["rtt_ms_p50"] <= out["rtt_ms_p99"] <= out["rtt_ms_max"]
    assert "round trip" in res.stdout


CONTROL_REPORTING_MODULES = (
    "import json, sys; from rtmpc.scripts.cli import main; rc = main(sys.argv[1:]); "
    "print(json.dumps({'imported': sorted(m for m in ('mujoco', 'torch', 'dm_control', 'gymnasium') "
    "if m in sys.modules)})); sys.exit(rc)")


def test_control_on_a_robot_imports_no_simulator_and_no_torch(run_dir):
    endpoint = free_endpoint()
    robot = subprocess.Popen([*RTMPC, "robot", "--task", "point-target", "--endpoint", endpoint, "--episodes", "1",
                              "--episode-steps", "120", "--linger", "0", "--duration", "60", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        res = subprocess.run([sys.executable, "-c", CONTROL_REPORTING_MODULES, "control", "--model",
                              str(run_dir / "model.onnx"), "--config", str(run_dir / "config.yaml"), "--robot",
                              endpoint, "--json"], capture_output=True, text=True, timeout=120)
        robot.communicate(timeout=30)
    finally:
        if robot.poll() is None:
            robot.kill()
            robot.wait()
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == {"imported": []}
    ctl = json.loads(lines[-2])
    assert ctl["mode"] == "bridge" and ctl["stop_reason"] == "done" and ctl["bridge"]["accepted"] > 0


def test_control_refuses_a_robot_running_another_task_in_one_line(run_dir):
    endpoint = free_endpoint()
    robot = subprocess.Popen([*RTMPC, "robot", "--task", "cartpole-swingup", "--endpoint", endpoint, "--duration",
                              "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        res = rtmpc("control", "--model", str(run_dir / "model.onnx"), "--config", str(run_dir / "config.yaml"),
                    "--robot", endpoint, timeout=120)
    finally:
        robot.kill()
        robot.wait()
    assert res.returncode == 2 and "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "runs task cartpole-swingup with obs 5, act 1, but the model is for task point-target" in last, last
    assert "start `rtmpc robot --task point-target`" in last


def test_control_drives_a_ros2_robot_with_a_joint_map(run_dir, tmp_path):
    """`rtmpc control --robot --ros2 FILE` against a mock ROS 2 robot (rosbags' CDR): the tiny
    point-target model's 6 observations are 6 joints here, its 2 actions one Float64MultiArray."""
    pytest.importorskip("rosbags")
    import threading

    import numpy as np
    from rosbags.typesys import Stores, get_typestore
    from rtmpc.controller.bridge.transport import open_session

    ts, endpoint = get_typestore(Stores.ROS2_HUMBLE), free_endpoint()
    names = ["x", "y", "tx", "ty"]
    got, stop = [], threading.Event()
    z = open_session(endpoint, listen=True)
    pub = z.declare_publisher("joint_states")
    sub = z.declare_subscriber("arm/commands", lambda s: got.append(list(ts.deserialize_cdr(
        s.payload.to_bytes(), "std_msgs/msg/Float64MultiArray").data)))

    def publish():
        T, k = ts.types, 0
        while not stop.wait(0.02):
            k += 1
            msg = T["sensor_msgs/msg/JointState"](
                header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=k, nanosec=0),
                                                frame_id=""),
                name=names, position=np.array([0.1, -0.1, 0.2, 0.2]), velocity=np.zeros(4), effort=np.zeros(0))
            pub.put(bytes(ts.serialize_cdr(msg, "sensor_msgs/msg/JointState")))

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    ros2 = tmp_path / "ros2.yaml"
    ros2.write_text("joint_states: joint_states\ncommands: arm/commands\nobservation: [position:x, position:y, "
                    "velocity:x, velocity:y, position:tx, position:ty]\n")
    try:
        res = rtmpc("control", "--model", str(run_dir / "model.onnx"), "--config", str(run_dir / "config.yaml"),
                    "--robot", endpoint, "--ros2", str(ros2), "--json", timeout=120)
    finally:
        stop.set()
        thread.join(5)
        sub.undeclare()
        pub.undeclare()
        z.close()
    assert res.returncode == 0, res.stderr[-3000:]
    ctl = json.loads(res.stdout.strip().splitlines()[-1])
    assert ctl["mode"] == "bridge" and ctl["stop_reason"] == "max_cycles" and ctl["cycles"] >= 14
    assert ctl["bridge"]["accepted"] > 0 and ctl["bridge"]["bad"] == 0
    assert len(got) >= 14 and all(len(a) == 2 for a in got)
