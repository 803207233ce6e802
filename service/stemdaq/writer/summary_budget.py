"""The summary's budget: how coarse a scan grid its measured CPU allows (no clock here).

Grid classes: a position of class c lies on the grid of every ``2**c``-th row and column. The
summary thread measures the offer rate, its CPU per frame and its CPU besides frames
(:class:`Plan`), and :func:`choose_grid` takes the finest class whose frames fit in the
budget, or none at all while it runs more than :data:`SLACK_S` ahead of it.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

#: grid classes: a position of class c lies on the grid of every 2**c-th row and column
GRID_STEPS = (1, 2, 4, 8, 16)
COARSEST = len(GRID_STEPS) - 1
PAUSED = len(GRID_STEPS)  # take nothing until back within the budget
#: CPU seconds the summary may run ahead of its budget before it takes no more frames
SLACK_S = 0.05
WINDOW_S = 0.02  # how often the budget is checked and the grid chosen
_HEADROOM = 0.8  # plan for this fraction of the budget
_FINER = 0.6  # ... and go to a finer grid only when it fits in this fraction
_SMOOTH = 0.3  # weight of the newest window in the rate and overhead estimates
_SMOOTH_FRAME = 0.05  # weight of the newest frame in the cost estimate


def choose_grid(plan: Plan, share: float, debt: float, current: int, fraction: list[float]) -> int:
    """The finest grid class the budget allows (:data:`PAUSED`: none), given the CPU ``debt``
    (seconds used beyond ``share`` x wall time) and the ``fraction`` of positions per class."""
    if debt > SLACK_S or (current == PAUSED and debt > SLACK_S / 2):
        return PAUSED
    if plan.cost is None or plan.rate is None:
        return min(current, COARSEST)
    need = plan.rate * plan.cost  # cores to sum every frame offered
    for c in range(COARSEST + 1):
        limit = share * (_FINER if c < current else _HEADROOM) - plan.overhead
        if need * fraction[c] <= limit:
            return c
    return COARSEST


def log_grid_change(
    plan: Plan, current: int, chosen: int, cpu: float, share: float, elapsed: float
) -> None:
    """Log a new grid class: INFO the first time the budget leaves every frame, else DEBUG
    (``cpu``: CPU seconds used in ``elapsed`` wall seconds)."""
    level = logging.INFO if current == 0 and not plan.logged else logging.DEBUG
    plan.logged = True
    if chosen == PAUSED:
        what = "over budget, taking no frames"
    elif chosen == 0:
        what = "taking every frame"
    else:
        what = f"taking every {GRID_STEPS[chosen]}th row and column"
    logger.log(
        level,
        "summary: %s (%.3f of %.3f CPU s in %.1f s; %.0f frames/s offered)",
        what,
        cpu,
        share * elapsed,
        elapsed,
        plan.rate or 0.0,
    )


class Plan:
    """Offer rate, CPU per frame and CPU besides frames, measured (summary thread only).

    The budget goes to frames and to a fixed cost of waiting and waking; the finest grid that
    fits is ``rate x cost x fraction(grid) + overhead <= share``.
    """

    def __init__(self, t0: float) -> None:
        self.t = t0
        self.cpu = 0.0
        self.offered = 0
        self.rate: float | None = None  # offers per second
        self.cost: float | None = None  # CPU seconds per frame summed
        self.overhead = 0.0  # cores used besides summing frames
        self.frames_cpu = 0.0  # CPU seconds in frames since the last window
        self.frames = 0  # frames summed, all time
        self.logged = False

    def frame_cost(self, cpu: float) -> None:
        """One frame summed in ``cpu`` seconds (the first, which warms up, is not a sample)."""
        self.frames += 1
        self.frames_cpu += cpu
        if self.frames == 2:
            self.cost = cpu
        elif self.cost is not None:
            self.cost += _SMOOTH_FRAME * (cpu - self.cost)

    def update(self, now: float, cpu: float, offered: int) -> None:
        """Close a window: offers per second, and CPU not spent on frames."""
        dt = now - self.t
        rate = (offered - self.offered) / dt
        self.rate = rate if self.rate is None else self.rate + _SMOOTH * (rate - self.rate)
        other = max(0.0, cpu - self.cpu - self.frames_cpu) / dt
        self.overhead += _SMOOTH * (other - self.overhead)
        self.t, self.cpu, self.offered, self.frames_cpu = now, cpu, offered, 0.0


def grid_classes(scan_shape: tuple[int, int]) -> tuple[bytes, list[float]]:
    """Per position its grid class (bytes, row-major) and the fraction of positions >= class."""

    def classes(n: int) -> np.ndarray:
        idx = np.arange(n)
        out = np.zeros(n, dtype=np.uint8)
        for c in range(1, COARSEST + 1):
            out[idx % GRID_STEPS[c] == 0] = c
        return out

    grid = np.minimum.outer(classes(scan_shape[0]), classes(scan_shape[1])).reshape(-1)
    counts = np.bincount(grid, minlength=COARSEST + 1)[::-1].cumsum()[::-1]
    return grid.tobytes(), [float(n) / max(1, grid.size) for n in counts]
