"""MBPO's run config section (``mbpo:``). Imports neither torch nor the simulator.

MBPO: Janner, Fu, Zhang, Levine, "When to Trust Your Model: Model-Based Policy Optimization",
NeurIPS 2019. The paper's MuJoCo settings (its appendix C and jannerm/mbpo's configs) are named
beside each default that differs: the defaults here are sized for a 2-core CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from rtmpc.configs import Config, ConfigError, param
from rtmpc.models.common.ensemble_config import EnsembleConfig, TrainConfig

__all__ = ["SACConfig", "MBPOModelConfig", "MBPOFitConfig", "TerminationConfig", "MBPOConfig"]


@dataclass(frozen=True)
class MBPOModelConfig(EnsembleConfig):
    """PETS's ensemble with MBPO's defaults (7 members of 4 x 200 SiLU, rolled out TS1)."""

    members: int = param(7, "ensemble members E (MBPO: 7; the elites among them are rolled out)", ge=1, le=64)
    propagation: str = param("TS1", "propagation written into the exported file (MBPO's rollouts are TS1)",
                             choices=("TS1",))


@dataclass(frozen=True)
class MBPOFitConfig(TrainConfig):
    """One fit of the ensemble, with MBPO's held-out share and a cap sized for a CPU."""

    val_fraction: float = param(0.2, "share of transitions held out for validation and elite choice (MBPO: 0.2)",
                                gt=0.0, lt=1.0)
    max_updates: int = param(2000, "cap on gradient steps per fit (each fit continues from the last weights)",
                             ge=1)


@dataclass(frozen=True)
class SACConfig(Config):
    """Soft actor-critic (Haarnoja et al. 2018, "SAC: Algorithms and Applications"): twin Q,
    Polyak-averaged targets, a tanh-Gaussian actor and automatic entropy tuning."""

    hidden: tuple[int, ...] = param((256, 256), "units of the actor's and each critic's hidden layers (ReLU)")
    lr: float = param(3e-4, "Adam learning rate of actor, critics and temperature", gt=0.0, le=1.0)
    gamma: float = param(0.99, "discount per agent step", ge=0.0, lt=1.0)
    tau: float = param(0.005, "Polyak rate of the target critics (target += tau * (online - target))",
                       gt=0.0, le=1.0)
    batch_size: int = param(256, "transitions per SAC update (real and model together)", ge=2, le=65536)
    init_alpha: float = param(0.1, "initial entropy temperature alpha", gt=0.0)
    target_entropy: float = param(0.0, "entropy target; 0 means -A (SAC's heuristic, -action size)")
    log_std_min: float = param(-5.0, "lower clamp of the actor's log std")
    log_std_max: float = param(2.0, "upper clamp of the actor's log std")
    critic_layer_norm: bool = param(False, "LayerNorm after each hidden layer of the critics (Ball et al. 2023, "
                                           "RLPD: keeps Q bounded at many updates per step on off-policy data)")
    actor_every: int = param(1, "critic updates per actor and temperature update (1: SAC's, both every update; "
                                "RLPD and REDQ update the actor once per env step at 20 critic updates: 1.8x the "
                                "updates per second of 1 on walker-walk, docs/mbpo.md)", ge=1, le=1000)

    def check(self) -> None:
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"hidden = {list(self.hidden)}: every layer needs >= 1 unit")
        if self.log_std_min >= self.log_std_max:
            raise ConfigError(f"log_std_min = {self.log_std_min} must be below log_std_max = {self.log_std_max}")


@dataclass(frozen=True)
class TerminationConfig(Config):
    """The learned termination head (``termination: learned``), ``P(done | s')`` or ``P(done | s, a,
    s')``: an MLP classifier on the real transitions, refitted with the ensemble and exported to
    ``RUN/termination.onnx``."""

    inputs: str = param("next", "what the head reads: next (the state reached, P(done | s'): Gym's locomotion "
                                "tasks end on a test of it) or all (P(done | s, a, s')); held-out recall on "
                                "random-action data, Hopper 0.96 vs 0.79-0.89, Walker2d 0.65-0.78 vs 0.65-0.70 "
                                "(python -m rtmpc.scripts.diag_mbpo_termination)", choices=("next", "all"))
    hidden: tuple[int, ...] = param((200, 200), "units of the classifier's hidden layers (SiLU)")
    updates: int = param(500, "Adam steps per refit (continuing from the last weights)", ge=1)
    batch_size: int = param(256, "rows per step, half of them terminal transitions while any exist", ge=2)
    lr: float = param(1e-3, "Adam learning rate", gt=0.0, le=1.0)
    threshold: float = param(0.5, "a model transition ends its rollout where P(done | s, a, s') exceeds this",
                             gt=0.0, lt=1.0)
    min_terminal: int = param(10, "real terminal transitions needed before the head is fitted and used (with "
                                  "3, a Hopper run's first fit called a third of its held-out rows terminal)", ge=1)

    def check(self) -> None:
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"hidden = {list(self.hidden)}: every layer needs >= 1 unit")


@dataclass(frozen=True)
class MBPOConfig(Config):
    """MBPO: a PETS ensemble (7 members, 5 elites) fitted every ``model_train_every`` agent steps,
    branched model rollouts of ``k`` steps from real states through the exported ONNX ensemble,
    and SAC trained on a mix of real and model transitions.

    Steps are agent steps (one action; ``task.action_repeat`` physics steps each) except
    ``total_steps``, which counts environment steps with the action repeat, as ``--steps`` does.
    """

    # -- the model ------------------------------------------------------------------------------
    model: MBPOModelConfig = param(MBPOModelConfig(), "the probabilistic ensemble (MBPO: 7 members, 4 x 200 SiLU)")
    fit: MBPOFitConfig = param(MBPOFitConfig(), "one fit of the ensemble (continues from the last weights)")
    elites: int = param(5, "members with the lowest validation MSE used in rollouts (MBPO: 5 of 7)", ge=1, le=64)
    model_train_every: int = param(250, "agent steps between fits of the ensemble (MBPO: 250)", ge=1)
    # -- branched rollouts ----------------------------------------------------------------------
    rollout_every: int = param(250, "agent steps between rounds of branched rollouts (MBPO: 250, after each fit)",
                               ge=1)
    rollout_batch: int = param(5000, "rollouts started from real states per round (MBPO: 100,000)",
                               ge=1, le=10_000_000)
    epoch_length: int = param(1000, "agent steps per epoch of the rollout-length schedule (MBPO: 1000)", ge=1)
    rollout_schedule: tuple[int, int, int, int] = param(
        (20, 100, 1, 15), "[epoch_a, epoch_b, k_a, k_b]: rollout length k_a up to epoch a, growing linearly "
                          "to k_b at epoch b (MBPO Hopper: [20, 100, 1, 15])")
    retain_steps: int = param(1000, "agent steps of rollouts the model buffer keeps (its capacity is "
                                    "rollout_batch * k * rounds in this window; MBPO: 1 epoch)", ge=1)
    threads: int = param(2, "ONNX Runtime threads of the model rollouts", ge=1, le=256)
    rollout_precision: str = param(
        "fp32", "the rollouts' ensemble file: fp32 (the export) or int8 (its dynamically quantised copy, "
                "rtmpc.models.common.quantize: hidden layers int8; 1.6x the transitions/s, scripts/bench_mbpo.py)",
        choices=("fp32", "int8"))
    torch_threads: int = param(1, "torch threads of the ensemble fits and SAC updates (on a loaded 2-core machine "
                                  "one thread ran SAC updates at 37/s, two at 1.2/s)", ge=1, le=256)
    termination: str = param("none", "model-rollout terminations: none (dm_control tasks never terminate; a "
                                      "task that does is refused), known (the task's own test, for Gymnasium's "
                                      "Hopper, Walker2d, Ant, Humanoid, InvertedPendulum -v5) or learned (a "
                                      "classifier P(done | s') fitted on the real terminations)",
                             choices=("none", "known", "learned"))
    termination_model: TerminationConfig = param(TerminationConfig(), "the learned termination head "
                                                                      "(termination: learned)")
    # -- SAC ------------------------------------------------------------------------------------
    sac: SACConfig = param(SACConfig(), "the soft actor-critic")
    real_ratio: float = param(0.05, "share of real transitions in every SAC batch (MBPO: 0.05)", ge=0.0, le=1.0)
    updates_per_step: int = param(10, "SAC updates per agent step (MBPO: 20; 10 here for 2 CPU cores)",
                                  ge=0, le=1000)
    random_steps: int = param(1000, "agent steps of uniform random actions at the start (MBPO: 5,000)", ge=1)
    learning_starts: int = param(500, "agent steps before the first fit and SAC update", ge=1)
    # -- the run --------------------------------------------------------------------------------
    total_steps: int = param(50_000, "environment steps of the run, action repeat counted", ge=1)
    eval_every: int = param(1, "episodes between evaluations (each a committed step)", ge=1)
    eval_episodes: int = param(2, "deterministic-policy episodes per evaluation (their mean is eval_return)",
                               ge=1, le=1000)
    parity_samples: int = param(256, "buffer rows of the ensemble's ONNX/PyTorch check after each fit", ge=1)

    def check(self) -> None:
        a, b, ka, kb = self.rollout_schedule
        if not (0 <= a <= b and 1 <= ka and 1 <= kb <= 1000):
            raise ConfigError(f"rollout_schedule = {list(self.rollout_schedule)}: want [epoch_a, epoch_b, k_a, k_b] "
                              f"with 0 <= epoch_a <= epoch_b and 1 <= k_a, k_b <= 1000")
        if self.elites > self.model.members:
            raise ConfigError(f"elites = {self.elites} is more than mbpo.model.members = {self.model.members}: "
                              f"lower elites or add members")
        if not self.model.learned_reward:
            raise ConfigError("model.learned_reward is off: MBPO's rollouts need the model's reward; set it true")

    def rollout_length(self, epoch: int) -> int:
        """k at ``epoch`` (MBPO's schedule: ``k_a`` until epoch a, linear to ``k_b`` at epoch b, then ``k_b``)."""
        a, b, ka, kb = self.rollout_schedule
        if epoch <= a or b == a:
            return ka if epoch <= a else kb
        frac = min(1.0, (epoch - a) / (b - a))
        return int(ka + frac * (kb - ka))

    def max_rollout_length(self) -> int:
        return max(self.rollout_schedule[2], self.rollout_schedule[3])
