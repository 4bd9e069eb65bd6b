"""Shared test settings: offscreen rendering and fixed thread counts (2-core machines)."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
