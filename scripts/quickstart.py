"""``rtmpc quickstart``: the main job, start to finish.

1. Train PETS on cartpole-swingup with configs/pets_cartpole.yaml (resumes a run that is
   already in --out, so running it again continues or just re-checks).
2. Export the model to ONNX and check it against PyTorch.
3. Run the loop over the exported model for one episode on MuJoCo in wall-clock mode,
   recording a video: a 100 Hz servo (the robot's rate; the config's ``loop.servo_hz``)
   sending the newest plan's action while the planner replans at the model's 12.5 Hz on the
   config's ``loop.threads`` ONNX Runtime threads (docs/servo.md).
4. Print the return and the real-time statistics.

Each stage is called through its command's typed function (``train_run``, ``export_run``,
``run_episodes``), never through a hand-built argparse namespace.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import flags


def add_arguments(p) -> None:
    p.add_argument("--out", default="runs/quickstart", help="run directory (default runs/quickstart)")
    p.add_argument("--config", default="pets_cartpole", help="run config (default: the shipped pets_cartpole)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value")
    p.add_argument("--servo", type=flags.rate(),
                   help="servo rate of the control loop in Hz (default: the config's loop.servo_hz, 100 in "
                        "pets_cartpole: the robot's rate; the planner runs at the model's step)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")


def run(args) -> int:
    quickstart(args.out, config=args.config, overrides=args.overrides, as_json=args.json, servo_hz=args.servo)
    return 0


def quickstart(out: str | Path = "runs/quickstart", *, config: str = "pets_cartpole", overrides=(),
               as_json: bool = False, servo_hz: float | None = None) -> dict:
    """Train (or resume) into ``out``, export with a parity check, run one wall-clock episode
    with a video; print each stage and return the loop's summary with the parity and timings."""
    from .control import control_config, print_summary, run_episodes
    from .export import export_run, print_export
    from .train import train_run

    t0 = time.perf_counter()
    out = Path(out)
    print(f"== 1/3 train PETS ({config}) into {out}")
    train_run(config, out=out, overrides=list(overrides), resume=True)
    t_train = time.perf_counter() - t0

    print("== 2/3 export to ONNX and check against PyTorch")
    exported = export_run(out)
    print_export(exported)

    cfg = control_config(out / "config.yaml", [], None)
    if servo_hz:
        cfg = cfg.replace(loop=cfg.loop.replace(servo_hz=servo_hz))
    print("== 3/3 control loop, wall-clock MuJoCo robot, one episode"
          + (f", {cfg.loop.servo_hz:g} Hz servo" if cfg.loop.servo_hz else ""))
    video = out / "episode.mp4"
    result = run_episodes(out / "model.onnx", None, cfg, episodes=1, realtime=True,
                          seed=1000, out=out / "control", video=str(video))
    print_summary(result)
    total = time.perf_counter() - t0
    print(f"  video         {video}")
    print(f"  loop plot     {out / 'control' / 'episode0' / 'telemetry.png'}")
    print(f"  learning curve {out / 'learning_curve.png'}; metrics {out / 'metrics.csv'}")
    print(f"done in {total / 60:.1f} min (training {t_train / 60:.1f} min)")
    result = {**result, "parity_max_abs": exported["parity_max_abs"], "model": exported["model"],
              "video": str(video), "train_s": t_train, "total_s": total}
    if as_json:
        print(json.dumps(result))
    return result
