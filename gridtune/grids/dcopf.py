"""DC-OPF in cvxpy, built once per grid with Parameters and re-solved per scenario.

The DC approximation (lossless, flat voltages, small angles; MATPOWER manual section 4.2 /
Stott, Jardim, Alsac, "DC power flow revisited", IEEE Trans. Power Systems 24(3), 2009):
`P_k = (theta_f - theta_t - shift_k) / (x_k tau_k)`, nodal balance on P only, `|P_k| <= rate_a`,
bus shunt conductance as a constant load (`Gs` at 1 p.u. voltage), reference angle 0.

Loads, branch and generator status and cost scales are `cp.Parameter`s (DPP), so cvxpy compiles
the problem once and each scenario only rewrites the parameter values. The result is a baseline
label (`dc_objective`, `dc_pg_mw`, `dc_va_degree`), not a feasibility certificate for the AC-OPF.
"""

from __future__ import annotations

import dataclasses
import time

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from gridtune.grids.model import REF, GridModel
from gridtune.grids.scenarios import Scenario, dispatch_values, set_dispatch_parameters


@dataclasses.dataclass
class DcOpfResult:
    """One DC-OPF solve.

    Attributes:
        status: cvxpy status (`"optimal"`, `"infeasible"`, ...).
        objective: cost in $/h (NaN unless optimal).
        pg_mw: (n_gen,) dispatch, None unless optimal.
        va_degree: (n_bus,) angles, reference bus at 0, None unless optimal.
        solve_time_s: wall time (parameter update + solve).
    """

    status: str
    objective: float
    pg_mw: np.ndarray | None
    va_degree: np.ndarray | None
    solve_time_s: float


class DcOpf:
    """DC-OPF of one grid (module docstring).

    Args:
        grid: the grid (not modified).

    Example:
        >>> dc = DcOpf(grid); res = dc.solve(scenario); res.objective, res.pg_mw
    """

    def __init__(self, grid: GridModel):
        self.grid = grid
        nb, nl, ng, base = grid.n_bus, grid.n_branch, grid.n_gen, grid.base_mva
        self.pd = cp.Parameter(nb, name="pd_pu")
        self.branch_on = cp.Parameter(nl, nonneg=True, name="branch_on")
        self.pmin = cp.Parameter(ng, name="pmin_pu")
        self.pmax = cp.Parameter(ng, name="pmax_pu")
        self.c2 = cp.Parameter(ng, nonneg=True, name="c2")
        self.c1 = cp.Parameter(ng, name="c1")
        self.c0 = cp.Parameter(ng, name="c0")
        self.theta = cp.Variable(nb, name="va_rad")
        self.pg = cp.Variable(ng, name="pg_pu")
        epi = cp.Variable(ng, name="pg_sq")

        f, t, rows = grid.f_bus, grid.t_bus, np.arange(nl)
        b = 1.0 / (grid.x_pu * grid.tap_ratio)
        # (nl, nb): b_k (theta_f - theta_t)
        diff = sp.csr_matrix((np.r_[b, -b], (np.r_[rows, rows], np.r_[f, t])), shape=(nl, nb))
        flow = cp.multiply(self.branch_on, diff @ self.theta - b * np.deg2rad(grid.shift_degree))
        inc = sp.csr_matrix((np.r_[np.ones(nl), -np.ones(nl)], (np.r_[f, t], np.r_[rows, rows])),
                            shape=(nb, nl))
        c_g = sp.csr_matrix((np.ones(ng), (grid.gen_bus, np.arange(ng))), shape=(nb, ng))
        ref = np.flatnonzero(grid.bus_type == REF)
        cons = [c_g @ self.pg - self.pd - grid.gs_mw / base == inc @ flow,
                self.pg >= self.pmin, self.pg <= self.pmax,
                cp.SOC(epi + 1, cp.vstack([2 * self.pg, epi - 1])),   # pg^2 <= epi
                self.theta[ref] == 0]
        rate = grid.rate_a_mva / base
        lim = np.flatnonzero((rate > 0) & (rate < 1e10 / base))
        if lim.size:
            cons += [flow[lim] <= rate[lim], flow[lim] >= -rate[lim]]
        self.problem = cp.Problem(cp.Minimize(self.c2 @ epi + self.c1 @ self.pg + cp.sum(self.c0)),
                                  cons)
        self._cost = grid.gen_cost() * np.array([base ** 2, base, 1.0])

    def solve(self, scenario: Scenario) -> DcOpfResult:
        """Solve for `scenario` (loads, outages, cost scales); Q demands are ignored (DC)."""
        g, base = self.grid, self.grid.base_mva
        start = time.perf_counter()
        values = dispatch_values(g, scenario, self._cost)
        set_dispatch_parameters(self, values)
        try:
            self.problem.solve(solver=cp.CLARABEL, warm_start=False)
        except cp.SolverError as exc:
            return DcOpfResult(f"solver_error: {exc}", float("nan"), None, None,
                               time.perf_counter() - start)
        elapsed = time.perf_counter() - start
        if self.problem.status != cp.OPTIMAL:
            return DcOpfResult(self.problem.status, float("nan"), None, None, elapsed)
        return DcOpfResult(self.problem.status, float(self.problem.value), self.pg.value * base,
                           np.rad2deg(self.theta.value), elapsed)
