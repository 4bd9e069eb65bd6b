"""Dyna-Q's run config section (``dynaq:``): the tabular maze experiments or the deep agent.
Imports neither torch nor the simulator (the run config is read on robot computers too)."""

from __future__ import annotations

from dataclasses import dataclass

from rtmpc.configs import Config, ConfigError, param

from .tabular import TabularDynaQConfig

__all__ = ["MazeRunConfig", "DeepDynaQConfig", "DynaQConfig"]


@dataclass(frozen=True)
class MazeRunConfig(Config):
    """Tabular Dyna-Q on one of the textbook's mazes, averaged over seeded runs."""

    maze: str = param("dyna", "dyna (Figure 8.2), blocking (8.4) or shortcut (8.5)",
                      choices=("dyna", "blocking", "shortcut"))
    runs: int = param(30, "independent runs averaged (seeds seed * 1000 + i)", ge=1, le=10_000)
    compare: tuple[int, ...] = param((0, 5, 50), "planning steps n drawn on the Dyna Maze figure")
    steps: int = param(0, "real steps of a changing-maze run (0: the book's, 3000 blocking, 6000 shortcut)",
                       ge=0, le=10_000_000)
    plus_kappa: float = param(1e-3, "Dyna-Q+'s kappa on a changing maze when agent.kappa is 0", gt=0.0)
    agent: TabularDynaQConfig = param(TabularDynaQConfig(), "the agent (n, epsilon, step size, gamma, kappa)")

    def check(self) -> None:
        if any(n < 0 for n in self.compare):
            raise ConfigError(f"compare = {list(self.compare)}: planning steps are >= 0")


@dataclass(frozen=True)
class DeepDynaQConfig(Config):
    """Deep Dyna-Q on a discrete-action task.

    The defaults are tuned on gym:CartPole-v1 with ``python -m rtmpc.scripts.bench_dynaq`` (one torch
    thread): 8 Q updates per env step on batches of 128, half of them imagined, and a hard target
    copy every 100 updates (one update per step with a Polyak tau of 0.005 propagated values far too
    slowly: 4 of seeds 0-4 did not reach 500 in 10k steps). With these defaults the greedy evaluation
    (10 episodes) first reached 500 after 1,250-7,750 env steps (median 2,250) on seeds 0-7, within 136 s each; a full
    10k-step run takes ~170 s. Plain double DQN (``planning_ratio = 0``, same updates) took
    1,250-21,250 (median 3,250). The learned model is accurate on CartPole (members' disagreement
    p99 < 0.1 over 5-step rollouts), so ``disagreement_threshold = 0.5`` drops almost nothing there
    (0.15 was no better). Greedy returns keep oscillating after the first 500, as DQN's do.
    """

    # -- the Q-network and double DQN ---------------------------------------------------------
    q_hidden: tuple[int, ...] = param((128, 128), "units of the Q-network's hidden layers (ReLU)")
    q_lr: float = param(1e-3, "Adam learning rate of the Q-network", gt=0.0, le=1.0)
    batch_size: int = param(128, "transitions per Q minibatch (real and imagined together)", ge=1, le=65536)
    gamma: float = param(0.99, "discount", ge=0.0, lt=1.0)
    target_tau: float = param(1.0, "target network update: target += tau * (online - target) (1: hard copy)",
                              gt=0.0, le=1.0)
    target_period: int = param(100, "Q updates between target network updates (1 with a small tau: Polyak "
                                  "averaging; e.g. 500 with tau 1: DQN's periodic copy)", ge=1)
    q_train_every: int = param(1, "env steps between Q training rounds", ge=1)
    q_updates: int = param(8, "Q gradient updates per training round", ge=1, le=10_000)
    grad_clip: float = param(10.0, "clip the Q gradient to this global norm (0: no clipping)", ge=0.0)
    eps_start: float = param(1.0, "epsilon of the epsilon-greedy behaviour at step 0", ge=0.0, le=1.0)
    eps_end: float = param(0.05, "epsilon after eps_decay_steps", ge=0.0, le=1.0)
    eps_decay_steps: int = param(2_000, "env steps of the linear epsilon decay", ge=1)
    replay_size: int = param(100_000, "real transitions Q and the model sample from (the newest)", ge=1)
    learning_starts: int = param(500, "env steps of epsilon-greedy acting before any update", ge=1)
    # -- the learned model ----------------------------------------------------------------------
    model_members: int = param(5, "ensemble members of the model", ge=1, le=64)
    model_hidden: int = param(200, "units per hidden layer of each member (SiLU)", ge=4, le=8192)
    model_layers: int = param(3, "hidden layers of each member", ge=1, le=8)
    model_lr: float = param(1e-3, "Adam learning rate of the model", gt=0.0, le=1.0)
    model_weight_decay: float = param(1e-5, "L2 weight decay of the model's weights", ge=0.0)
    model_batch_size: int = param(256, "transitions per member per model minibatch", ge=1, le=65536)
    model_train_every: int = param(250, "env steps between model training rounds (the first at "
                                        "learning_starts)", ge=1)
    model_updates: int = param(200, "model gradient updates per training round", ge=1, le=100_000)
    done_pos_weight: float = param(3.0, "weight of terminal transitions in the termination head's binary "
                                        "cross-entropy (terminals are rare)", gt=0.0, le=1000.0)
    # -- planning -------------------------------------------------------------------------------
    planning_ratio: float = param(0.5, "share of each Q minibatch drawn from imagined transitions (0: plain "
                                       "double DQN, no model)", ge=0.0, le=1.0)
    rollout_length: int = param(5, "k: steps of each imagined rollout", ge=1, le=100)
    rollouts_per_step: int = param(8, "imagined rollouts started per real step (made in batches every "
                                      "rollout_every steps)", ge=1, le=100_000)
    rollout_every: int = param(25, "env steps between batches of imagined rollouts", ge=1)
    rollout_epsilon: float = param(0.1, "epsilon of the epsilon-greedy (on Q) actions in imagined rollouts",
                                   ge=0.0, le=1.0)
    disagreement_threshold: float = param(0.5, "drop an imagined transition (and end its rollout) where the "
                                               "members' std of the next observation, in units of the "
                                               "observation change's std, exceeds this in any entry", gt=0.0)
    imagined_size: int = param(50_000, "capacity of the imagined-transition buffer (FIFO)", ge=1)
    # -- the run --------------------------------------------------------------------------------
    total_steps: int = param(10_000, "env steps of a run", ge=1)
    eval_every: int = param(250, "env steps between greedy evaluations", ge=1)
    eval_episodes: int = param(10, "greedy episodes per evaluation (their mean is eval_return)", ge=1, le=1000)
    threads: int = param(1, "torch threads of train_deep_dynaq", ge=1, le=256)
    seed: int = param(0, "seed of the networks, the generator and the episodes", ge=0)

    def check(self) -> None:
        if any(h < 1 for h in self.q_hidden):
            raise ConfigError(f"q_hidden = {list(self.q_hidden)}: every layer needs >= 1 unit")
        if self.eps_end > self.eps_start:
            raise ConfigError(f"eps_end = {self.eps_end} is above eps_start = {self.eps_start}: epsilon decays")


@dataclass(frozen=True)
class DynaQConfig(Config):
    """Dyna-Q (Sutton 1990): tabular on the textbook's mazes, or deep on a discrete-action task."""

    variant: str = param("tabular", "tabular (grid mazes; nothing to export) or deep (a Q-network and a "
                                    "learned model on the run's task)", choices=("tabular", "deep"))
    tabular: MazeRunConfig = param(MazeRunConfig(), "the tabular experiment (variant: tabular)")
    deep: DeepDynaQConfig = param(DeepDynaQConfig(), "the deep agent (variant: deep; its seed is the run's)")
