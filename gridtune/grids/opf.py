"""AC-OPF of one scenario with pandapower's PIPS solver, and an independent re-check of a solution.

`solve_ac_opf` calls pandapower's internal PYPOWER-style OPF (`pandapower.pypower.opf.opf`, the
function `pandapower.runopp` ends in) directly on the `GridModel` arrays with the scenario's loads,
outages and cost scales applied. This skips `runopp`'s DataFrame <-> array conversions but keeps
its formulation and options (PIPS interior point, `OPF_FLOW_LIM = 2`: branch limits on the current
magnitude, as pandapower sets it), so converged / not converged and the optimum match `runopp`.

`recheck` does not trust the solver: it recomputes the nodal power balance from the bus admittance
matrix and checks every limit under stated `Tolerances`.

Branch limits follow the grid's `flow_limit` (`gridtune.grids.model.FLOW_LIMITS`): pandapower's
`OPF_FLOW_LIM = 2` (current magnitude, the default cases and pandapower nets) or MATPOWER's
default `OPF_FLOW_LIM = 0` (apparent power in MVA at both ends, MATPOWER case files). The limit
rows are this module's own callbacks in both cases (pandapower's `OPF_FLOW_LIM = 0` code calls
`csr_matrix.H`, which SciPy 1.14 removed). Branch loading follows the OPF's own limit:
`loading_percent = 100 * |I| * base_mva / rate_a_mva` (current) or `100 * |S| / rate_a_mva`
(apparent power), the larger of the two ends, so 100% is the limit the OPF enforces.

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
    return full_branch_results(grid, branch_kept, s_mva, i_pu)


def full_branch_results(grid: GridModel, branch_kept: np.ndarray, s_mva: np.ndarray,
                        i_pu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(branch_flow_mva, loading_percent) on the full branch list from the kept branches' larger
    end |S| (MVA) and |I| (p.u.); loading is measured as the grid's `flow_limit` says."""
    rate = grid.rate_a_mva[branch_kept]
    limited = rate > 0
    used = s_mva if grid.apparent_power_limits else i_pu * grid.base_mva
    loading = np.where(limited, 100.0 * used / np.where(limited, rate, 1.0), 0.0)
    flow_full, loading_full = np.zeros(grid.n_branch), np.zeros(grid.n_branch)
    flow_full[branch_kept], loading_full[branch_kept] = s_mva, loading
    return flow_full, loading_full


def solve_ac_opf(grid: GridModel, scenario: Scenario, *, init: dict[str, np.ndarray] | None = None,
                 max_iterations: int = PIPS_MAX_IT, feastol: float = PIPS_FEASTOL,
                 fast: bool = True, optimality_tol: float | None = None) -> AcOpfResult:
    """Solve the AC-OPF of `scenario` with PIPS (as `pandapower.runopp` does, without DataFrames).

    Args:
        grid: the grid (not modified).
        scenario: loads, outages and cost scales to apply.
        init: optional warm start `{"vm_pu", "va_degree", "pg_mw", "qg_mvar"}` (grid order); by
            default PIPS starts from the middle of the variable bounds, like `runopp(init="flat")`.
        max_iterations: PIPS iteration limit (default: 150, PYPOWER's).
        feastol: PIPS feasibility tolerance (default: 1e-6).
        optimality_tol: PIPS gradient, complementarity and cost tolerances (default: None, PYPOWER's
            1e-6). A loose value (e.g. 1e-2) stops at a feasible, nearly optimal point in fewer
            iterations: enough where only the feasibility label is needed (it is re-checked).
        fast: evaluate PIPS's callbacks (constraints, Jacobians, Hessian) with the vectorised numpy
            code below instead of pandapower's `opf_consfcn` / `opf_hessfcn` (default: True).
            Same formulas (MATPOWER TN2), same solver and iterates; pandapower's versions build
            hundreds of tiny scipy.sparse matrices per iteration, which dominated the solve time.
            A grid with apparent-power limits always uses them (see the module docstring).

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
    if optimality_tol is not None:
        ppopt.update(PDIPM_GRADTOL=optimality_tol, PDIPM_COMPTOL=optimality_tol,
                     PDIPM_COSTTOL=optimality_tol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIPS warns on singular steps; the flag says it all
        if fast or grid.apparent_power_limits:
            res = _opf_fast(ppc, ppopt, apparent=grid.apparent_power_limits)
        else:
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
    `loading_percent` (beyond 100%), `angle_degree` (beyond a branch's angle-difference limits).
    The returned dict maps each violated check to its size
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
    # angle-difference limits, MATPOWER's rule (a bound of 0 or beyond +-360 is no bound)
    lim = branch_kept[grid.angle_limited[branch_kept]]
    diff = result.va_degree[grid.f_bus[lim]] - result.va_degree[grid.t_bus[lim]]
    lo, hi = grid.min_angle_degree[lim], grid.max_angle_degree[lim]
    below = np.where((lo != 0) & (lo > -360), lo - diff, 0.0)
    above = np.where((hi != 0) & (hi < 360), diff - hi, 0.0)
    checks["angle_degree"] = (float(np.max(np.r_[0.0, below, above])), tolerances.angle_degree)
    bad = {}
    for name, (excess, tol) in checks.items():
        if not np.isfinite(excess) or excess > tol:
            bad[name] = float(excess)
    return bad


# ---- PIPS with vectorised callbacks ---------------------------------------------------------------------
def pad_result_columns(ppc: dict[str, Any]) -> None:
    """Give `ppc`'s bus, gen and branch tables the result columns (up to the multipliers) that
    pandapower's `opf_setup` writes into, replacing the arrays in `ppc` (the caller's arrays are
    not touched)."""
    from numpy import c_, zeros
    from pandapower.pypower.idx_brch import MU_ANGMAX
    from pandapower.pypower.idx_bus import MU_VMIN
    from pandapower.pypower.idx_gen import MU_QMIN

    for table, last in (("bus", MU_VMIN), ("gen", MU_QMIN), ("branch", MU_ANGMAX)):
        rows, cols = ppc[table].shape
        if cols < last + 1:
            ppc[table] = c_[ppc[table], zeros((rows, last + 1 - cols))]


def _opf_fast(ppc: dict[str, Any], ppopt: dict[str, Any], *, apparent: bool = False) -> dict[str, Any]:
    """`pandapower.pypower.opf.opf` for polynomial costs, fast callbacks; branch limits on |I|,
    or on |S| with `apparent`.

    The OPF model (variables, bounds, linear constraints, initial point) is pandapower's own
    `opf_setup`; the options and the initial-point rule are `pipsopf_solver`'s. Returns the
    fields of `opf`'s result that `solve_ac_opf` reads.
    """
    from pandapower.pypower.idx_brch import RATE_A
    from pandapower.pypower.idx_bus import BUS_TYPE
    from pandapower.pypower.idx_gen import GEN_BUS
    from pandapower.pypower.makeYbus import makeYbus
    from pandapower.pypower.opf_setup import opf_setup
    from pandapower.pypower.pips import pips

    nb, ng = ppc["bus"].shape[0], ppc["gen"].shape[0]
    pad_result_columns(ppc)
    om = opf_setup(ppc, ppopt)
    om.build_cost_params()
    vv = om.get_idx()[0]
    if om.getN("var", "y") or om.getN("var") != 2 * nb + 2 * ng:
        raise ValueError("fast AC-OPF supports polynomial costs without extra variables only")
    mppc = om.get_ppc()
    base, bus, gen, branch = mppc["baseMVA"], mppc["bus"], mppc["gen"], mppc["branch"]
    a_lin, l_lin, u_lin = om.linear_constraints()
    x0, xmin, xmax = om.getv()
    if ppopt["INIT"] not in ("pf", "results"):  # pipsopf_solver's interior starting point
        lo, hi = xmin.copy(), xmax.copy()
        lo[xmin == -np.inf], hi[xmax == np.inf] = -1e10, 1e10
        x0 = (lo + hi) / 2
        x0[vv["i1"]["Va"]:vv["iN"]["Va"]] = bus[bus[:, BUS_TYPE] == 3, VA][0] * (np.pi / 180)

    ybus_s, yf_s, yt_s = makeYbus(base, bus, branch)
    il = np.flatnonzero((branch[:, RATE_A] != 0) & (branch[:, RATE_A] < 1e10))
    f_bus, t_bus = branch[il, F_BUS].astype(int), branch[il, T_BUS].astype(int)
    yf_s, yt_s = yf_s.tocsr(), yt_s.tocsr()
    ends = [(f_bus, t_bus, np.asarray(yf_s[il, f_bus]).ravel(), np.asarray(yf_s[il, t_bus]).ravel()),
            (f_bus, t_bus, np.asarray(yt_s[il, f_bus]).ravel(), np.asarray(yt_s[il, t_bus]).ravel())]
    cb = _OpfCallbacks(ybus_s, ends, (branch[il, RATE_A] / base) ** 2,
                            gen[:, GEN_BUS].astype(int),
                            (bus[:, PD] + 1j * bus[:, QD]) / base, _poly_coeffs(mppc["gencost"], ng), base,
                            apparent=apparent)
    opt = {"feastol": ppopt["PDIPM_FEASTOL"] or ppopt["OPF_VIOLATION"],
           "gradtol": ppopt["PDIPM_GRADTOL"], "comptol": ppopt["PDIPM_COMPTOL"],
           "costtol": ppopt["PDIPM_COSTTOL"], "max_it": ppopt["PDIPM_MAX_IT"],
           "max_red": ppopt["SCPDIPM_RED_IT"], "step_control": ppopt["OPF_ALG"] == 565,
           "cost_mult": 1e-4, "verbose": 0}
    sol = pips(cb.f, x0, a_lin, l_lin, u_lin, xmin, xmax, cb.gh, cb.hess, opt)
    x = sol["x"]
    bus = bus.copy()
    gen = gen.copy()
    bus[:, VA] = np.rad2deg(x[:nb])
    bus[:, VM] = x[nb: 2 * nb]
    gen[:, PG] = x[2 * nb: 2 * nb + ng] * base
    gen[:, QG] = x[2 * nb + ng:] * base
    return {"bus": bus, "gen": gen, "f": sol["f"], "success": sol["eflag"] > 0,
            "raw": {"output": sol["output"]}}


def _poly_coeffs(gencost: np.ndarray, ng: int) -> np.ndarray:
    """(ng, 3) polynomial coefficients (c2, c1, c0) of MATPOWER model-2 costs, in MW."""
    out = np.zeros((ng, 3))
    for g in range(ng):
        n = int(gencost[g, NCOST])
        coeffs = gencost[g, COST: COST + n]  # highest order first
        if gencost[g, 0] != 2 or np.any(coeffs[: max(0, n - 3)] != 0):
            raise ValueError("fast AC-OPF supports polynomial costs of degree <= 2 only")
        coeffs = coeffs[max(0, n - 3):]
        out[g, 3 - len(coeffs):] = coeffs
    return out


def flow_terms(v: np.ndarray, vn: np.ndarray, p1: np.ndarray, p2: np.ndarray, c1: np.ndarray,
               c2: np.ndarray, own: np.ndarray | None, mult: np.ndarray | None = None,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Value, gradient and Hessian block of branch-end flow rows, one row per entry of p1.

    A row's current is `I = c1 V[p1] + c2 V[p2]`. With `own` None the row is `|I|^2`; with
    `own` (2 where the row's end is bus p1, 3 where it is p2) it is `|S|^2 = |V_own|^2 |I|^2`.
    Derivatives are taken in the row's four variables (Va_p1, Va_p2, Vm_p1, Vm_p2).

    Returns `(value (n,), gradient (4, n), Hessian of mult * value (4, 4, n) or None)`.
    """
    v1, v2 = v[p1], v[p2]
    i_br = c1 * v1 + c2 * v2
    dd = np.stack([1j * c1 * v1, 1j * c2 * v2, c1 * vn[p1], c2 * vn[p2]])  # dI / d(var)
    g = np.abs(i_br) ** 2
    dg = 2 * (np.conj(i_br) * dd).real
    hg = None
    if mult is not None:
        hg = 2 * (np.conj(dd)[:, None, :] * dd[None, :, :]).real
        ci = 2 * np.conj(i_br)
        hg[0, 0] += (ci * (-c1 * v1)).real
        hg[1, 1] += (ci * (-c2 * v2)).real
        t1, t2 = (ci * 1j * c1 * vn[p1]).real, (ci * 1j * c2 * vn[p2]).real
        hg[0, 2] += t1
        hg[2, 0] += t1
        hg[1, 3] += t2
        hg[3, 1] += t2
    if own is None:
        return g, dg, None if hg is None else mult * hg
    # |S|^2 = w g with w = Vm_own^2: product rule in the own bus's Vm
    rows = np.arange(len(p1))
    vm_own = np.abs(np.where(own == 2, v1, v2))
    w = vm_own ** 2
    e = np.zeros((4, len(p1)))
    e[own, rows] = 1.0
    h = w * g
    dh = w * dg + e * (2 * vm_own * g)
    if hg is None:
        return h, dh, None
    hh = w * hg + 2 * vm_own * (e[:, None, :] * dg[None, :, :] + dg[:, None, :] * e[None, :, :]) \
        + 2 * g * e[:, None, :] * e[None, :, :]
    return h, dh, mult * hh


class _OpfCallbacks:
    """Objective, constraints and Lagrangian Hessian of PYPOWER's AC-OPF for `pips`.

    Variables x = (Va, Vm, Pg, Qg) in rad / p.u. Equalities: complex nodal balance
    `V conj(Y V) - (C_g S_g - S_d) = 0`; inequalities: `|I_f|^2, |I_t|^2 <= rate^2` on limited
    branches. Derivatives follow Zimmerman, "AC Power Flows, Generalized OPF Costs and their
    Derivatives using Complex Matrix Notation", MATPOWER TN2, written entry by entry on the
    sparsity pattern of Y_bus (and per branch end) so each call is O(nnz) numpy work and one
    sparse-matrix construction.
    """

    def __init__(self, ybus: Any, ends: list[tuple[np.ndarray, ...]], flow_max: np.ndarray,
                 gen_bus: np.ndarray, sd_pu: np.ndarray, cost: np.ndarray, base: float, *,
                 apparent: bool = False):
        import scipy.sparse as sp

        # apparent: the flow rows are |S_f|^2, |S_t|^2 (MATPOWER) instead of |I_f|^2, |I_t|^2
        self.apparent = apparent

        self.sp = sp
        nb = ybus.shape[0]
        # Y_bus pattern is structurally symmetric: entries (r, c) with Y[r, c] and Y[c, r], in
        # row-major order. Sparse throughout: a dense Y_bus of a 10,000-bus grid takes 1.6 GB.
        ysp = sp.csr_matrix(ybus)
        ysp.eliminate_zeros()
        pattern = (abs(ysp) + abs(ysp.T) + sp.eye(nb, format="csr")).tocsr()
        pattern.sort_indices()
        coo = pattern.tocoo()
        self.r, self.c = coo.row.astype(np.int64), coo.col.astype(np.int64)
        self.y_rc = np.asarray(ysp[self.r, self.c], dtype=complex).ravel()
        self.y_cr = np.asarray(ysp[self.c, self.r], dtype=complex).ravel()
        self.diag = self.r == self.c
        self.ysp = ysp
        # each branch end's current is c1 V[p1] + c2 V[p2] (two nonzeros per row of Yf / Yt)
        self.ends, self.flow_max = ends, flow_max
        self.nb, self.ng = nb, len(gen_bus)
        self.gen_bus = gen_bus
        self.sd, self.cost, self.base = sd_pu, cost, base
        self.nx = 2 * nb + 2 * self.ng
        nl = len(ends[0][0]) if ends else 0
        if nl:
            self.flow_p1 = np.concatenate([e[0] for e in ends])
            self.flow_p2 = np.concatenate([e[1] for e in ends])
            self.flow_c1 = np.concatenate([e[2] for e in ends])
            self.flow_c2 = np.concatenate([e[3] for e in ends])
            self.flow_vars = np.stack([self.flow_p1, self.flow_p2, nb + self.flow_p1,
                                       nb + self.flow_p2])
            # from-end rows measure |S| at bus p1, to-end rows at bus p2
            self.flow_own = np.r_[np.full(nl, 2), np.full(nl, 3)] if apparent else None

    def _flow(self, v: np.ndarray, mult: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """`flow_terms` of all limited branch ends (from ends, then to ends)."""
        return flow_terms(v, v / np.abs(v), self.flow_p1, self.flow_p2, self.flow_c1, self.flow_c2,
                          self.flow_own, mult)

    def _split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nb, ng = self.nb, self.ng
        v = x[nb: 2 * nb] * np.exp(1j * x[:nb])
        return v, x[2 * nb: 2 * nb + ng], x[2 * nb + ng:]

    def f(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        _, pg, _ = self._split(x)
        p_mw = pg * self.base
        c2, c1, c0 = self.cost.T
        df = np.zeros(self.nx)
        df[2 * self.nb: 2 * self.nb + self.ng] = self.base * (2 * c2 * p_mw + c1)
        return float(np.sum(c2 * p_mw ** 2 + c1 * p_mw + c0)), df

    def gh(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any, Any]:
        v, pg, qg = self._split(x)
        nb, ng, r, c = self.nb, self.ng, self.r, self.c
        i_bus = self.ysp @ v
        s_gen = np.zeros(nb, dtype=complex)
        np.add.at(s_gen, self.gen_bus, pg + 1j * qg)
        mis = v * np.conj(i_bus) - (s_gen - self.sd)
        g = np.r_[mis.real, mis.imag]
        vn = v / np.abs(v)
        # dS/dVa = j diag(V) conj(diag(I) - Y diag(V)); dS/dVm = diag(V) conj(Y diag(Vn)) + diag(conj(I) Vn)
        ds_dva = -1j * v[r] * np.conj(self.y_rc * v[c])
        ds_dva[self.diag] += 1j * v[r[self.diag]] * np.conj(i_bus[r[self.diag]])
        ds_dvm = v[r] * np.conj(self.y_rc * vn[c])
        ds_dvm[self.diag] += np.conj(i_bus[r[self.diag]]) * vn[r[self.diag]]
        gi = np.arange(ng)
        rows = np.concatenate([r, r, nb + r, nb + r, self.gen_bus, nb + self.gen_bus])
        cols = np.concatenate([c, nb + c, c, nb + c, 2 * nb + gi, 2 * nb + ng + gi])
        vals = np.concatenate([ds_dva.real, ds_dvm.real, ds_dva.imag, ds_dvm.imag,
                               -np.ones(ng), -np.ones(ng)])
        dg = self.sp.csr_matrix((vals, (cols, rows)), shape=(self.nx, 2 * nb))  # transposed
        nl2 = len(self.flow_max)
        if nl2 == 0:
            return np.zeros(0), g, None, dg
        if self.apparent:
            h_val, h_grad, _ = self._flow(v)
            rr = np.broadcast_to(np.arange(2 * nl2), (4, 2 * nl2))
            dh = self.sp.csr_matrix((h_grad.ravel(), (self.flow_vars.ravel(), rr.ravel())),
                                    shape=(self.nx, 2 * nl2))
            return h_val - np.r_[self.flow_max, self.flow_max], g, dh, dg
        h_parts, rows_l, cols_l, vals_l = [], [], [], []
        for e, (p1, p2, c1, c2) in enumerate(self.ends):
            i_br = c1 * v[p1] + c2 * v[p2]
            h_parts.append(np.abs(i_br) ** 2 - self.flow_max)
            rr = np.arange(nl2) + e * nl2
            for p, cc in ((p1, c1), (p2, c2)):
                # d|I|^2 = 2 Re(conj(I) dI), dI/dVa_p = c j V_p, dI/dVm_p = c V_p / |V_p|
                rows_l += [rr, rr]
                cols_l += [p, nb + p]
                vals_l += [2 * (np.conj(i_br) * cc * 1j * v[p]).real,
                           2 * (np.conj(i_br) * cc * vn[p]).real]
        dh = self.sp.csr_matrix((np.concatenate(vals_l), (np.concatenate(cols_l), np.concatenate(rows_l))),
                                shape=(self.nx, 2 * nl2))
        return np.concatenate(h_parts), g, dh, dg

    def hess(self, x: np.ndarray, lmbda: dict[str, np.ndarray], cost_mult: float) -> Any:
        v, _, _ = self._split(x)
        nb, ng = self.nb, self.ng
        ip = np.arange(2 * nb, 2 * nb + ng)
        parts = [(ip, ip, cost_mult * self.base ** 2 * 2 * self.cost[:, 0])]
        lam = lmbda["eqnonlin"]
        parts += self._d2sbus(v, lam[:nb], lam[nb: 2 * nb])
        nl2 = len(self.flow_max)
        if nl2:
            mu = lmbda["ineqnonlin"]
            if self.apparent:
                _, _, block = self._flow(v, mu)
                var = self.flow_vars
                parts.append((np.broadcast_to(var[:, None, :], block.shape).ravel(),
                              np.broadcast_to(var[None, :, :], block.shape).ravel(), block.ravel()))
            else:
                for e, end in enumerate(self.ends):
                    parts += self._d2abr(end, v, mu[e * nl2: (e + 1) * nl2])
        rows = np.concatenate([p[0] for p in parts])
        cols = np.concatenate([p[1] for p in parts])
        vals = np.concatenate([p[2] for p in parts])
        return self.sp.csr_matrix((vals, (rows, cols)), shape=(self.nx, self.nx))

    def _d2sbus(self, v: np.ndarray, lam_p: np.ndarray, lam_q: np.ndarray) -> list[tuple]:
        """Re(H(lam_p' S_bus)) + Im(H(lam_q' S_bus)) w.r.t. (Va, Vm) (TN2, d2Sbus_dV2)."""
        nb, r, c, dg = self.nb, self.r, self.c, self.diag
        i_bus = self.ysp @ v
        ginv = 1.0 / np.abs(v)
        out = []
        total = None
        for lam, part in ((lam_p, "real"), (lam_q, "imag")):
            # entries on the pattern: C = diag(lam V) conj(Y diag V), D = Y^H diag V,
            # E = diag(conj V) (D diag(lam) - diag(D lam)), F = C - diag(lam V conj(I))
            c_rc = lam[r] * v[r] * np.conj(self.y_rc * v[c])
            c_cr = lam[c] * v[c] * np.conj(self.y_cr * v[r])
            d_rc = np.conj(self.y_cr) * v[c]
            d_lam = np.zeros(nb, dtype=complex)
            np.add.at(d_lam, r, d_rc * lam[c])
            e_rc = np.conj(v[r]) * d_rc * lam[c]
            e_rc[dg] -= np.conj(v[r[dg]]) * d_lam[r[dg]]
            f_rc = c_rc.copy()
            f_rc[dg] -= lam[r[dg]] * v[r[dg]] * np.conj(i_bus[r[dg]])
            gaa = e_rc + f_rc
            gva = 1j * ginv[r] * (e_rc - f_rc)
            gvv = ginv[r] * (c_rc + c_cr) * ginv[c]
            blocks = np.concatenate([gaa, gva, gvv])
            blocks = blocks.real if part == "real" else blocks.imag
            total = blocks if total is None else total + blocks
        n = len(r)
        gaa, gva, gvv = total[:n], total[n: 2 * n], total[2 * n:]
        out.append((r, c, gaa))
        out.append((nb + r, c, gva))      # Gva
        out.append((c, nb + r, gva))      # Gav = Gva^T
        out.append((nb + r, nb + c, gvv))
        return out

    def _d2abr(self, end: tuple[np.ndarray, ...], v: np.ndarray, mu: np.ndarray) -> list[tuple]:
        """Hessian of mu' |I_br|^2 w.r.t. (Va, Vm) (TN2, d2AIbr_dV2), per branch end."""
        nb = self.nb
        p1, p2, c1, c2 = end
        i_br = c1 * v[p1] + c2 * v[p2]
        vn = v / np.abs(v)
        # diagonal term: -(Ybr^T (conj(I) mu)) V on Va-Va, -j (.)/|V| on Va-Vm and Vm-Va
        lam2 = np.conj(i_br) * mu
        ylam = np.zeros(nb, dtype=complex)
        np.add.at(ylam, p1, c1 * lam2)
        np.add.at(ylam, p2, c2 * lam2)
        iaa = -ylam * v
        iva = -1j * iaa / np.abs(v)
        idx = np.arange(nb)
        out = [(idx, idx, 2 * iaa.real), (nb + idx, idx, 2 * iva.real), (idx, nb + idx, 2 * iva.real)]
        # outer-product term: sum_k mu_k dI_k^T conj(dI_k) over the two buses of each branch
        d_a = [(p1, c1 * 1j * v[p1]), (p2, c2 * 1j * v[p2])]
        d_m = [(p1, c1 * vn[p1]), (p2, c2 * vn[p2])]
        for off_r, dr in ((0, d_a), (nb, d_m)):
            for off_c, dc in ((0, d_a), (nb, d_m)):
                for pr, vr in dr:
                    for pc, vc in dc:
                        out.append((off_r + pr, off_c + pc, 2 * (vr * mu * np.conj(vc)).real))
        return out
