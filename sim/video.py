"""Offscreen video of an episode: frames from ``Env.render`` written to MP4 or GIF."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .base import Env

log = logging.getLogger(__name__)


def write_video(frames: Sequence[np.ndarray], path: str | Path, fps: float) -> Path:
    """Write RGB frames (T, H, W, 3) uint8 to ``path`` (.mp4 or .gif), atomically."""
    import imageio.v2 as imageio

    path = Path(path)
    if path.suffix not in (".mp4", ".gif"):
        raise ValueError(f"video path {path} should end in .mp4 or .gif")
    if not len(frames):
        raise ValueError("no frames to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if path.suffix == ".mp4":
        # libx264 wants even sizes; macro_block_size=1 keeps the frame as rendered.
        imageio.mimwrite(tmp, list(frames), fps=fps, codec="libx264", quality=7, macro_block_size=1)
    else:
        imageio.mimwrite(tmp, list(frames), duration=1000.0 / fps, loop=0)
    os.replace(tmp, path)
    return path


def record_video(env: Env, policy: Callable[[np.ndarray], np.ndarray], path: str | Path, *,
                 seed: int | None = None, width: int = 320, height: int = 240, fps: float = 30.0,
                 max_steps: int | None = None) -> tuple[Path, float]:
    """Run one episode of ``policy`` (obs -> action), render it, write it; returns (path, return).

    Frames are taken at about ``fps`` of simulated time (every k-th agent step).
    """
    every = max(1, int(round(1.0 / (fps * env.spec.control_period))))
    obs, _ = env.reset(seed=seed)
    frames = [env.render(width, height)]
    total = 0.0
    steps = max_steps or env.spec.episode_steps
    for t in range(steps):
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        total += reward
        if (t + 1) % every == 0:
            frames.append(env.render(width, height))
        if terminated or truncated:
            break
    out = write_video(frames, path, fps=1.0 / (every * env.spec.control_period))
    log.info("wrote %s (%d frames)", out, len(frames))
    return out, total


def render_states(env: Env, states: Sequence[np.ndarray], path: str | Path, fps: float, *,
                  width: int = 320, height: int = 240) -> Path:
    """Render recorded physics states (from ``env.get_state``) and write them as a video."""
    frames = []
    for s in states:
        env.set_state(s)
        frames.append(env.render(width, height))
    return write_video(frames, path, fps=fps)
