"""Deterministic grid-world mazes of Sutton & Barto, *Reinforcement Learning* (2nd ed.), chapter 8.

* :func:`dyna_maze` -- the 6 x 9 Dyna Maze of Example 8.1 / Figure 8.2 (shortest path 14 steps);
* :func:`blocking_maze` -- Example 8.2 / Figure 8.4: the short path on the right (10 steps) is
  blocked after 1000 steps and a longer one on the left (16 steps) opens;
* :func:`shortcut_maze` -- Example 8.3 / Figure 8.5: the long path on the left (16 steps) stays
  open and a short one on the right (10 steps) opens after 3000 steps.

Cells are ``(row, col)`` with row 0 at the top; a state is the int ``row * cols + col``. Four
actions: 0 up, 1 down, 2 right, 3 left. A move into a wall or off the grid leaves the state
unchanged; reaching the goal gives reward 1 and ends the episode, every other step gives 0.
A maze that changes during a run is a :class:`ChangingMaze`: the agent's loop asks
:meth:`ChangingMaze.at` for the maze in force at its cumulative step count.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import cached_property

__all__ = ["ACTIONS", "MOVES", "GridMaze", "ChangingMaze", "dyna_maze", "blocking_maze", "shortcut_maze"]

Cell = tuple[int, int]
ACTIONS = ("up", "down", "right", "left")
MOVES: tuple[Cell, ...] = ((-1, 0), (1, 0), (0, 1), (0, -1))  # (d_row, d_col) of each action


@dataclass(frozen=True)
class GridMaze:
    """A deterministic ``rows x cols`` maze with wall cells, one start and one goal cell."""

    rows: int
    cols: int
    walls: frozenset[Cell]
    start: Cell
    goal: Cell

    def __post_init__(self) -> None:
        object.__setattr__(self, "walls", frozenset((int(r), int(c)) for r, c in self.walls))
        if self.rows < 1 or self.cols < 1:
            raise ValueError(f"a maze needs rows >= 1 and cols >= 1, got {self.rows} x {self.cols}")
        for name, cell in (("start", self.start), ("goal", self.goal), *(("wall", w) for w in self.walls)):
            if not (0 <= cell[0] < self.rows and 0 <= cell[1] < self.cols):
                raise ValueError(f"{name} {cell} lies outside the {self.rows} x {self.cols} grid")
        if self.start in self.walls or self.goal in self.walls:
            raise ValueError(f"start {self.start} and goal {self.goal} must not be walls")
        if self.start == self.goal:
            raise ValueError(f"start and goal are the same cell {self.start}")

    @property
    def n_states(self) -> int:
        return self.rows * self.cols

    @property
    def n_actions(self) -> int:
        return len(MOVES)

    def state(self, cell: Cell) -> int:
        """The int state of ``(row, col)``."""
        return cell[0] * self.cols + cell[1]

    def cell(self, state: int) -> Cell:
        """The ``(row, col)`` of an int state."""
        return divmod(int(state), self.cols)

    @property
    def start_state(self) -> int:
        return self.state(self.start)

    @property
    def goal_state(self) -> int:
        return self.state(self.goal)

    @cached_property
    def transitions(self) -> list[list[int]]:
        """``transitions[s][a]``: the next state (plain lists: the agents index them per step)."""
        table = []
        for s in range(self.n_states):
            r, c = self.cell(s)
            row = []
            for dr, dc in MOVES:
                nr, nc = r + dr, c + dc
                blocked = not (0 <= nr < self.rows and 0 <= nc < self.cols) or (nr, nc) in self.walls
                row.append(s if blocked else nr * self.cols + nc)
            table.append(row)
        return table

    def step(self, state: int, action: int) -> tuple[int, float, bool]:
        """``(next_state, reward, done)``: reward 1 and done on reaching the goal, else 0."""
        nxt = self.transitions[state][action]
        done = nxt == self.goal_state
        return nxt, 1.0 if done else 0.0, done

    def with_walls(self, walls: frozenset[Cell] | set[Cell]) -> GridMaze:
        """The same maze with other walls."""
        return GridMaze(self.rows, self.cols, frozenset(walls), self.start, self.goal)

    def shortest_path_length(self, start: int | None = None) -> int | None:
        """Fewest steps from ``start`` (default: the start cell) to the goal (BFS), None if unreachable."""
        src = self.start_state if start is None else int(start)
        dist = {src: 0}
        queue = deque([src])
        while queue:
            s = queue.popleft()
            if s == self.goal_state:
                return dist[s]
            for nxt in self.transitions[s]:
                if nxt not in dist:
                    dist[nxt] = dist[s] + 1
                    queue.append(nxt)
        return None

    def render(self) -> str:
        """The maze as text: ``#`` wall, ``S`` start, ``G`` goal, ``.`` free."""
        chars = {self.start: "S", self.goal: "G", **{w: "#" for w in self.walls}}
        return "\n".join("".join(chars.get((r, c), ".") for c in range(self.cols)) for r in range(self.rows))


@dataclass(frozen=True)
class ChangingMaze:
    """``before`` until the agent's cumulative step count reaches ``switch_at``, ``after`` from then on."""

    before: GridMaze
    after: GridMaze
    switch_at: int

    def __post_init__(self) -> None:
        b, a = self.before, self.after
        if (b.rows, b.cols, b.start, b.goal) != (a.rows, a.cols, a.start, a.goal):
            raise ValueError("before and after must share the grid size, start and goal")
        if self.switch_at < 0:
            raise ValueError(f"switch_at = {self.switch_at} must be >= 0")

    def at(self, step: int) -> GridMaze:
        """The maze in force at cumulative step ``step`` (0-based: step ``switch_at`` is the first after)."""
        return self.after if step >= self.switch_at else self.before


def _row_walls(row: int, cols: range) -> frozenset[Cell]:
    return frozenset((row, c) for c in cols)


def dyna_maze() -> GridMaze:
    """Figure 8.2's Dyna Maze: 6 x 9, start (2, 0), goal (0, 8), seven wall cells; 14 steps at best."""
    walls = {(1, 2), (2, 2), (3, 2), (4, 5), (0, 7), (1, 7), (2, 7)}
    return GridMaze(6, 9, frozenset(walls), (2, 0), (0, 8))


def blocking_maze(switch_at: int = 1000) -> ChangingMaze:
    """Figure 8.4's blocking maze: wall row 3, cols 0..7 (gap on the right, 10 steps) becomes
    cols 1..8 (gap on the left, 16 steps) at step ``switch_at``; start (5, 3), goal (0, 8)."""
    before = GridMaze(6, 9, _row_walls(3, range(0, 8)), (5, 3), (0, 8))
    return ChangingMaze(before, before.with_walls(_row_walls(3, range(1, 9))), switch_at)


def shortcut_maze(switch_at: int = 3000) -> ChangingMaze:
    """Figure 8.5's shortcut maze: wall row 3, cols 1..8 (gap on the left, 16 steps) becomes
    cols 1..7 (a second gap on the right, 10 steps) at step ``switch_at``; start (5, 3), goal (0, 8)."""
    before = GridMaze(6, 9, _row_walls(3, range(1, 9)), (5, 3), (0, 8))
    return ChangingMaze(before, before.with_walls(_row_walls(3, range(1, 8))), switch_at)
