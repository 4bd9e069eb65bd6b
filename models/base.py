"""The seams between models, planners and the controller.

- :class:`RolloutModel`: ``rollout(obs0, actions) -> returns`` for sampling planners (CEM, MPPI);
- :class:`Policy`: ``act(obs, state) -> action, state`` for a trained actor (feed-forward or
  recurrent), run by the policy runner;
- :class:`StepModel`: ``initial``, ``recurrent``, ``predict`` for tree search (MuZero-style);
- :class:`Family`: what a model family's package under ``rtmpc.models`` provides (see
  :mod:`rtmpc.models.registry`).

Imports numpy only: planners and the deployed controller depend on this module and
never on torch.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["ModelDims", "RolloutModel", "Policy", "StepModel", "Family", "ModelError", "meta_value"]


class ModelError(ValueError):
    """A model file or its inputs are wrong; the message says what and how to fix it."""


def meta_value(meta: dict[str, str], key: str, parse: Callable[[str], Any], source: str) -> Any:
    """``parse(meta[key])`` from a model file's metadata; a missing or unparsable value is a
    one-line ModelError naming the file (``source``) and the key."""
    if key not in meta:
        raise ModelError(f"model file {source} lacks metadata key {key!r}: export it again")
    try:
        return parse(meta[key])
    except (ValueError, TypeError) as err:
        raise ModelError(f"model file {source} has a bad {key!r} in its metadata ({err})") from None


# Upper bounds on the sizes a model file's metadata may declare: a planner allocates its
# buffers from them, so a file saying "members: 10**9" must be refused, not obeyed. Each is
# far above any model rtmpc trains (PETS: 5-7 members, TD-MPC: Z = 512, 5 Q heads).
SIZE_BOUNDS = {"obs_dim": 65_536, "act_dim": 1_024, "members": 256, "particles": 65_536, "latent_dim": 65_536,
               "num_q": 256, "n_actions": 1_000_000}


def meta_size(meta: dict[str, str], key: str, source: str) -> int:
    """A size from a model file's metadata, an integer in [1, SIZE_BOUNDS[key]]; otherwise a
    one-line ModelError naming the file, the key and the bound."""
    value = meta_value(meta, key, int, source)
    bound = SIZE_BOUNDS[key]
    if not 1 <= value <= bound:
        raise ModelError(f"model file {source} declares {key} = {value}, outside 1..{bound}: it was not made by "
                         f"rtmpc export, or is damaged")
    return value


@dataclass(frozen=True)
class ModelDims:
    """Sizes and bounds a planner needs, read from the model file.

    obs_dim: O, act_dim: A, latent_dim: Z (0 for a model that plans in observation
    space), action_low/high: (A,) bounds, gamma: discount per model step.
    """

    obs_dim: int
    act_dim: int
    action_low: np.ndarray
    action_high: np.ndarray
    latent_dim: int = 0
    gamma: float = 1.0
    kind: str = "pets"
    meta: dict = field(default_factory=dict, compare=False)


class RolloutModel(abc.ABC):
    """Predicts the return of K action sequences from one observation.

    ``rollout(obs0 (O,), actions (K, H, A)) -> returns (K,)``: discounted predicted
    return of each sequence, terminal value included where the model has one.
    Non-finite predictions are returned as they are (the planner scores them -inf).
    The returned array, and :attr:`disagreement`, belong to the model and are
    overwritten by the next call: copy what you keep.
    """

    dims: ModelDims

    @abc.abstractmethod
    def rollout(self, obs0: np.ndarray, actions: np.ndarray) -> np.ndarray:
        ...

    @property
    def disagreement(self) -> np.ndarray | None:
        """(K, H) per-step ensemble disagreement of the last rollout, or None."""
        return None

    @property
    def has_prior(self) -> bool:
        return False

    def prior_actions(self, obs0: np.ndarray, n: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        """(n, H, A) action sequences from the model's policy prior (TD-MPC models)."""
        raise NotImplementedError(f"{type(self).__name__} has no policy prior")

    def check_obs(self, obs0: np.ndarray) -> np.ndarray:
        """obs0 as a float32 (O,) array, or a ModelError saying what is wrong."""
        obs = np.asarray(obs0, dtype=np.float32).reshape(-1)
        if obs.shape[0] != self.dims.obs_dim:
            raise ModelError(f"observation has {obs.shape[0]} entries but the model expects "
                             f"{self.dims.obs_dim}: was it trained on another task?")
        if not np.all(np.isfinite(obs)):
            raise ModelError(f"observation is not finite: {obs.tolist()}")
        return obs


class Policy(abc.ABC):
    """A trained actor: ``act(obs (O,), state) -> (action (A,), state)``.

    ``state`` is the actor's recurrent state as a tuple of arrays (``()`` for a
    feed-forward actor); :meth:`initial_state` gives the one an episode starts from.
    Exported to ONNX with the state as input and output, so deployment runs the same
    graph. ``deterministic`` chooses the mean (or argmax) action over a sample; a
    stochastic policy draws from the injected generator. A discrete-action policy returns
    its action index as a float array of shape (1,).
    """

    dims: ModelDims
    deterministic: bool = True

    def initial_state(self) -> tuple[np.ndarray, ...]:
        """The recurrent state at an episode's start (``()`` for a feed-forward actor)."""
        return ()

    @abc.abstractmethod
    def act(self, obs: np.ndarray,
            state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        ...


class StepModel(abc.ABC):
    """A model stepped one action at a time, for tree search (MuZero, Schrittwieser et al. 2020).

    ``initial(obs (O,)) -> latent (Z,)``; ``recurrent(latent (N, Z), action (N, A)) ->
    (latent (N, Z), reward (N,))``; ``predict(latent (N, Z)) -> (value (N,), policy (N, n))``
    with ``policy`` the prior over the n discrete actions (logits), or over n sampled
    actions for continuous ones.
    """

    dims: ModelDims

    @abc.abstractmethod
    def initial(self, obs: np.ndarray) -> np.ndarray:
        ...

    @abc.abstractmethod
    def recurrent(self, latent: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ...

    @abc.abstractmethod
    def predict(self, latent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ...


class Family(Protocol):
    """What a model family's package (``models/<family>/__init__.py``) provides. The package
    itself imports neither torch nor the simulator; each entry point imports what it needs.

    NAME: the family's name (run config ``kind``, exported files' ``kind`` metadata);
    SECTIONS: the run config sections it owns, name -> (its Config class, a one-line doc),
    composed into the run config by ``rtmpc.scripts.runconfig``; STEPS_KEY: the config path ``--steps`` sets;
    PRECISIONS: the export precisions it offers ("fp32" first); DISABLED_OPTIMIZERS: ONNX
    Runtime graph optimizers its sessions run without; EXAMPLE_CONFIG: the shipped config a
    user starts from; SMOKE_OVERRIDES: ``key=value`` settings small enough that train ->
    export -> control runs in seconds (the contract test over every family uses them).
    """

    NAME: str
    SECTIONS: dict[str, tuple[type, str]]
    STEPS_KEY: tuple[str, ...]
    PRECISIONS: tuple[str, ...]
    DISABLED_OPTIMIZERS: tuple[str, ...]
    EXAMPLE_CONFIG: str
    SMOKE_OVERRIDES: tuple[str, ...]

    def train_model(self, run_dir, cfg, *, make_env: Callable, make_planner: Callable, resume: bool) -> list[dict]:
        """Train (or resume) into ``run_dir`` from the run config ``cfg``; the metrics rows.
        ``make_planner(model, rng)`` builds the run's planner over an exported model."""

    def export_model(self, run_dir, cfg, *, out, spec, buffer, rows: np.ndarray, metadata: dict[str, str],
               precision: str = "fp32") -> dict[str, Any]:
        """Export the run's model (trained on the task ``spec``) to ``out`` and check it against
        PyTorch on random inputs and the buffer's ``rows``. Returns parity_max_abs,
        tolerance_abs, tolerance_rel and what (the outputs compared); with another
        precision, that copy's report under its name."""

    def runtime_class(self) -> Callable[..., RolloutModel]:
        """The RolloutModel class of its exported files, ``cls(session, meta, source, **options)``."""

    def predictor_class(self) -> Callable[..., Any]:
        """Its predictor for ``rtmpc analyze``, ``cls(path, **options)``."""

    def planner_bench(self) -> Any:
        """Its part of ``rtmpc bench planner`` (a module: DEFAULTS, OPTIONS, resolve_defaults,
        setup; see models/pets/bench.py)."""
