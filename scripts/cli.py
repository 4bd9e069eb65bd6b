"""The ``rtmpc`` command: one subcommand per module in scripts/, wiring the packages.

Every error a user can cause (a bad config key or value, an unknown task, a missing or
corrupt model file) is printed as one line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# name -> (module in rtmpc.scripts, one-line help)
COMMANDS = {
    "tasks": (".tasks", "list the tasks with their sizes and control periods"),
    "train": (".train", "train a model in simulation (the config's kind: PETS, TD-MPC, MBPO, ...) and export it"),
    "export": (".export", "export a run's model to ONNX and check it against PyTorch"),
    "quickstart": (".quickstart", "train PETS on cartpole-swingup, export, run the real-time loop, video"),
    "control": (".control", "run the fixed-rate control loop with a planner over an exported model"),
    "bench": (".bench", "benchmarks: rtmpc bench planner (plan time vs the FLOP bound and PyTorch baselines)"),
    "robot": (".robot", "MuJoCo as a robot in its own process, served over the bridge (rtmpc control --robot)"),
    "tune": (".tune", "search horizon, samples and iterations for the best return that fits the time budget"),
    "analyze": (".analyze", "how far the model can be trusted: k-step error, calibration, suggested horizon"),
}

USER_ERRORS: tuple[type[BaseException], ...] = ()


def _user_errors() -> tuple[type[BaseException], ...]:
    from rtmpc.configs import ConfigError
    from rtmpc.models.base import ModelError
    from rtmpc.sim.base import TaskError

    return (ConfigError, TaskError, ModelError, FileNotFoundError)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag or value is one line on stderr (exit status 2), no usage dump:
    ``rtmpc control: error: argument --rate: 0.0 is out of range: must be > 0 and <= 100000``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from rtmpc.models.common.fileio import rtmpc_version

    parser = OneLineParser(
        prog="rtmpc", description="Real-time model predictive control with learned models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"rtmpc {rtmpc_version()}",
                        help="print the version (the one stamped into exported models) and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(module, __package__)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or a bad flag (already printed as one line)
        return int(done.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname).1s %(name)s: %(message)s")
    for noisy in ("absl", "OpenGL", "matplotlib", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    return run_reporting(f"rtmpc {args.command}", lambda: args._run(args))


def run_reporting(name: str, fn) -> int:
    """``fn()``'s exit status; a user error is one line on stderr (status 2), Ctrl-C status 130."""
    try:
        return int(fn() or 0)
    except _user_errors() as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rtmpc ... | head`: the reader has gone; say nothing more
        try:  # and let the interpreter's last flush go nowhere instead of raising again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141


if __name__ == "__main__":
    sys.exit(main())
