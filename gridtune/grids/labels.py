"""`Label`: the honest outcome of labelling one scenario (docs/data.md, "Label statuses").

Statuses:
    feasible    AC-OPF converged and its solution re-checks (power-flow mismatch and limit
                violations under `Tolerances`), or a point recovered from a relaxation passed an
                AC power flow against every limit (`certificate = "soc-recovered"`; then only the
                label is known, not the optimal solution).
    infeasible  certified: a convex relaxation of the AC-OPF (SOC, cycle or SDP) is infeasible.
    unknown     both AC solvers failed and nothing certified infeasibility. Never relabelled.
    error       the solver crashed; `reason` says why. The build goes on.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

Status = Literal["feasible", "infeasible", "unknown", "error"]
STATUSES: tuple[Status, ...] = ("feasible", "infeasible", "unknown", "error")  # the order of the codes

# What a model can learn from the labels: P(infeasible) from the status, the AC-OPF solution per
# bus, the AC-OPF objective. The one list of task names (targets: `grids.view.TASK_TARGETS`).
TASKS = ("feasibility", "opf", "cost")


@dataclasses.dataclass(frozen=True)
class Tolerances:
    """Tolerances of the feasibility re-check of a solution.

    Attributes:
        mismatch_mva: max nodal power mismatch (MW and Mvar) (default: 1e-3 MW, i.e. 1 kW).
        voltage_pu: allowed excursion beyond voltage limits (default: 1e-4).
        gen_mw: allowed excursion beyond generator P / Q limits in MW / Mvar (default: 1e-3).
        loading_percent: allowed branch loading above 100% of rating (default: 0.1).
        angle_degree: allowed excursion beyond a branch's angle-difference limits (default: 1e-3).
    """

    mismatch_mva: float = 1e-3
    voltage_pu: float = 1e-4
    gen_mw: float = 1e-3
    loading_percent: float = 0.1
    angle_degree: float = 1e-3


@dataclasses.dataclass
class Label:
    """Outcome of labelling one scenario. Arrays are in the grid's internal order.

    Attributes:
        status: see module docstring.
        certificate: what decided the status: `"ac-opf"` (feasible, solution stored),
            `"soc-recovered"` / `"ac-recovered"` (feasible: a point recovered from the SOC solution
            or from an early-stopped AC-OPF passed the re-check; no optimal solution stored),
            `"soc-infeasible"`, `"cycle-infeasible"`, `"sdp-infeasible"`, `"obbt-infeasible"`,
            `"ac-failed"` (unknown)
            or `"crash"` (error).
        objective: AC-OPF cost in $/h (None unless an AC-OPF solution is known).
        pg_mw, qg_mvar: generator dispatch (n_gen,), None unless known.
        vm_pu, va_degree: bus voltages (n_bus,), None unless known.
        loading_percent: branch loading (n_branch,), None unless known.
        branch_flow_mva: max(|S_from|, |S_to|) per branch (n_branch,), None unless known.
        relaxation_objective: lower bound from the SOC (or the tighter cycle / SDP) relaxation,
            $/h.
        dc_status / dc_objective / dc_pg_mw / dc_va_degree: DC-OPF result (None if not run).
        solve_time_s: wall time spent labelling this scenario.
        reason: why the status is `unknown` / `error` (solver message).
    """

    status: Status
    certificate: str
    objective: float | None = None
    pg_mw: np.ndarray | None = None
    qg_mvar: np.ndarray | None = None
    vm_pu: np.ndarray | None = None
    va_degree: np.ndarray | None = None
    loading_percent: np.ndarray | None = None
    branch_flow_mva: np.ndarray | None = None
    relaxation_objective: float | None = None
    dc_status: str | None = None
    dc_objective: float | None = None
    dc_pg_mw: np.ndarray | None = None
    dc_va_degree: np.ndarray | None = None
    solve_time_s: float = 0.0
    reason: str | None = None
