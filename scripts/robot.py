"""``rtmpc robot``: MuJoCo as the robot in its own process, served over the bridge.

The task's physics runs in wall-clock time, one control step per period (its control
period times ``--action-repeat``); each step's observation is published on
``KEY/obs`` and the newest valid command from ``KEY/cmd`` is applied; when no fresh
command has arrived for ``--watchdog`` periods the task's safe action (zero) is applied
and a warning logged. An episode starts at the first command, and the next one (seed +
1) after the last ends. ``rtmpc control --robot ENDPOINT`` is the other side.
Stops after ``--episodes`` episodes, ``--duration`` seconds, or SIGINT/SIGTERM, then
prints what it counted. See docs/bridge.md.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys

from . import flags

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    from rtmpc.controller.bridge.config import DEFAULT_ENDPOINT

    p.add_argument("--task", default="cartpole-swingup", help="task name (default cartpole-swingup)")
    p.add_argument("--endpoint", default=DEFAULT_ENDPOINT,
                   help=f"where to listen: tcp/, udp/, tls/ or quic/HOST:PORT (default {DEFAULT_ENDPOINT})")
    add_tls_arguments(p, "the robot's")
    p.add_argument("--takeover", action="store_true",
                   help="let a new controller session replace the current one while it is alive (logged); default: "
                        "only once the current one is gone")
    p.add_argument("--access-control", default="", metavar="FILE",
                   help="JSON5 file with zenoh's access_control section (e.g. configs/bridge_access.json5)")
    p.add_argument("--key", default="rtmpc/robot", help="topic prefix: KEY/obs, KEY/cmd, KEY/alive")
    p.add_argument("--seed", type=flags.seed(), default=0, help="seed of the first episode (episode i uses seed+i)")
    p.add_argument("--episodes", type=flags.count(0, 10**9), default=0,
                   help="episodes to serve (default 0: until stopped)")
    p.add_argument("--episode-steps", type=flags.count(0, 10**9), default=0, help="physics control steps per episode "
                                                                "(default: the task's)")
    p.add_argument("--action-repeat", type=flags.count(1, 1000), default=1,
                   help="control steps per robot period (default 1)")
    p.add_argument("--watchdog", type=flags.count(1, 10**6), default=25, metavar="PERIODS",
                   help="apply the safe action after this many periods without a fresh command (default 25)")
    p.add_argument("--linger", type=float, default=0.5, metavar="SECONDS",
                   help="publish an ended episode's last observation this long before the next (default 0.5)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--drop", type=flags.fraction(), default=0.0,
                   help="fault injection: fraction of observations dropped")
    p.add_argument("--reorder", type=flags.fraction(), default=0.0,
                   help="fault injection: fraction sent late, after the next")
    p.add_argument("--duplicate", type=flags.fraction(), default=0.0, help="fault injection: fraction sent twice")
    p.add_argument("--fault-seed", type=flags.seed(), default=0, help="seed of the injected faults")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")


def add_tls_arguments(p, whose: str) -> None:
    """--tls-ca, --tls-cert, --tls-key, --mtls (both sides of the bridge)."""
    p.add_argument("--tls-ca", default="", metavar="PEM", help="tls/ endpoints: the CA certificate that signed the "
                                                               "other side's certificate")
    p.add_argument("--tls-cert", default="", metavar="PEM", help=f"tls/ endpoints: {whose} certificate")
    p.add_argument("--tls-key", default="", metavar="PEM", help="tls/ endpoints: the private key of --tls-cert")
    p.add_argument("--mtls", action="store_true", help="mutual TLS: the robot accepts only controllers with a "
                                                       "certificate signed by --tls-ca")


def tls_config(args):
    from rtmpc.controller.bridge.config import TlsConfig

    return TlsConfig(ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key, mutual=args.mtls)


def print_summary(task: str, s: dict) -> None:
    c, inj = s["commands"], s["obs_injected"]
    each = ", ".join(f"{r:.1f}" for r in s["returns"]) or "none"
    print(f"robot {task} | {1.0 / s['period_s']:.4g} Hz | {s['episodes']} episode(s), returns {each}")
    print(f"  observations  {s['published']} published (injected: drop {inj['drop']}, reorder {inj['reorder']}, "
          f"duplicate {inj['duplicate']})")
    bad = sum(c[k] for k in ("size", "magic", "version", "kind", "value"))
    print(f"  commands      {c['received']} received, {c['accepted']} applied; dropped: {bad} malformed, "
          f"{c['late']} late, {c['duplicate']} duplicate, {c['out_of_order']} out of order, "
          f"{c['old_session']} old session, {c['refused']} refused (another controller was alive), "
          f"{c['ignored']} after the episode; {c['gaps']} seq gaps, {c['controllers']} controller session(s), "
          f"{c['takeovers']} operator takeover(s)")
    print(f"  watchdog      {s['watchdog_trips']} trip(s), {s['watchdog_periods']} period(s) in the safe action "
          f"(after {1e3 * s['watchdog_s']:.0f} ms without a command)")
    r, j = s["rtt_ms"], s["jitter_ms"]
    print(f"  round trip    observation -> command p50 {r['p50']:.3f}  p99 {r['p99']:.3f}  max {r['max']:.3f} ms "
          f"({r['n']} answered)")
    print(f"  wake jitter   p50 {j['p50']:.3f}  p99 {j['p99']:.3f}  max {j['max']:.3f} ms, "
          f"{s['skipped_periods']} period(s) skipped")


def run(args) -> int:
    from rtmpc.controller.bridge import FaultConfig, RobotServer, ServerConfig

    from rtmpc import sim

    cfg = ServerConfig(endpoint=args.endpoint, key=args.key, watchdog_periods=args.watchdog, linger_s=args.linger,
                       episodes=args.episodes, tls=tls_config(args), takeover=args.takeover,
                       access_control=args.access_control,
                       faults=FaultConfig(drop=args.drop, reorder=args.reorder, duplicate=args.duplicate,
                                          seed=args.fault_seed))
    task = sim.TaskConfig(name=args.task, action_repeat=args.action_repeat, episode_steps=args.episode_steps)
    first = sim.make(task, seed=args.seed)
    spec = first.spec

    def make_robot(episode: int):
        # as `rtmpc control --realtime` builds its robot: the same seeds give the same episodes
        env = first if episode == 0 else sim.make(task, seed=args.seed + episode)
        return sim.SimRobot(env, mode="lockstep", seed=args.seed + episode)

    server = RobotServer(make_robot, spec.obs_dim, spec.act_dim, spec.control_period, spec.safe_action, cfg,
                         task=spec.name)
    # zenoh's thread runs Python for every message that arrives (a flood too); the pacing
    # thread gets the interpreter back within 0.5 ms instead of Python's default 5 ms
    sys.setswitchinterval(5e-4)
    stop = {}

    def on_signal(signum, frame):
        stop["by"] = signal.Signals(signum).name
        server.stop()

    saved = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    log.info("robot %s at %s: %.4g Hz, watchdog %d periods, session %08x", spec.name, cfg.endpoint,
             1.0 / spec.control_period, cfg.watchdog_periods, server.session_id)
    if cfg.takeover:
        log.warning("--takeover: a new controller session may replace a live one")
    try:
        summary = server.run(duration_s=args.duration)
    finally:
        server.close()
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    summary.update(task=spec.name, endpoint=cfg.endpoint, stop_reason=stop.get("by", "done"))
    print_summary(spec.name, summary)
    if args.json:
        print(json.dumps(_finite(summary)))
    return 0


def _finite(obj):
    """NaN and inf as null, so that the JSON line is valid JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj
