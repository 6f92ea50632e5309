"""Feasibility-boundary calibration: the critical uniform load scale of each topology.

Naive sampling makes trivial data (DESIGN.md: case30 with stock ratings and a fixed 0.6-1.6 range
gave a from-scratch GNN AUROC 0.998 from 25 labels, because total load alone decided). Every
outage moves the boundary, so each candidate topology gets its own critical scale by bisection on
the AC feasibility label, and scenarios are then drawn within +-band of it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from gridtune.grids.model import GridModel, grid_hash
from gridtune.grids.scenarios import Topology, uniform_scenario

LOW_SCALE = 0.3      # a topology infeasible even at 30% load is rejected (and recorded)
HIGH_SCALE = 4.0     # upper end of the search for the base topology
REL_RESOLUTION = 0.01  # bisection stops when the bracket is below 1% of its upper end


@dataclasses.dataclass(frozen=True)
class CalibrationResult:
    topology: Topology | None     # with critical_scale set; None when rejected
    rejected_reason: str | None
    solves: int
    time_s: float


_LABELLERS: dict[str, Any] = {}


def _labeller(grid: GridModel) -> Any:
    """One label-only Labeller per grid and process (building one compiles cvxpy problems)."""
    from gridtune.grids.labeller import Labeller

    key = grid_hash(grid)
    if key not in _LABELLERS:
        _LABELLERS.clear()
        _LABELLERS[key] = Labeller(grid, solutions=False, dc=False)
    return _LABELLERS[key]


def _feasible(grid: GridModel, topo: Topology, scale: float) -> bool:
    label = _labeller(grid).label(uniform_scenario(grid, scale, topo))
    return label.status == "feasible"


def critical_scale(grid: GridModel, topo: Topology, *, high: float = HIGH_SCALE) -> CalibrationResult:
    """Bisect the uniform load scale at which `topo` stops being AC-feasible.

    `unknown` counts as not feasible here: the boundary we want is where the AC-OPF fails.
    """
    import time

    start, solves = time.perf_counter(), 0

    def feasible(scale: float) -> bool:
        nonlocal solves
        solves += 1
        return _feasible(grid, topo, scale)

    if not feasible(LOW_SCALE):
        return CalibrationResult(None, f"not feasible at load scale {LOW_SCALE}", solves,
                                 time.perf_counter() - start)
    lo, hi = LOW_SCALE, high
    if feasible(hi):
        return CalibrationResult(dataclasses.replace(topo, critical_scale=hi), None, solves,
                                 time.perf_counter() - start)
    steps = math.ceil(math.log2((hi - lo) / (REL_RESOLUTION * hi)))
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if feasible(mid):
            lo = mid
        else:
            hi = mid
    return CalibrationResult(dataclasses.replace(topo, critical_scale=round(0.5 * (lo + hi), 5)),
                             None, solves, time.perf_counter() - start)


def _calibrate_task(args: tuple[GridModel, Topology, float]) -> CalibrationResult:
    grid, topo, high = args
    return critical_scale(grid, topo, high=high)


def calibrate(grid: GridModel, topologies: list[Topology], *, workers: int | None = None,
              backend: str = "local") -> list[CalibrationResult]:
    """Critical scale of every topology; the base topology first, then outages bracketed by it."""
    from gridtune.parallel import run_tasks

    base = critical_scale(grid, topologies[0])
    results: list[CalibrationResult] = [base]
    high = (base.topology.critical_scale * 1.25) if base.topology else HIGH_SCALE
    rest = topologies[1:]
    out: list[CalibrationResult | None] = [None] * len(rest)
    for i, res in run_tasks(_calibrate_task, [(grid, t, high) for t in rest], workers=workers,
                            backend=backend):
        out[i] = res
    results += [r for r in out if r is not None]
    return results
