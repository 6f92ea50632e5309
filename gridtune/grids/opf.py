"""AC-OPF of one scenario with pandapower's PIPS solver, and an independent re-check of a solution.

`solve_ac_opf` calls pandapower's internal PYPOWER-style OPF (`pandapower.pypower.opf.opf`, the
function `pandapower.runopp` ends in) directly on the `GridModel` arrays with the scenario's loads,
outages and cost scales applied. This skips `runopp`'s DataFrame <-> array conversions but keeps
its formulation and options (PIPS interior point, `OPF_FLOW_LIM = 2`: branch limits on the current
magnitude, as pandapower sets it), so converged / not converged and the optimum match `runopp`.

`recheck` does not trust the solver: it recomputes the nodal power balance from the bus admittance
matrix and checks every limit under stated `Tolerances`.

Branch loading follows pandapower's OPF limit: `loading_percent = 100 * |I| * base_mva / rate_a_mva`
with `|I|` the larger of the from- and to-end currents in p.u. (so 100% is the OPF's own limit).

Source: R. D. Zimmerman, C. E. Murillo-Sanchez, R. J. Thomas, "MATPOWER: Steady-State
Operations, Planning and Analysis Tools for Power Systems Research and Education", IEEE Trans.
Power Systems 26(1), 2011 (formulation and PIPS); pandapower's port of it (L. Thurner et al., 2018).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any

import numpy as np
from pandapower.pypower.idx_brch import BR_STATUS, F_BUS, T_BUS, branch_cols
from pandapower.pypower.idx_bus import PD, QD, VA, VM
from pandapower.pypower.idx_cost import COST, NCOST
from pandapower.pypower.idx_gen import GEN_STATUS, PG, QG

from gridtune.grids.labels import Tolerances
from gridtune.grids.model import GridModel
from gridtune.grids.scenarios import Scenario

DEFAULT_TOLERANCES = Tolerances()
PIPS_MAX_IT = 150  # PYPOWER's default (PDIPM_MAX_IT)
# PIPS's default feasibility tolerance (5e-6, scaled) leaves ~1 kW nodal mismatch on case30, just
# above `Tolerances.mismatch_mva`; 1e-6 re-checks cleanly and converges in the same iterations.
PIPS_FEASTOL = 1e-6


@dataclasses.dataclass
class AcOpfResult:
    """One AC-OPF solve, arrays in the grid's internal order (outaged elements hold zeros).

    Attributes:
        converged: PIPS reported success.
        objective: cost in $/h (NaN if not converged).
        pg_mw, qg_mvar: (n_gen,) dispatch.
        vm_pu, va_degree: (n_bus,) voltages.
        branch_flow_mva: (n_branch,) max(|S_from|, |S_to|).
        loading_percent: (n_branch,) current-based loading (module docstring).
        iterations: PIPS iterations.
        solve_time_s: wall time of the solve.
        message: solver message when not converged.
    """

    converged: bool
    objective: float
    pg_mw: np.ndarray
    qg_mvar: np.ndarray
    vm_pu: np.ndarray
    va_degree: np.ndarray
    branch_flow_mva: np.ndarray
    loading_percent: np.ndarray
    iterations: int
    solve_time_s: float
    message: str = ""


def scenario_ppc(grid: GridModel, scenario: Scenario) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The scenario's case arrays for PYPOWER with outaged branches and generators removed.

    PYPOWER's `ext2int` (which would drop out-of-service elements) is disabled in pandapower's
    `opf`, so removal happens here. Returns `(ppc, branch_kept, gen_kept)`, the index arrays of
    the kept rows in the grid's order.
    """
    br_on = grid.branch_in_service.copy()
    br_on[list(scenario.branch_out)] = False
    gen_on = grid.gen_in_service.copy()
    gen_on[list(scenario.gen_out)] = False
    branch_kept, gen_kept = np.flatnonzero(br_on), np.flatnonzero(gen_on)

    bus = grid.ppc["bus"].copy()
    bus[:, PD] = scenario.pd_mw
    bus[:, QD] = scenario.qd_mvar
    branch = grid.ppc["branch"][branch_kept].copy()
    if branch.shape[1] < branch_cols:  # pandapower's makeYbus reads its asymmetric-impedance columns
        branch = np.c_[branch, np.zeros((branch.shape[0], branch_cols - branch.shape[1]))]
    branch[:, BR_STATUS] = 1
    gen = grid.ppc["gen"][gen_kept].copy()
    gen[:, GEN_STATUS] = 1
    gencost = grid.ppc["gencost"][: grid.n_gen][gen_kept].copy()
    if scenario.cost_scale is not None:
        n = gencost[:, NCOST].astype(int)
        for row, g in enumerate(gen_kept):
            gencost[row, COST: COST + n[row]] *= scenario.cost_scale[g]
    ppc = {"baseMVA": grid.base_mva, "bus": bus, "branch": branch, "gen": gen, "gencost": gencost}
    return ppc, branch_kept, gen_kept


def branch_results(grid: GridModel, ppc: dict[str, Any], branch_kept: np.ndarray, vm_pu: np.ndarray,
                   va_degree: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(branch_flow_mva, loading_percent) on the full branch list for given bus voltages."""
    from pandapower.pypower.makeYbus import makeYbus

    _, yf, yt = makeYbus(ppc["baseMVA"], ppc["bus"], ppc["branch"])
    v = vm_pu * np.exp(1j * np.deg2rad(va_degree))
    i_f, i_t = yf @ v, yt @ v
    f, t = ppc["branch"][:, F_BUS].astype(int), ppc["branch"][:, T_BUS].astype(int)
    s_mva = np.maximum(np.abs(v[f] * np.conj(i_f)), np.abs(v[t] * np.conj(i_t))) * grid.base_mva
    i_pu = np.maximum(np.abs(i_f), np.abs(i_t))
    rate = grid.rate_a_mva[branch_kept]
    loading = np.where(rate > 0, 100.0 * i_pu * grid.base_mva / np.where(rate > 0, rate, 1.0), 0.0)
    flow_full, loading_full = np.zeros(grid.n_branch), np.zeros(grid.n_branch)
    flow_full[branch_kept], loading_full[branch_kept] = s_mva, loading
    return flow_full, loading_full


def solve_ac_opf(grid: GridModel, scenario: Scenario, *, init: dict[str, np.ndarray] | None = None,
                 max_iterations: int = PIPS_MAX_IT, feastol: float = PIPS_FEASTOL) -> AcOpfResult:
    """Solve the AC-OPF of `scenario` with PIPS (as `pandapower.runopp` does, without DataFrames).

    Args:
        grid: the grid (not modified).
        scenario: loads, outages and cost scales to apply.
        init: optional warm start `{"vm_pu", "va_degree", "pg_mw", "qg_mvar"}` (grid order); by
            default PIPS starts from the middle of the variable bounds, like `runopp(init="flat")`.
        max_iterations: PIPS iteration limit (default: 150, PYPOWER's).
        feastol: PIPS feasibility tolerance (default: 1e-6).

    Raises whatever the solver raises (e.g. on NaN data); `Labeller.label` turns that into status
    `error`.
    """
    from pandapower.pypower.opf import opf
    from pandapower.pypower.ppoption import ppoption

    start = time.perf_counter()
    ppc, branch_kept, gen_kept = scenario_ppc(grid, scenario)
    opt_init = "flat"
    if init is not None:
        ppc["bus"][:, VM] = init["vm_pu"]
        ppc["bus"][:, VA] = init["va_degree"]
        ppc["gen"][:, PG] = init["pg_mw"][gen_kept]
        ppc["gen"][:, QG] = init["qg_mvar"][gen_kept]
        opt_init = "results"
    ppopt = ppoption(VERBOSE=0, OPF_FLOW_LIM=2, INIT=opt_init, PDIPM_MAX_IT=max_iterations,
                      PDIPM_FEASTOL=feastol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIPS warns on singular steps; the flag says it all
        res = opf(ppc, ppopt)
    out = res["raw"]["output"]
    vm, va = res["bus"][:, VM].copy(), res["bus"][:, VA].copy()
    pg, qg = np.zeros(grid.n_gen), np.zeros(grid.n_gen)
    pg[gen_kept], qg[gen_kept] = res["gen"][:, PG], res["gen"][:, QG]
    flow, loading = branch_results(grid, ppc, branch_kept, vm, va)
    converged = bool(res["success"])
    return AcOpfResult(
        converged=converged, objective=float(res["f"]) if converged else float("nan"),
        pg_mw=pg, qg_mvar=qg, vm_pu=vm, va_degree=va, branch_flow_mva=flow,
        loading_percent=loading, iterations=int(out.get("iterations", -1)),
        solve_time_s=time.perf_counter() - start,
        message="" if converged else str(out.get("message", "PIPS did not converge")))


def recheck(grid: GridModel, scenario: Scenario, result: AcOpfResult,
            tolerances: Tolerances = DEFAULT_TOLERANCES) -> dict[str, float]:
    """Independent feasibility check of an AC operating point; returns the violations found.

    Checks, each in physical units and against `tolerances`:
    `mismatch_mva` (largest nodal P or Q imbalance, MW / Mvar), `vm_pu` (beyond voltage limits),
    `pg_mw` / `qg_mvar` (beyond generator limits, outaged generators must be at zero),
    `loading_percent` (beyond 100%). The returned dict maps each violated check to its size
    (the excess beyond the limit); an empty dict means the point is feasible.
    """
    from pandapower.pypower.makeYbus import makeYbus

    ppc, branch_kept, gen_kept = scenario_ppc(grid, scenario)
    ybus, _, _ = makeYbus(ppc["baseMVA"], ppc["bus"], ppc["branch"])
    v = result.vm_pu * np.exp(1j * np.deg2rad(result.va_degree))
    s_inj_mva = v * np.conj(ybus @ v) * grid.base_mva
    s_gen = np.zeros(grid.n_bus, dtype=complex)
    np.add.at(s_gen, grid.gen_bus[gen_kept], result.pg_mw[gen_kept] + 1j * result.qg_mvar[gen_kept])
    mis = s_gen - (scenario.pd_mw + 1j * scenario.qd_mvar) - s_inj_mva
    checks = {"mismatch_mva": (max(np.abs(mis.real).max(), np.abs(mis.imag).max()), tolerances.mismatch_mva)}

    vmin, vmax = grid.min_vm_pu, grid.max_vm_pu
    checks["vm_pu"] = (max(0.0, (vmin - result.vm_pu).max(), (result.vm_pu - vmax).max()),
                       tolerances.voltage_pu)
    off = np.setdiff1d(np.arange(grid.n_gen), gen_kept)
    pg_ex = np.r_[grid.min_p_mw[gen_kept] - result.pg_mw[gen_kept],
                  result.pg_mw[gen_kept] - grid.max_p_mw[gen_kept], np.abs(result.pg_mw[off]), 0.0]
    qg_ex = np.r_[grid.min_q_mvar[gen_kept] - result.qg_mvar[gen_kept],
                  result.qg_mvar[gen_kept] - grid.max_q_mvar[gen_kept], np.abs(result.qg_mvar[off]), 0.0]
    checks["pg_mw"] = (max(0.0, pg_ex.max()), tolerances.gen_mw)
    checks["qg_mvar"] = (max(0.0, qg_ex.max()), tolerances.gen_mw)
    _, loading = branch_results(grid, ppc, branch_kept, result.vm_pu, result.va_degree)
    checks["loading_percent"] = (max(0.0, loading.max() - 100.0), tolerances.loading_percent)
    bad = {}
    for name, (excess, tol) in checks.items():
        if not np.isfinite(excess) or excess > tol:
            bad[name] = float(excess)
    return bad
