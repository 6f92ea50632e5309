"""Feasibility-boundary calibration: the critical uniform load scale of each topology.

Naive sampling makes trivial data (docs/design.md: case30 with stock ratings and a fixed 0.6-1.6 range
gave a from-scratch GNN AUROC 0.998 from 25 labels, because total load alone decided). Every
outage moves the boundary, so each candidate topology gets its own critical scale by bisection on
the AC feasibility label, and scenarios are then drawn within +-band of it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from gridtune.grids.model import GridModel, grid_hash
from gridtune.grids.scenarios import Topology, uniform_scenario

START_SCALE = 1.0       # bracketing starts at nominal load
STEP = 1.25             # bracket grows / shrinks geometrically by this factor
LOW_SCALE = 0.4         # a topology not feasible at or above this load is rejected (recorded)
HIGH_SCALE = 4.0        # a topology still feasible here gets this critical scale
REL_RESOLUTION = 0.01   # bisection stops when the bracket is below 1% of its upper end


@dataclasses.dataclass(frozen=True)
class CalibrationResult:
    topology: Topology | None     # with critical_scale set; None when rejected
    rejected_reason: str | None
    solves: int
    time_s: float


_LABELLERS: dict[str, Any] = {}


def _labeller(grid: GridModel, solver: str) -> Any:
    """One label-only Labeller per grid, solver and process (building one compiles cvxpy problems).

    No SDP and no cycle relaxation: calibration asks only "is the AC-OPF feasible here"; a
    certificate of infeasibility would not change that answer and costs up to tens of seconds
    near the boundary.
    """
    from gridtune.grids.labeller import Labeller

    key = f"{grid_hash(grid)}:{solver}"
    if key not in _LABELLERS:
        _LABELLERS.clear()
        _LABELLERS[key] = Labeller(grid, solutions=False, dc=False, sdp=False, cycles=False,
                                   solver=solver)
    return _LABELLERS[key]


def _feasible(grid: GridModel, topo: Topology, scale: float, vary: np.ndarray | None,
              solver: str) -> bool:
    label = _labeller(grid, solver).label(uniform_scenario(grid, scale, topo, vary=vary))
    return label.status == "feasible"


def critical_scale(grid: GridModel, topo: Topology, *, start: float = START_SCALE,
                   vary: np.ndarray | None = None, solver: str = "pips") -> CalibrationResult:
    """Bisect the uniform load scale at which `topo` stops being AC-feasible (with `vary`, a
    region's buses: the scale of that region's loads, every other load nominal).

    Brackets from `start` (feasible: grow by `STEP` until infeasible; infeasible: shrink until
    feasible), then bisects to `REL_RESOLUTION`. Very low loads can be infeasible too (line
    charging raises voltages beyond what generators can absorb), so the search never goes below
    `LOW_SCALE`. `unknown` counts as not feasible: the boundary sought is where the AC-OPF fails.
    `solver` is tried first at each probe (the Labeller's `solver`; the other one second).
    """
    import time

    t0, solves = time.perf_counter(), 0

    def feasible(scale: float) -> bool:
        nonlocal solves
        solves += 1
        return _feasible(grid, topo, scale, vary, solver)

    def done(topology: Topology | None, reason: str | None = None) -> CalibrationResult:
        return CalibrationResult(topology, reason, solves, time.perf_counter() - t0)

    if feasible(start):
        lo, hi = start, start * STEP
        while feasible(hi):
            lo, hi = hi, hi * STEP
            if hi > HIGH_SCALE:
                return done(dataclasses.replace(topo, critical_scale=HIGH_SCALE))
    else:
        lo, hi = start / STEP, start
        while not feasible(lo):
            lo, hi = lo / STEP, lo
            if lo < LOW_SCALE:
                return done(None, f"not AC-feasible at any uniform load scale in [{LOW_SCALE}, {start}]")
    steps = max(0, math.ceil(math.log2((hi - lo) / (REL_RESOLUTION * hi))))
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if feasible(mid):
            lo = mid
        else:
            hi = mid
    return done(dataclasses.replace(topo, critical_scale=round(0.5 * (lo + hi), 5)))


def _calibrate_task(args: tuple[GridModel, Topology, float, np.ndarray | None, str]
                    ) -> CalibrationResult:
    import warnings

    warnings.simplefilter("ignore")  # solver chatter; statuses carry what matters
    grid, topo, start, vary, solver = args
    return critical_scale(grid, topo, start=start, vary=vary, solver=solver)


def calibrate(grid: GridModel, topologies: list[Topology], *, workers: int | None = None,
              backend: str = "local", progress: bool = False, vary: np.ndarray | None = None,
              solver: str = "pips") -> list[CalibrationResult]:
    """Critical scale of every topology; the base first, then outages bracketed from just below it
    (an outage rarely raises the boundary, so the search starts where most of them end). With
    `vary` (a region's buses) the scale is that of the region's loads alone."""
    from gridtune.parallel import run_tasks

    base = critical_scale(grid, topologies[0], vary=vary, solver=solver)
    results: list[CalibrationResult] = [base]
    start = 0.9 * base.topology.critical_scale if base.topology else START_SCALE
    rest = topologies[1:]
    out: list[CalibrationResult | None] = [None] * len(rest)
    bar = None
    if progress and rest:
        from tqdm import tqdm

        bar = tqdm(total=len(rest), unit="topology", desc=f"calibrating {grid.name}",
                   dynamic_ncols=True)
    for i, res in run_tasks(_calibrate_task, [(grid, t, start, vary, solver) for t in rest], workers=workers,
                            backend=backend):
        out[i] = res
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    results += [r for r in out if r is not None]
    return results
