"""Tabular Dyna-Q / Dyna-Q+ against Sutton & Barto (2nd ed.) chapter 8: Example 8.1 / Figure 8.2
(Dyna Maze), Figure 8.4 (blocking maze), Figure 8.5 (shortcut maze), and exact Q-learning values.

Fixed seeds make every number here deterministic; the thresholds leave a margin around the
measured values (given in each docstring) and around the book's statements.
"""

from __future__ import annotations

import numpy as np
import pytest
from rtmpc.configs import ConfigError
from rtmpc.models.dynaq.tabular import DynaQAgent, TabularDynaQConfig, run_episodes, run_steps
from rtmpc.sim.gridworld import ChangingMaze, GridMaze, blocking_maze, dyna_maze, shortcut_maze

UP, DOWN, RIGHT, LEFT = range(4)
SEEDS = range(10)


# --- the mazes -------------------------------------------------------------------------------

def test_dyna_maze_layout_and_moves():
    """Figure 8.2's maze cell by cell; walls and the border leave the state unchanged; the goal pays 1."""
    m = dyna_maze()
    assert m.render() == "\n".join([".......#G",
                                    "..#....#.",
                                    "S.#....#.",
                                    "..#......",
                                    ".....#...",
                                    "........."])
    assert (m.n_states, m.n_actions) == (54, 4)
    s = m.start_state
    assert m.cell(s) == (2, 0) and m.state((2, 0)) == 2 * 9
    assert m.step(s, LEFT) == (s, 0.0, False)                      # off the grid
    assert m.step(s, UP) == (m.state((1, 0)), 0.0, False)
    beside = m.state((2, 1))
    assert m.step(beside, RIGHT) == (beside, 0.0, False)           # into the wall at (2, 2)
    corner = m.state((0, 6))
    assert m.step(corner, RIGHT)[0] == corner and m.step(corner, UP)[0] == corner
    assert m.step(m.state((1, 8)), UP) == (m.goal_state, 1.0, True)
    assert m.step(m.state((0, 6)), DOWN) == (m.state((1, 6)), 0.0, False)


def test_shortest_paths_match_the_book():
    """BFS: Dyna Maze 14 steps (Example 8.1); blocking maze 10 -> 16 (Figure 8.4); shortcut maze
    16 -> 10 (Figure 8.5); the mazes switch at the book's 1000 and 3000 steps."""
    assert dyna_maze().shortest_path_length() == 14
    blocking, shortcut = blocking_maze(), shortcut_maze()
    assert blocking.before.walls == {(3, c) for c in range(0, 8)}
    assert blocking.after.walls == {(3, c) for c in range(1, 9)}
    assert shortcut.before.walls == {(3, c) for c in range(1, 9)}
    assert shortcut.after.walls == {(3, c) for c in range(1, 8)}
    for cm in (blocking, shortcut):
        assert (cm.before.start, cm.before.goal) == ((5, 3), (0, 8))
    assert (blocking.before.shortest_path_length(), blocking.after.shortest_path_length()) == (10, 16)
    assert (shortcut.before.shortest_path_length(), shortcut.after.shortest_path_length()) == (16, 10)
    assert blocking.at(999) is blocking.before and blocking.at(1000) is blocking.after
    assert shortcut.at(2999) is shortcut.before and shortcut.at(3000) is shortcut.after
    closed = GridMaze(2, 3, frozenset({(0, 1), (1, 1)}), (0, 0), (0, 2))
    assert closed.shortest_path_length() is None
    with pytest.raises(ValueError, match="must not be walls"):
        GridMaze(2, 2, frozenset({(1, 1)}), (0, 0), (1, 1))
    with pytest.raises(ValueError, match="share"):
        ChangingMaze(dyna_maze(), shortcut.before, 10)


# --- the config ------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("epsilon", 1.5), ("step_size", 0.0), ("planning_steps", -1),
                                          ("gamma", 1.2), ("kappa", -1e-3)])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        TabularDynaQConfig(**{field: value})


def test_defaults_are_figure_8_2s():
    cfg = TabularDynaQConfig()
    assert (cfg.planning_steps, cfg.epsilon, cfg.step_size, cfg.gamma, cfg.kappa) == (5, 0.1, 0.1, 0.95, 0.0)


# --- Q-learning (n = 0) is exact on a tiny deterministic MDP ---------------------------------

def test_q_learning_converges_to_closed_form_values():
    """1 x 4 corridor, goal at the right end, gamma = 0.9: Q*(s, a) = gamma ** d(s'), d the distance
    of the next state to the goal (d(goal) = 0). Plain Q-learning (n = 0, epsilon = 0.5, alpha = 0.5,
    300 episodes; every pair is tried hundreds of times) matches all 12 values within 1e-3 for
    every seed (measured error ~1e-13: deterministic transitions, constant alpha is enough)."""
    corridor = GridMaze(1, 4, frozenset(), (0, 0), (0, 3))
    g = 0.9
    expected = np.array([
        #  up      down    right   left
        [g ** 3, g ** 3, g ** 2, g ** 3],   # s = 0: up, down and left bump, right -> s = 1
        [g ** 2, g ** 2, g ** 1, g ** 3],   # s = 1
        [g ** 1, g ** 1, g ** 0, g ** 2],   # s = 2: right reaches the goal, reward 1
    ])
    cfg = TabularDynaQConfig(planning_steps=0, epsilon=0.5, step_size=0.5, gamma=g, episodes=300)
    for seed in range(3):
        agent = DynaQAgent(corridor.n_states, corridor.n_actions, cfg, np.random.default_rng(seed))
        steps = run_episodes(corridor, cfg, agent=agent)
        assert steps.shape == (300,) and steps.min() >= 3
        np.testing.assert_allclose(agent.q[:3], expected, atol=1e-3)
        assert np.all(agent.q[3] == 0.0)  # the terminal state is never updated


def test_dyna_q_plus_plans_untried_actions():
    """Book footnote to Figure 8.5: Dyna-Q+ plans untried actions of a visited state as 'stay, reward 0'
    (so they earn the bonus), plain Dyna-Q plans only tried ones."""
    corridor = GridMaze(1, 4, frozenset(), (0, 0), (0, 3))
    for kappa, untried_positive in ((0.0, False), (0.1, True)):
        cfg = TabularDynaQConfig(planning_steps=200, kappa=kappa, step_size=1.0)
        agent = DynaQAgent(corridor.n_states, corridor.n_actions, cfg, np.random.default_rng(0))
        agent.observe(0, RIGHT, 0.0, 1, False)
        agent.observe(1, LEFT, 0.0, 0, False)
        q = agent.q
        assert (q[0, UP] > 0) == untried_positive and (q[0, DOWN] > 0) == untried_positive
        assert q[2].max() == 0.0 and q[3].max() == 0.0  # never visited: never planned


# --- Figure 8.2: the Dyna Maze ---------------------------------------------------------------

@pytest.fixture(scope="module")
def dyna_maze_runs() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """n -> (steps per episode, greedy path length after each episode; 10**6 = does not reach the
    goal), each (10 seeds, 50 episodes), Figure 8.2's parameters (epsilon 0.1, alpha 0.1, gamma 0.95)."""
    m = dyna_maze()
    out = {}
    for n in (0, 5, 50):
        cfg = TabularDynaQConfig(planning_steps=n, episodes=50)
        steps, greedy = np.zeros((len(SEEDS), 50), int), np.zeros((len(SEEDS), 50), int)
        for i, seed in enumerate(SEEDS):
            agent = DynaQAgent(m.n_states, m.n_actions, cfg, np.random.default_rng(seed))
            for ep in range(50):
                steps[i, ep] = agent.run_episode(m)
                greedy[i, ep] = agent.greedy_path_length(m) or 10**6
        out[n] = (steps, greedy)
    return out


def test_run_episodes_is_reproducible(dyna_maze_runs):
    cfg = TabularDynaQConfig(planning_steps=5, episodes=50)
    np.testing.assert_array_equal(run_episodes(dyna_maze(), cfg, np.random.default_rng(3)), dyna_maze_runs[5][0][3])


def test_n50_is_near_optimal_from_episode_3(dyna_maze_runs):
    """n = 50 (Figure 8.2): from the third episode on the mean steps per episode sit just above the
    14-step shortest path (measured 16.8 over episodes 3..50: epsilon = 0.1 costs ~3 steps); after
    episode 2 the greedy path is at most 16 steps for 8 of 10 seeds (exactly 14 for 5: epsilon-greedy
    exploration has not tried every pair of the lower route yet, and some seeds keep the upper
    16-step route for all 50 episodes). No policy ever beats the BFS length 14."""
    steps, greedy = dyna_maze_runs[50]
    assert steps.min() >= 14 and greedy.min() >= 14
    assert 14.0 <= steps[:, 2:].mean() <= 18.0
    assert np.all(steps[:, 2:].mean(axis=0) <= 24.0)  # each episode from the third, over seeds (max 20.6)
    assert np.sum(greedy[:, 1] <= 16) >= 8
    assert np.sum(greedy[:, 1] == 14) >= 3


def test_planning_speeds_up_learning(dyna_maze_runs):
    """Episodes until the greedy path is near optimal (<= 16 steps: 14 * 1.2 rounded down, the check
    of the book's companion code), median over seeds: n = 50 ~2, n = 5 ~4, n = 0 ~24 (the book:
    ~3 episodes with n = 50, ~25 without planning). Measured medians 2 / 4 / 24. The mean steps of
    episode 2 fall the same way: ~40 (n = 50) < ~120 (n = 5) < ~780 (n = 0)."""
    def episodes_to_near_optimal(greedy: np.ndarray) -> np.ndarray:
        hit = greedy <= 16
        return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 10**6)

    med = {n: float(np.median(episodes_to_near_optimal(dyna_maze_runs[n][1]))) for n in (0, 5, 50)}
    assert med[50] <= 3
    assert med[50] < med[5] <= 8
    assert 15 <= med[0] <= 40
    second = {n: dyna_maze_runs[n][0][:, 1].mean() for n in (0, 5, 50)}
    assert second[50] < second[5] < second[0]
    assert second[50] < 100 and second[0] > 300


# --- Figures 8.4 and 8.5: changing mazes, Dyna-Q vs Dyna-Q+ ------------------------------------

def _changing_runs(cm: ChangingMaze, n: int, kappa: float, total: int) -> tuple[np.ndarray, list[int | None]]:
    """Cumulative reward (seeds, total) and the greedy path length in the final maze, per seed;
    the book's companion code's settings: alpha = 1, epsilon = 0.1, gamma = 0.95."""
    cfg = TabularDynaQConfig(planning_steps=n, step_size=1.0, kappa=kappa)
    rewards, greedy = [], []
    for seed in SEEDS:
        agent = DynaQAgent(cm.after.n_states, cm.after.n_actions, cfg, np.random.default_rng(seed))
        rewards.append(run_steps(cm, cfg, total, agent=agent))
        greedy.append(agent.greedy_path_length(cm.after, 200))
    return np.array(rewards), greedy


def test_dyna_q_plus_finds_the_shortcut():
    """Figure 8.5 (n = 50, kappa = 1e-3, 6000 steps, shortcut at 3000). A policy on the 16-step route
    earns at most 1000 / 16 + 1 = 63 rewards in 1000 steps: Dyna-Q+ earns more than that in the last
    1000 steps for every seed (measured 79..85), so it uses the 10-step shortcut, and its greedy path
    is the BFS-shortest 10 steps for >= 8 of 10 seeds (measured 9; one greedy path follows a bonus
    loop); Dyna-Q earns at most 63 (measured 55..57) and its greedy path is 16 steps for every seed."""
    cm = shortcut_maze()
    plus, plus_greedy = _changing_runs(cm, 50, 1e-3, 6000)
    plain, plain_greedy = _changing_runs(cm, 50, 0.0, 6000)
    bound = 1000 // cm.before.shortest_path_length() + 1
    assert np.all(plus[:, -1] - plus[:, -1001] > bound)
    assert np.all(plain[:, -1] - plain[:, -1001] <= bound)
    assert sum(g == cm.after.shortest_path_length() for g in plus_greedy) >= 8
    assert all(g == cm.before.shortest_path_length() for g in plain_greedy)
    assert plus[:, -1].mean() > plain[:, -1].mean() + 30  # measured 362 vs 287


def test_dyna_q_plus_adapts_to_the_blocking_maze():
    """Figure 8.4 (n = 10, kappa = 1e-4, 3000 steps, blocked at 1000): Dyna-Q+'s cumulative reward
    keeps rising after the switch for every seed (measured 48..54 rewards in steps 2000..3000, the
    16-step route at epsilon = 0.1 gives ~55), so its greedy path is the new shortest route (16,
    at most 18 with ties); Dyna-Q, whose model still holds the old route, earns nothing in those
    1000 steps for half of the seeds and less on average (measured mean 21 vs 52)."""
    cm = blocking_maze()
    plus, plus_greedy = _changing_runs(cm, 10, 1e-4, 3000)
    plain, _ = _changing_runs(cm, 10, 0.0, 3000)
    assert plus.shape == (len(SEEDS), 3000) and np.all(np.diff(plus, axis=1) >= 0)
    assert np.all(plus[:, -1] - plus[:, -1001] >= 30)
    assert all(g is not None and g <= 18 for g in plus_greedy)
    assert (plus[:, -1] - plus[:, 999]).mean() > (plain[:, -1] - plain[:, 999]).mean() + 20


# --- the figures -----------------------------------------------------------------------------

def test_plots_write_png(tmp_path, dyna_maze_runs):
    pytest.importorskip("matplotlib")
    from rtmpc.models.dynaq.tabular import plot_cumulative_reward, plot_dyna_maze

    p = plot_dyna_maze({n: dyna_maze_runs[n][0] for n in (0, 5, 50)}, tmp_path / "figure_8_2.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curve = np.cumsum(np.arange(20) % 5 == 0, dtype=float)
    q = plot_cumulative_reward({"Dyna-Q": curve, "Dyna-Q+": np.stack([curve, curve])}, tmp_path / "f.png",
                               switch_at=10)
    assert q.stat().st_size > 1000
