"""Typed options of the probabilistic ensemble (PETS's model, also MBPO's) and of its
training. No torch.

PETS: Chua, Calandra, McAllister, Levine, "Deep Reinforcement Learning in a Handful
of Trials using Probabilistic Dynamics Models", NeurIPS 2018.
"""

from __future__ import annotations

from dataclasses import dataclass

from rtmpc.configs import Config, ConfigError, param

__all__ = ["EnsembleConfig", "TrainConfig", "PROPAGATIONS", "check_propagation"]

# Trajectory-sampling modes of PETS section 4.2 (names as in the paper and mbrl-lib):
#   TS1         each particle draws a new ensemble member at every step
#   TSinf       each particle keeps one member for the whole horizon
#   expectation one deterministic state per candidate, the mean over members
PROPAGATIONS = ("TS1", "TSinf", "expectation")


def check_propagation(name: str) -> str:
    """``name`` if it is one of :data:`PROPAGATIONS`, else a ValueError listing them."""
    if name not in PROPAGATIONS:
        raise ValueError(f"propagation {name!r} is not known: choose one of {', '.join(PROPAGATIONS)}")
    return name


@dataclass(frozen=True)
class EnsembleConfig(Config):
    """The probabilistic ensemble: E Gaussian MLPs over (delta obs, reward)."""

    members: int = param(5, "ensemble members E (bootstrapped MLPs)", ge=1, le=64)
    hidden: int = param(200, "units per hidden layer", ge=1, le=8192)
    layers: int = param(4, "hidden layers per member", ge=1, le=16)
    activation: str = param("silu", "hidden activation (PETS uses swish = silu)",
                            choices=("silu", "relu", "tanh"))
    propagation: str = param("TSinf", "particle propagation when planning: TS1, TSinf or "
                                      "expectation (PETS sec. 4.2)", choices=PROPAGATIONS)
    particles: int = param(0, "particles per candidate sequence for TS1/TSinf; a multiple of "
                              "members, 0 = one per member (expectation uses one state)", ge=0,
                           le=10_000)
    learned_reward: bool = param(True, "predict the reward with the dynamics (off: the task "
                                       "must supply a reward function)")
    max_logvar_init: float = param(0.5, "initial upper soft bound of the normalised log-variance")
    min_logvar_init: float = param(-10.0, "initial lower soft bound of the normalised log-variance")
    logvar_bound_penalty: float = param(0.01, "loss weight of (sum max_logvar - sum min_logvar)",
                                        ge=0.0)

    def check(self) -> None:
        if self.particles and self.particles % self.members:
            raise ConfigError(f"particles = {self.particles} is not a multiple of members = "
                              f"{self.members}: use {self.members * max(1, self.particles // self.members)} "
                              f"or 0 (one per member)")
        if self.min_logvar_init >= self.max_logvar_init:
            raise ConfigError(f"min_logvar_init = {self.min_logvar_init} must be below "
                              f"max_logvar_init = {self.max_logvar_init}")

    def particles_per_candidate(self) -> int:
        """P: particles per candidate sequence (``particles``, or ``members`` when 0)."""
        return self.particles or self.members


@dataclass(frozen=True)
class TrainConfig(Config):
    """One fit of the ensemble on the replay buffer (Adam, Gaussian NLL, early stopping)."""

    lr: float = param(1e-3, "Adam learning rate", gt=0.0, le=1.0)
    weight_decay: float = param(5e-5, "L2 weight decay (Adam's weight_decay)", ge=0.0)
    batch_size: int = param(256, "minibatch size per member", ge=1)
    epochs: int = param(100, "cap on passes over the training split per fit", ge=1)
    max_updates: int = param(20_000, "cap on gradient steps per fit", ge=1)
    val_fraction: float = param(0.1, "share of transitions held out for validation "
                                     "(0: none, no early stopping)", ge=0.0, lt=1.0)
    patience: int = param(5, "epochs without a member improving its validation MSE before "
                             "the fit stops", ge=1)
    min_improvement: float = param(0.01, "relative drop of a member's validation MSE that counts "
                                         "as an improvement", ge=0.0, lt=1.0)
    bootstrap: bool = param(True, "train each member on its own bootstrap resample (PETS)")
    max_val_samples: int = param(50_000, "cap on validation transitions evaluated per epoch", ge=1)
