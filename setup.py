"""rtmpc: real-time model predictive control with learned models.

Base install = what deployment needs (plan over an exported ONNX model, run the loop on
a MuJoCo robot). ``[train]`` adds what training and export need; ``[tune]`` what ``rtmpc tune``
needs; ``[bridge]`` the robot in another process (Zenoh); ``[test]`` the test tools (and
``[tune]``, ``[bridge]``).
"""

from setuptools import find_packages, setup

VERSION = "0.1.0"

BASE = [
    "numpy>=1.24",
    "numba>=0.59",
    "onnxruntime>=1.17",
    "onnx>=1.15",
    "pyyaml>=6.0",
    # dm-control 1.0.50 (in [train]) needs mujoco 3.17: mujoco 4.0.0 removed
    # MjModel.flex_vertedge and `suite.load` fails with an AttributeError. Pinned for
    # both so a deployment and a training install simulate the same physics.
    "mujoco==3.17.0",
    "matplotlib>=3.7",  # plots: learning curves, Pareto fronts
    "imageio>=2.31",  # episode videos (GIF)
    "imageio-ffmpeg>=0.4.9",  # episode videos (MP4): ships its own ffmpeg binary
]

TRAIN = [
    # <2.14: a bare `torch` or `<2.15` resolves to 2.14.1, a 5.5 GB CUDA build; 2.13.0
    # has a CPU build on PyPI's local mirror here.
    "torch>=2.2,<2.14",
    # torch 2.13's torch.onnx.export imports onnxscript (its default exporter).
    "onnxscript>=0.1",
    "dm-control==1.0.50",
]

# `rtmpc tune`: multi-objective search with a resumable SQLite (or shared RDB) study.
# Tested with optuna 5.0.0 (Trial.set_constraint, heartbeats).
TUNE = ["optuna>=5.0"]

# `rtmpc robot` / `rtmpc control --robot`: the robot in another process, over Eclipse Zenoh.
# Tested with eclipse-zenoh 1.10.2 (peer sessions, liveliness tokens, express publishers).
BRIDGE = ["eclipse-zenoh>=1.0"]

TEST = ["pytest>=7.4", "ruff>=0.5", *TUNE, *BRIDGE]

setup(
    name="rtmpc",
    version=VERSION,
    description="Real-time MPC with learned models: MuJoCo training, ONNX export, Numba planners, fixed-rate loop",
    python_requires=">=3.10",
    packages=find_packages(include=["configs", "sim", "sim.*", "models", "models.*", "planners",
                                    "planners.*", "controller", "controller.*", "scripts", "scripts.*"]),
    package_data={"configs": ["*.yaml"], "sim": ["assets/*.xml"]},
    install_requires=BASE,
    extras_require={"train": TRAIN, "tune": TUNE, "bridge": BRIDGE, "test": TEST},
    entry_points={"console_scripts": ["rtmpc=scripts.cli:main"]},
)
