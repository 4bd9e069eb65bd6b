"""Where MBPO's learned model goes wrong on cartpole-swingup, measured against the simulator.

Not a test. Two diagnostics for an MBPO run on dm_control cartpole-swingup (the one task whose
physics state can be rebuilt from its observation: cart x, cos, sin, x', theta')::

    python -m rtmpc.scripts.diag_mbpo_cartpole errors RUN [--rows 500]
    python -m rtmpc.scripts.diag_mbpo_cartpole oracle --out DIR [rtmpc train flags...]

``errors``: the run's last committed buffer and agent and its ``ensemble.onnx`` (the elites);
for the newest ``--rows`` real states, one model step (the elites' mean) against the simulator
started from the same state, with the buffer's action, the SAC actor's sampled action and a
uniform one. Mean squared error per observation dimension and the reward's RMSE, split by
whether the cart is near the end of its rail (|x| > 1.5, where the slider's joint limit makes
the dynamics discontinuous); one table and one JSON line.

``oracle``: ``rtmpc train configs/mbpo_cartpole.yaml`` with the simulator in place of the learned
model for the branched rollouts (everything else unchanged: fits, elites, SAC, mixing). If MBPO
learns with the true model and not with its own, the model, not the learner, is what fails.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np

TASK, REPEAT, RAIL = "cartpole-swingup", 8, 1.5


class Simulator:
    """``step(obs (N, 5), act (N, 1)) -> next_obs, reward`` by the simulator (EnsembleStep's interface)."""

    def __init__(self):
        from rtmpc import sim

        self.env = sim.make(TASK, seed=0, action_repeat=REPEAT)
        self.transitions, self.seconds = 0, 0.0

    def one(self, obs, act):
        self.env.reset(seed=0)  # a fresh episode: the time limit never ends a step
        self.env.set_state(np.array([obs[0], np.arctan2(obs[2], obs[1]), obs[3], obs[4]]))
        next_obs, reward, *_ = self.env.step(np.asarray(act, np.float32))
        return next_obs, reward

    def step(self, obs, act):
        out = [self.one(o, a) for o, a in zip(obs, act, strict=True)]
        self.transitions += len(obs)
        return np.asarray([o for o, _ in out], np.float32), np.asarray([r for _, r in out], np.float32)


def errors(run: Path, rows: int) -> dict:
    import onnxruntime as ort
    import torch
    from rtmpc.models.mbpo.config import SACConfig
    from rtmpc.models.mbpo.sac import SAC

    agents = sorted(glob.glob(str(run / "checkpoints" / "agent.*.pt")))
    if not agents or not (run / "ensemble.onnx").is_file():
        raise SystemExit(f"{run} has no committed MBPO agent and ensemble.onnx: train it first "
                         f"(rtmpc train configs/mbpo_cartpole.yaml --out {run})")
    step = agents[-1].split(".")[-2]
    buf = np.load(run / f"buffer.{step}.npz")
    state = torch.load(agents[-1], weights_only=True)
    if int(state["obs_dim"]) != 5 or int(state["act_dim"]) != 1:
        raise SystemExit(f"{run} is not a {TASK} run (obs {state['obs_dim']}, act {state['act_dim']})")
    sac = SAC(5, 1, [-1.0], [1.0], SACConfig())
    sac.load_state_dict(state["sac"])
    session = ort.InferenceSession(str(run / "ensemble.onnx"))
    sim, rng = Simulator(), np.random.default_rng(0)
    obs = buf["obs"][-rows:].astype(np.float32)
    result = {"run": str(run), "step": int(step), "rows": len(obs)}
    print(f"{run} (evaluation {int(step)}): one model step (elites' mean) vs the simulator, newest {len(obs)} "
          f"real states; near rail = |x| > {RAIL}")
    print(f"{'actions':8s} {'rows':>10s} " + " ".join(f"{c:>7s}" for c in ("x", "cos", "sin", "xdot", "thdot"))
          + f" {'reward rmse':>12s} {'bias':>7s} {'true mean':>9s}")
    for label in ("buffer", "policy", "uniform"):
        act = {"buffer": buf["act"][-rows:].astype(np.float32), "policy": sac.act(obs),
               "uniform": rng.uniform(-1, 1, (len(obs), 1)).astype(np.float32)}[label]
        true_next, true_rew = sim.step(obs, act)
        e = session.get_inputs()[0].shape[0]
        dm, _, rm, _ = session.run(None, {"obs": np.repeat(obs[None], e, 0), "act": np.repeat(act[None], e, 0)})
        sq = (obs + dm.mean(0) - true_next) ** 2
        rew_sq = (rm.mean(0) - true_rew) ** 2
        rail = (np.abs(obs[:, 0]) > RAIL) | (np.abs(true_next[:, 0]) > RAIL)
        for part, mask in (("all", np.ones(len(obs), bool)), ("rail", rail), ("away", ~rail)):
            if not mask.any():
                continue
            mse = sq[mask].mean(0)
            rmse = float(np.sqrt(rew_sq[mask].mean()))
            bias = float((rm.mean(0) - true_rew)[mask].mean())
            print(f"{label:8s} {part + ' ' + str(int(mask.sum())):>10s} " + " ".join(f"{v:7.4f}" for v in mse)
                  + f" {rmse:12.3f} {bias:+7.3f} {float(true_rew[mask].mean()):9.3f}")
            result[f"{label}_{part}"] = {"rows": int(mask.sum()), "mse": [round(float(v), 5) for v in mse],
                                         "reward_rmse": round(rmse, 4), "reward_bias": round(bias, 4),
                                         "reward_mean": round(float(true_rew[mask].mean()), 4)}
    # the ensemble's disagreement (members' means, in units of the buffer's spread) on the actor's actions
    act = sac.act(obs)
    true_next, _ = sim.step(obs, act)
    dm, *_ = session.run(None, {"obs": np.repeat(obs[None], e, 0), "act": np.repeat(act[None], e, 0)})
    spread = buf["next_obs"].std(0) + 1e-6
    disagreement = (dm.std(0) / spread).max(1)
    err = (((obs + dm.mean(0) - true_next) / spread) ** 2).mean(1)
    rail = (np.abs(obs[:, 0]) > RAIL) | (np.abs(true_next[:, 0]) > RAIL)
    result["disagreement"] = {"corr_with_error": round(float(np.corrcoef(disagreement, err)[0, 1]), 3),
                              "median_rail": round(float(np.median(disagreement[rail])), 4) if rail.any() else None,
                              "median_away": round(float(np.median(disagreement[~rail])), 4) if (~rail).any() else None}
    print(f"disagreement of the elites (actor's actions): correlation with the error "
          f"{result['disagreement']['corr_with_error']:.2f}, median near the rail "
          f"{result['disagreement']['median_rail']}, "
          f"away {result['disagreement']['median_away']}")
    # where the deterministic policy keeps the cart, one episode in the simulator
    env = sim.env
    o, _ = env.reset(seed=5)
    xs, cos = [], []
    for _ in range(1000 // REPEAT):
        o, *_ = env.step(sac.act(o[None].astype(np.float32), True)[0])
        xs.append(o[0])
        cos.append(o[1])
    result["policy_episode"] = {"near_rail_share": round(float(np.mean(np.abs(xs) > RAIL)), 3),
                                "upright_share": round(float(np.mean(np.asarray(cos) > 0.9)), 3)}
    print(f"deterministic policy, one episode: cart near the rail {result['policy_episode']['near_rail_share']:.0%} "
          f"of steps, pole up (cos > 0.9) {result['policy_episode']['upright_share']:.0%}")
    result["near_rail_share_of_buffer"] = round(float((np.abs(buf["obs"][:, 0]) > RAIL).mean()), 4)
    print(f"share of all real states near the rail: {result['near_rail_share_of_buffer']:.2f}")
    print(json.dumps(result))
    return result


def oracle(flags: list[str]) -> int:
    from rtmpc.models.mbpo import train as mbpo_train
    from rtmpc.scripts.cli import main as cli

    opened = mbpo_train.MBPOAgent.open_model

    def open_model(agent, run):
        opened(agent, run)  # fit, export and parity as always; the rollouts then use the simulator
        agent.step_fn = Simulator()

    mbpo_train.MBPOAgent.open_model = open_model
    return cli(["train", "configs/mbpo_cartpole.yaml", *flags])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["oracle"]:
        return oracle(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("errors", help="one-step model errors against the simulator")
    e.add_argument("run", type=Path)
    e.add_argument("--rows", type=int, default=500)
    sub.add_parser("oracle", help="train with the simulator as the rollout model (rtmpc train flags follow)")
    args = p.parse_args(argv)
    errors(args.run, args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
