"""Typed options of the TD-MPC-style latent world model, its updates and its loop. No torch.

TD-MPC2: Hansen, Su, Wang, "TD-MPC2: Scalable, Robust World Models for Continuous
Control", ICLR 2024. Defaults follow its ``config.yaml`` except the sizes (chosen so
that planning at TD-MPC2's setting fits a 20 ms budget on 2 CPU cores; see
docs/latent.md) and the exploration noise (our planner returns the MPPI mean, so noise is
added by the loop; see :class:`LatentLoopConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass

from rtmpc.configs import Config, ConfigError, param

__all__ = ["LatentModelConfig", "LatentTrainConfig", "LatentLoopConfig", "LatentConfig", "LATENT_NORMS",
           "ACTIVATIONS", "tdmpc2_discount"]

# How the latent state z is normalised (the output layer of the encoder and the dynamics):
#   simnorm    Linear -> LayerNorm -> SimNorm: z is split into groups of simnorm_dim entries and
#              each group is a softmax, i.e. a point on a simplex (TD-MPC2, sec. 3.2)
#   layernorm  Linear -> LayerNorm only (TD-MPC2's ablation without SimNorm)
LATENT_NORMS = ("simnorm", "layernorm")
ACTIVATIONS = ("silu", "mish", "elu", "relu")


def tdmpc2_discount(episode_steps: int, denom: float = 5.0, low: float = 0.95, high: float = 0.995) -> float:
    """TD-MPC2's discount heuristic: ``clip((f - 1) / f, low, high)`` with ``f = T / denom``
    for an episode of T agent steps (500 steps -> 0.99)."""
    frac = max(float(episode_steps) / denom, 1e-9)
    return float(min(max((frac - 1.0) / frac, low), high))


@dataclass(frozen=True)
class LatentModelConfig(Config):
    """Sizes of the world model: encoder, latent dynamics, reward, Q ensemble, policy prior."""

    latent_dim: int = param(64, "latent size Z (a multiple of simnorm_dim with SimNorm)", ge=2, le=4096)
    hidden: int = param(64, "units per hidden layer of dynamics, reward, Q and policy "
                            "(TD-MPC2's mlp_dim, 512 in its 5M model; 2 hidden layers each)", ge=4, le=8192)
    enc_hidden: int = param(64, "units per hidden layer of the encoder (TD-MPC2's enc_dim)", ge=4, le=8192)
    enc_layers: int = param(2, "encoder layers in all, the output layer included (TD-MPC2's "
                               "num_enc_layers)", ge=1, le=8)
    latent_norm: str = param("simnorm", "normalisation of the latent: simnorm (TD-MPC2) or layernorm",
                             choices=LATENT_NORMS)
    simnorm_dim: int = param(8, "entries per SimNorm group (one softmax each)", ge=2, le=64)
    num_q: int = param(5, "Q heads in the ensemble (targets: min of a random pair)", ge=2, le=32)
    num_bins: int = param(101, "bins of the two-hot discrete regression of reward and Q "
                               "(in symlog space)", ge=3, le=1001)
    vmin: float = param(-10.0, "lowest bin (symlog units)")
    vmax: float = param(10.0, "highest bin (symlog units)")
    activation: str = param("silu", "hidden activation: silu (default: 15x faster than mish in torch on CPU, "
                                    "same shape), mish (TD-MPC2), elu (TD-MPC), relu", choices=ACTIVATIONS)
    dropout: float = param(0.0, "dropout after the first layer of each Q head (TD-MPC2: 0.01; its random "
                                "mask costs as much as the layer on CPU)", ge=0.0, lt=1.0)
    log_std_min: float = param(-10.0, "lowest log-std of the policy prior")
    log_std_max: float = param(2.0, "highest log-std of the policy prior")
    episodic: bool = param(False, "learn a termination head and stop returns at predicted "
                                  "terminations (tasks that end early, e.g. by falling)")

    def check(self) -> None:
        if self.latent_norm == "simnorm" and self.latent_dim % self.simnorm_dim:
            fit = self.simnorm_dim * max(1, self.latent_dim // self.simnorm_dim)
            raise ConfigError(f"latent_dim = {self.latent_dim} is not a multiple of simnorm_dim = "
                              f"{self.simnorm_dim}: use {fit}")
        if self.vmin >= self.vmax:
            raise ConfigError(f"vmin = {self.vmin} must be below vmax = {self.vmax}")
        if self.log_std_min >= self.log_std_max:
            raise ConfigError(f"log_std_min = {self.log_std_min} must be below log_std_max = {self.log_std_max}")


@dataclass(frozen=True)
class LatentTrainConfig(Config):
    """One gradient update of the world model and policy prior (TD-MPC2, sec. 3.1 and eq. 3-4)."""

    lr: float = param(3e-4, "Adam learning rate", gt=0.0, le=1.0)
    enc_lr_scale: float = param(0.3, "encoder learning rate as a fraction of lr", gt=0.0, le=10.0)
    batch_size: int = param(256, "sub-trajectories per update", ge=1, le=65536)
    horizon: int = param(3, "steps of latent rollout per sub-trajectory (training horizon)", ge=1, le=64)
    rho: float = param(0.5, "weight decay of later rollout steps: step t weighs rho^t", gt=0.0, le=1.0)
    consistency_coef: float = param(20.0, "weight of the latent consistency loss", ge=0.0)
    reward_coef: float = param(0.1, "weight of the reward loss", ge=0.0)
    value_coef: float = param(0.1, "weight of the value (TD) loss", ge=0.0)
    termination_coef: float = param(1.0, "weight of the termination loss (episodic models)", ge=0.0)
    entropy_coef: float = param(1e-4, "weight of the policy entropy bonus (scaled by the action size)", ge=0.0)
    grad_clip_norm: float = param(20.0, "clip the gradient norm of each optimiser step", gt=0.0)
    tau: float = param(0.01, "Polyak rate of the target Q ensemble and of the Q scale", gt=0.0, le=1.0)
    discount: float = param(0.0, "discount per agent step; 0 = TD-MPC2's heuristic from the episode "
                                 "length (clip((T/5 - 1)/(T/5), 0.95, 0.995))", ge=0.0, lt=1.0)


@dataclass(frozen=True)
class LatentLoopConfig(Config):
    """The online loop: collect with the planner over the exported model, update every step."""

    total_steps: int = param(100_000, "environment steps in all (action repeat counted)", ge=1)
    seed_steps: int = param(0, "environment steps of uniformly random actions first; 0 = TD-MPC2's "
                               "max(1000, 5 episodes) agent steps", ge=0)
    utd: float = param(1.0, "gradient updates per agent step (update-to-data ratio); at the end of "
                            "seeding, seed agent steps x utd updates are made at once", gt=0.0, le=64.0)
    eval_every: int = param(10_000, "environment steps between evaluations", ge=1)
    eval_episodes: int = param(2, "planner episodes per evaluation (no exploration noise)", ge=1)
    export_every: int = param(1_000, "environment steps between re-exports of the model the planner "
                                     "collects with (it always plans over the exported ONNX file)", ge=1)
    explore_std: float = param(0.5, "std of the Gaussian noise added to planned actions when "
                                    "collecting, as a fraction of half the action range, at the end "
                                    "of seeding", ge=0.0, le=10.0)
    explore_std_min: float = param(0.05, "the noise std after explore_decay_steps (linear decay)",
                                   ge=0.0, le=10.0)
    explore_decay_steps: int = param(25_000, "environment steps after seeding over which the noise "
                                             "decays (TD-MPC's std schedule)", ge=1)
    threads: int = param(1, "torch threads for the updates (measured on 2 cores: 2 threads gave "
                            "1.1-1.4x, and stalled badly whenever another process held a core)", ge=1, le=64)
    plan_threads: int = param(1, "ONNX Runtime threads of the planner while collecting and evaluating (the "
                                 "latent runtime runs that many slices of the candidates at once); with "
                                 "overlap, one thread plans while the updates take the other core", ge=1, le=64)
    overlap: bool = param(True, "run each step's updates on a second thread while the planner picks the next "
                                "action (same results as False; with threads 1 and plan_threads 1, 1.4x faster per "
                                "step than in turn with 1 torch + 2 ONNX Runtime threads on 2 cores, "
                                "python -m scripts.bench_tdmpc speed)")
    parity_samples: int = param(64, "buffer observations checked ONNX vs PyTorch after each export", ge=1)

    def check(self) -> None:
        if self.explore_std_min > self.explore_std:
            raise ConfigError(f"explore_std_min = {self.explore_std_min} is above explore_std = "
                              f"{self.explore_std}")


@dataclass(frozen=True)
class LatentConfig(Config):
    """The TD-MPC-style latent model: its sizes, its updates and its training loop."""

    model: LatentModelConfig = param(LatentModelConfig(), "world model sizes")
    train: LatentTrainConfig = param(LatentTrainConfig(), "gradient updates")
    loop: LatentLoopConfig = param(LatentLoopConfig(), "the online loop")
