"""``rtmpc quickstart``: the main job, start to finish.

1. Train PETS on cartpole-swingup with configs/pets_cartpole.yaml (resumes a run that is
   already in --out, so running it again continues or just re-checks).
2. Export the model to ONNX and check it against PyTorch.
3. Run the fixed-rate loop over the exported model for one episode on MuJoCo in
   wall-clock mode, recording a video.
4. Print the return and the real-time statistics.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_arguments(p) -> None:
    p.add_argument("--out", default="runs/quickstart", help="run directory (default runs/quickstart)")
    p.add_argument("--config", default="pets_cartpole", help="run config (default: the shipped pets_cartpole)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")


def run(args) -> int:
    from . import control, export, train

    t0 = time.perf_counter()
    out = Path(args.out)
    print(f"== 1/3 train PETS ({args.config}) into {out}")
    targs = argparse.Namespace(config=args.config, overrides=args.overrides, seed=None, out=str(out),
                               resume=True, steps=None)
    train.run(targs)
    t_train = time.perf_counter() - t0

    print("== 2/3 export to ONNX and check against PyTorch")
    export.run(argparse.Namespace(run_dir=str(out), out=None, samples=1024, json=False))

    print("== 3/3 control loop, wall-clock MuJoCo robot, one episode")
    cfg = control.control_config(out / "config.yaml", [], None)
    video = out / "episode.mp4"
    result = control.run_episodes(out / "model.onnx", None, cfg, episodes=1, realtime=True,
                                  threads=cfg.pets.threads, seed=1000, out=out / "control", video=str(video))
    control.print_summary(result)
    total = time.perf_counter() - t0
    print(f"  video         {video}")
    print(f"  loop plot     {out / 'control' / 'episode0' / 'telemetry.png'}")
    print(f"  learning curve {out / 'learning_curve.png'}; metrics {out / 'metrics.csv'}")
    print(f"done in {total / 60:.1f} min (training {t_train / 60:.1f} min)")
    if args.json:
        print(json.dumps({**result, "train_s": t_train, "total_s": total}))
    return 0
