"""``rtmpc control``: run the fixed-rate loop with a planner over an exported model on a robot.

The robot is MuJoCo (``sim.SimRobot``): in lockstep (default; the simulation advances one
model step per cycle; the loop plans inline, so the planned action is always used, and
a plan that overran its deadline is counted as a miss; idle time is skipped) or, with
``--realtime``, in wall-clock mode (physics runs in real time in its own thread at the
task's physics control rate; late actions have real consequences), or, with ``--robot
ENDPOINT``, a robot in another process (``rtmpc robot``) reached through the bridge
(controller.bridge; wall-clock, as --realtime): then the task's sizes, bounds, period,
name and observation names come from the model file's metadata and neither MuJoCo nor
torch is imported (the robot computer needs only the model file).
``--commit next`` commits each action one period ahead (loop.commit; sent at the cycle's
wake, planned on the previous observation with the action sent then fixed): in lockstep
too, the simulation steps with the action sent in each cycle, so lockstep shows the cost
of the one-period delay as wall-clock mode pays it.
Needs no torch: ONNX Runtime, Numba and MuJoCo only.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from . import flags

log = logging.getLogger(__name__)

KEYS = ["episodes", "return_mean", "return_std", "cycles", "misses", "skipped_slots", "rate_hz", "plan_ms_p50",
        "plan_ms_p99", "plan_ms_max", "jitter_ms_p50", "jitter_ms_p99", "jitter_ms_max", "safety_events"]


def add_arguments(p) -> None:
    from rtmpc.planners import registry as planners

    p.add_argument("--model", required=True, help="exported model (model.onnx from rtmpc train/export)")
    p.add_argument("--task", help="task name (default: the task stored in the model file)")
    p.add_argument("--planner", choices=planners.names(), help="planner (default: the config's)")
    p.add_argument("--config", help="YAML with planner/loop/safety sections (a run's config.yaml, best.yaml; "
                                    "default: config.yaml beside the model, if there is one)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value, e.g. --set planner.samples=100")
    p.add_argument("--rate", type=flags.rate(), help="control rate in Hz (default: the model's step rate); with "
                                                    "--servo, the planning rate")
    p.add_argument("--servo", type=flags.rate(), help="servo rate in Hz: send the newest plan's action at this "
                                                     "rate, read by time, while the planner replans at the model's "
                                                     "step (default: the config's loop.servo_hz; --set "
                                                     "loop.servo_hz=null for one rate)")
    p.add_argument("--episodes", type=flags.count(1, 100_000), default=1, help="episodes to run")
    p.add_argument("--cycles", type=flags.count(0, 10**9), default=0,
                   help="cycles per episode (default: the task's episode)")
    p.add_argument("--realtime", action="store_true", help="wall-clock robot instead of lockstep")
    p.add_argument("--commit", choices=("now", "next"),
                   help="now: send the plan made on this cycle's observation when it is ready; next: send at wake "
                        "the action planned last cycle (one-period delay compensation) (default: the config's "
                        "loop.commit)")
    p.add_argument("--robot", metavar="ENDPOINT", help="drive the robot served by `rtmpc robot` at ENDPOINT "
                                                       "(e.g. tcp/127.0.0.1:7390) through the bridge")
    p.add_argument("--ros2", metavar="YAML", help="with --robot: the robot speaks ROS 2 (JointState in, "
                                                  "Float64MultiArray out); the file maps its joints to the model's "
                                                  "observation (Ros2Config, docs/bridge.md)")
    from .robot import add_tls_arguments

    add_tls_arguments(p, "the controller's (with --mtls)")
    p.add_argument("--video", help="write a video of the first episode (.mp4 or .gif)")
    p.add_argument("--out", help="directory for telemetry (default: beside the model, control/)")
    p.add_argument("--threads", type=flags.threads(), help="ONNX Runtime intra-op threads (default: the config's "
                                                           "loop.threads)")
    p.add_argument("--seed", type=flags.seed(), default=0, help="seed of the first episode (episode i uses seed+i)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")


def control_config(config_path, overrides, planner_kind):
    """The planner, loop and safety sections: a config file (or defaults) plus overrides."""
    from .runconfig import load_run_config

    extra = {"planner": {"kind": planner_kind}} if planner_kind else None
    return load_run_config(config_path, overrides, extra=extra)


def physics_steps_per_tick(servo_hz: float, physics_s: float) -> int:
    """Physics steps per servo tick in lockstep; a servo period that is no whole number of
    physics steps is a one-line ConfigError."""
    from rtmpc.configs import ConfigError

    per_tick = 1.0 / servo_hz / physics_s
    if abs(per_tick - round(per_tick)) > 1e-6 * per_tick or round(per_tick) < 1:
        raise ConfigError(f"loop.servo_hz = {servo_hz:g}: the servo period must be a whole number of the task's "
                          f"physics steps ({physics_s * 1e3:g} ms): choose a servo rate that divides "
                          f"{1.0 / physics_s:g} Hz")
    return int(round(per_tick))


def run_episodes(model_path, task: str | None, cfg, *, episodes: int = 1, rate_hz: float | None = None,
                 realtime: bool = False, cycles: int = 0, threads: int | None = None, seed: int = 0,
                 out: Path | None = None, video: str | None = None, stretch_episode: bool = False,
                 robot_endpoint: str | None = None, tls=None, ros2=None) -> dict:
    """Run ``episodes`` episodes of the loop; returns the summary (keys: KEYS and more).

    threads: ONNX Runtime intra-op threads (None: the config's loop.threads).
    stretch_episode: make the task's episode long enough for ``cycles`` cycles (benchmarks).
    robot_endpoint: drive ``rtmpc robot`` there through the bridge (wall-clock) instead of
    an in-process SimRobot; the task's sizes, bounds and period come from the model file
    (no simulator is built). tls: a TlsConfig for a tls/ endpoint; ros2: a Ros2Config when
    the robot speaks ROS 2 (then the robot's side measures the return: NaN here).
    """
    from rtmpc.controller import LoopTiming, deploy
    from rtmpc.models.base import ModelError, Policy
    from rtmpc.models.runtime import load_model
    from rtmpc.planners import make_planner

    from rtmpc import sim

    threads = threads or cfg.loop.threads
    model = load_model(model_path, threads=threads, rng=np.random.default_rng(seed))
    meta = model.dims.meta
    trained_on = meta.get("task")
    planner_name = "policy" if isinstance(model, Policy) else cfg.planner.kind  # a trained actor runs as it is
    task = task or trained_on
    if not task:
        raise ModelError(f"{model_path} does not say which task it was trained on: pass --task")
    repeat = int(meta.get("action_repeat", 1))
    if robot_endpoint:
        realtime = True
        if video:
            log.warning("no video with --robot: the simulation runs in the robot's process")
            video = None
    returns, records, summaries, bridge = [], [], [], {}
    task_cfg = cfg.task.replace(name=task)  # keeps a cost section for an MJCF task
    if robot_endpoint:  # the robot computer has no simulator: the model file says it all
        model_spec = _model_spec(model_path, model.dims, task)
    else:
        probe = sim.make(task_cfg, action_repeat=repeat)
        model_spec = probe.spec
        probe.close()
        _check_task(model_path, model.dims, trained_on, model_spec)
    # The one resolution of the rate: --rate, else the file's loop.rate_hz, else the model's step rate.
    timing = LoopTiming.resolve(cfg.loop, 1.0 / model_spec.control_period, rate_hz=rate_hz)
    # a cycle is a servo tick with loop.servo_hz (the planner steps at ``timing``), else a plan period
    tick_s = 1.0 / cfg.loop.servo_hz if cfg.loop.servo_hz else timing.period_s
    if stretch_episode and cycles:
        period = model_spec.control_period
        task_cfg = task_cfg.replace(episode_steps=int(math.ceil(cycles * tick_s / period)) + 2)
    # A config's episode_steps counts model steps; the wall-clock robot steps each physics control step,
    # and so does a lockstep robot under a servo (some physics steps per tick).
    physics_s = model_spec.control_period / repeat
    per_send = repeat
    if cfg.loop.servo_hz and not realtime:  # lockstep: each tick steps the physics a whole number of times
        per_send = physics_steps_per_tick(cfg.loop.servo_hz, physics_s)
    stepwise = realtime or bool(cfg.loop.servo_hz)
    robot_task = task_cfg.replace(action_repeat=1 if stepwise else repeat,
                                  episode_steps=task_cfg.episode_steps * (repeat if stepwise else 1))
    for ep in range(episodes):
        if robot_endpoint:
            spec = model_spec
            robot, safety_cfg = _bridge_robot(robot_endpoint, spec, timing.period_s, tls, ros2), \
                cfg.safety.replace(stale_from="stamp")
        else:
            env = sim.make(robot_task, seed=seed + ep)
            spec = env.spec
            robot, safety_cfg = sim.SimRobot(env, mode="wallclock" if realtime else "lockstep", seed=seed + ep,
                                             steps_per_send=1 if realtime or not cfg.loop.servo_hz else per_send,
                                             record_every_s=(1.0 / 25.0) if (video and ep == 0) else 0.0), cfg.safety
        planner = make_planner(cfg.planner, model, rng=seed + ep)
        max_cycles = cycles or cfg.loop.max_cycles or int(math.ceil(spec.episode_steps * spec.control_period
                                                                     / tick_s)) or 10**9
        if robot_endpoint and not (cycles or cfg.loop.max_cycles):
            # the robot's episode starts at its first command: let its end stop us
            max_cycles += int(math.ceil(1.0 / tick_s))
        summary, rec = deploy.run_episode(
            robot, planner, action_low=spec.action_low, action_high=spec.action_high, safe_action=spec.safe_action,
            timing=timing, max_cycles=max_cycles, loop=cfg.loop, safety=safety_cfg, realtime=realtime,
            run_dir=(out / f"episode{ep}") if out else None, obs_names=spec.obs_names,
            title=f"{task}, {planner_name}, episode {ep}")
        returns.append(robot.episode_return)
        if robot_endpoint:
            bridge = {k: bridge.get(k, 0) + v for k, v in robot.stats.items()}
        records.append(rec)
        summaries.append(summary)
        log.info("episode %d: return %.1f, %d cycles, %d misses, plan p99 %.2f ms", ep, robot.episode_return,
                 summary["cycles"], summary["misses"], summary["plan_ms_p99"])
        if video and ep == 0:
            render_env = sim.make(task_cfg, action_repeat=1)
            sim.render_states(render_env, robot.states, video, fps=1.0 / robot.record_period_s)
            render_env.close()
        if summary.get("stop_reason") in deploy.STOPPED:
            log.info("stopped by %s after episode %d: safe action sent, telemetry written", summary["stop_reason"], ep)
            break
    result = {**deploy.combine(returns, records, summaries), "task": task, "planner": planner_name,
              "mode": "bridge" if robot_endpoint else "realtime" if realtime else "lockstep",
              "loop_mode": ("servo" if cfg.loop.servo_hz else cfg.loop.mode if realtime else "sync"),
              "commit": cfg.loop.commit,
              "rate_hz_target": timing.rate_hz, "budget_ms": 1e3 * timing.budget_s, "threads_ort": threads}
    if robot_endpoint:
        result["bridge"] = bridge
    return result


def _check_task(model_path, dims, trained_on: str | None, spec) -> None:
    """Refuse a task whose sizes differ from the model's; warn about another task of the same sizes."""
    from rtmpc.models.base import ModelError

    names = f"task {spec.name}" + (f" (the model was trained on {trained_on})" if trained_on else "")
    if spec.obs_dim != dims.obs_dim or spec.act_dim != dims.act_dim:
        raise ModelError(f"{model_path} has obs {dims.obs_dim}, act {dims.act_dim} but {names} has obs "
                         f"{spec.obs_dim}, act {spec.act_dim}: use the model trained on it")
    if trained_on and trained_on != spec.name:
        log.warning("%s was trained on %s, not %s: the sizes match, but its predictions are for %s",
                    model_path, trained_on, spec.name, trained_on)


def _model_spec(model_path, dims, task: str):
    """The task as the model file's metadata describes it (``rtmpc export`` writes task,
    control_period, action_repeat, episode_steps, obs_names): sizes and bounds from the model;
    an older file without episode_steps runs until the robot's episode ends."""
    from rtmpc.models.base import ModelError, meta_value
    from rtmpc.sim.base import TaskSpec

    meta, source = dims.meta, str(model_path)
    period = meta_value(meta, "control_period", float, source)
    if not (math.isfinite(period) and period > 0):
        raise ModelError(f"model file {source} has control_period = {period!r}: export it again")
    names = tuple(meta_value(meta, "obs_names", json.loads, source)) if "obs_names" in meta else ()
    if names and len(names) != dims.obs_dim:
        names = ()
    return TaskSpec(name=task, obs_dim=dims.obs_dim, act_dim=dims.act_dim, action_low=dims.action_low,
                    action_high=dims.action_high, control_period=period,
                    episode_steps=int(meta_value(meta, "episode_steps", int, source)) if "episode_steps" in meta else 0,
                    action_repeat=int(meta.get("action_repeat", 1)), obs_names=names)


def _bridge_robot(endpoint: str, spec, period_s: float, tls=None, ros2=None):
    """A BridgeRobot to ``endpoint`` for the task ``spec``; it refuses a robot that announces
    another task or other sizes. Its stamps are arrival times on the loop's clock, so the
    watchdog measures staleness from them (safety.stale_from = stamp)."""
    from rtmpc.controller.bridge import BridgeConfig, BridgeRobot, Ros2Robot

    cfg = BridgeConfig(endpoint=endpoint) if tls is None else BridgeConfig(endpoint=endpoint, tls=tls)
    if ros2 is not None:
        return Ros2Robot(spec.obs_dim, spec.act_dim, period_s, cfg, ros2)
    return BridgeRobot(spec.obs_dim, spec.act_dim, period_s, cfg, task=spec.name)


def _ros2_config(args):
    from rtmpc.configs import ConfigError, load

    if not args.ros2:
        return None
    if not args.robot:
        raise ConfigError("--ros2 goes with --robot ENDPOINT (the robot's zenoh endpoint, e.g. that of "
                          "zenoh-bridge-ros2dds)")
    if not Path(args.ros2).is_file():
        raise ConfigError(f"--ros2 {args.ros2} is not a file: give a YAML file with the Ros2Config fields "
                          f"(joint_states, commands, observation; docs/bridge.md)")
    from rtmpc.controller.bridge import Ros2Config

    return load(Ros2Config, args.ros2)


def print_summary(r: dict) -> None:
    print(f"{r['task']} | {r['planner']} | {r['mode']} | commit {r['commit']} | {r['episodes']} episode(s)")
    each = ", ".join(f"{x:.1f}" for x in r["returns"])
    print(f"  return        {r['return_mean']:.1f} +- {r['return_std']:.1f}   ({each})")
    target = r.get("servo_hz") or r["rate_hz_target"]
    print(f"  rate          {r['rate_hz']:.2f} Hz achieved (target {target:.2f} Hz), {r['cycles']} cycles")
    if "servo_hz" in r:
        print(f"  servo         {r['servo_hz']:g} Hz ({r['interpolation']}), {r['misses']} ticks missed, "
              f"{r.get('skipped_slots', 0)} skipped; planner at "
              f"{r['model_hz']:g} Hz: {r['replan_hz']:.2f} replans/s, {r['plans_late']} late, {r['plan_starved']} "
              f"starved ticks, plan age p50 {r['plan_age_ms_p50']:.1f}  p99 {r['plan_age_ms_p99']:.1f} ms")
    skipped = r.get("skipped_slots", 0)
    print(f"  deadlines     {r['misses']} missed, {r['fallbacks']} fallback actions sent"
          + (f", {skipped} cycle(s) skipped (the loop woke a whole period late)" if skipped else ""))
    threads = f" ({r['threads_ort']} ONNX Runtime thread{'s' if r['threads_ort'] != 1 else ''})" \
        if "threads_ort" in r else ""
    print(f"  plan time     p50 {r['plan_ms_p50']:.2f}  p99 {r['plan_ms_p99']:.2f}  max {r['plan_ms_max']:.2f} ms"
          + threads)
    prio = f"SCHED_FIFO {r['rt_priority']}" if r.get("rt_priority") else "normal priority"
    print(f"  wake jitter   p50 {r['jitter_ms_p50']:.3f}  p99 {r['jitter_ms_p99']:.3f}  "
          f"max {r['jitter_ms_max']:.3f} ms (loop thread at {prio})")
    kinds = {k: v for k, v in r["safety_by_kind"].items() if k != "total" and v}
    print(f"  safety events {r['safety_events']}" + (f" ({kinds})" if kinds else ""))
    if "bridge" in r:
        print("  bridge        " + ", ".join(f"{k} {v}" for k, v in r["bridge"].items() if v or k == "accepted"))


def run(args) -> int:
    from .robot import tls_config
    from .runconfig import config_or_runs

    model_path = Path(args.model)
    config = config_or_runs(args.config, model_path.parent)
    if config is not None and not args.config:
        log.info("planner, loop and safety settings from %s (the run's; --config FILE to use others)", config)
    cfg = control_config(config, args.overrides, args.planner)
    if args.commit:
        cfg = cfg.replace(loop=cfg.loop.replace(commit=args.commit))
    if args.servo is not None:
        cfg = cfg.replace(loop=cfg.loop.replace(servo_hz=args.servo))
    out = Path(args.out) if args.out else model_path.parent / "control"
    result = run_episodes(model_path, args.task, cfg, episodes=args.episodes, rate_hz=args.rate,
                          realtime=args.realtime, cycles=args.cycles, threads=args.threads, seed=args.seed,
                          out=out, video=args.video, robot_endpoint=args.robot,
                          tls=tls_config(args) if args.robot else None, ros2=_ros2_config(args))
    print_summary(result)
    if args.video:
        print(f"  video         {args.video}")
    if args.json:
        print(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                          for k, v in result.items()}))
    return 0
