"""Dyna-Q, tabular and deep (Sutton 1990): learning, planning with a learned model and acting, interleaved.

``tabular``: tabular Dyna-Q and Dyna-Q+ on the grid-world mazes of Sutton & Barto chapter 8
(:mod:`rtmpc.sim.gridworld`), with the textbook's Figures 8.2, 8.4 and 8.5.
"""
