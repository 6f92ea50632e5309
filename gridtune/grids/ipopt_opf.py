"""AC-OPF with Ipopt (through `cyipopt`): the problem PIPS solves in `opf.py`, several times faster.

Formulation: MATPOWER's polar AC-OPF exactly as pandapower's `opf_setup` builds it for PIPS
(`OPF_FLOW_LIM = 2`), so both solvers answer the same question:

    variables   x = (Va, Vm, Pg, Qg)   rad, p.u.
    minimise    sum_g c2 Pg^2 + c1 Pg + c0            (Pg in MW, polynomial costs)
    subject to  V conj(Y_bus V) - C_g S_g + S_d = 0   (P and Q balance, 2 n_bus rows)
                |I_f|^2 <= rate^2, |I_t|^2 <= rate^2   (limited branches, current in p.u.;
                                                        |S_f|^2, |S_t|^2 for a grid with
                                                        MATPOWER's apparent-power limits)
                l <= A x <= u                          (opf_setup's linear rows: angle
                                                        differences, PQ capability, if any)
                variable bounds from opf_setup         (reference angle fixed, Vm, Pg, Qg)

Derivatives are analytic and vectorised (MATPOWER TN2 formulas, the same expressions as the PIPS
callbacks in `opf.py`): the constraint Jacobian and the exact Hessian of the Lagrangian are
computed as value arrays on sparsity structures that are fixed per topology.

Reuse: per topology (branch and generator outages) everything that does not depend on loads or
costs is built once and kept: `opf_setup`'s bounds and linear rows, Y_bus and the branch-end
admittances, the sparsity structures, the index maps that sum Hessian contributions into the
lower triangle (`np.bincount` on a precomputed inverse index), and one `cyipopt.Problem`.
A scenario then only sets the loads (and cost scales) and calls `solve`.

Warm starts: "anchors" are AC-OPFs of the intact grid at uniform load scales on a grid of step
`ANCHOR_STEP` (nominal loads times 1.85, 1.90, ...), each solved once from a cold start when first
needed. A scenario starts from the primal point and multipliers of the anchor at or just below
its load scale, mapped onto its topology (an outaged generator's variables and an outaged
branch's flow rows dropped). Measured on case118 near the boundary: about half the iterations of
a cold start; the nominal point at scale 1 was worse than cold there, and anchors per topology
cost more cold solves than they saved (most outages carry few scenarios). The start depends
only on the scenario's topology and scale, never on the order scenarios are solved in, so labels
do not depend on chunking or worker count.

Infeasible scenarios do not run to the iteration limit: a run whose primal infeasibility stalls
is stopped (`STALL_ITERATIONS`), as not converged.

Options were chosen by measurement on case14/case30/case118/case300 scenarios across the
feasibility boundary (docs/data.md, "AC-OPF solvers"); see `IPOPT_OPTIONS`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from gridtune.grids.model import GridModel
from gridtune.grids.opf import (
    AcOpfResult,
    _OpfCallbacks,
    _poly_coeffs,
    full_branch_results,
    pad_result_columns,
    scenario_ppc,
)
from gridtune.grids.scenarios import Scenario
from gridtune.parallel import deferred_interrupts

INF = 1e20  # Ipopt reads |bounds| >= 1e19 as infinite

# Options (measured on case118 recipe scenarios, one core; docs/data.md). `tol` and
# `constr_viol_tol` keep the nodal mismatch of a solution far below the re-check's 1 kW;
# `mumps_pivot_order = 0` (AMD) factorises these KKT systems in 20% less time than MUMPS's
# automatic choice; the adaptive barrier update needs ~25% fewer iterations than the monotone
# one from warm starts (14 against 19 on solved scenarios) and solves more cold starts.
IPOPT_OPTIONS: dict[str, Any] = {
    "tol": 1e-6,
    "mu_strategy": "adaptive",
    "constr_viol_tol": 1e-7,
    "acceptable_iter": 0,           # no "solved to acceptable level": converged means tol
    "linear_solver": "mumps",
    "mumps_pivot_order": 0,
    "print_level": 0,
    "sb": "yes",
    "hessian_approximation": "exact",
}
# Warm starts: start close to the anchor's point and active set (1e-3: 8% fewer iterations
# than 1e-6 on case118; mu_init only matters to the monotone strategy).
WARM_OPTIONS: dict[str, Any] = {
    "warm_start_init_point": "yes",
    "warm_start_bound_push": 1e-3,
    "warm_start_bound_frac": 1e-3,
    "warm_start_slack_bound_push": 1e-3,
    "warm_start_slack_bound_frac": 1e-3,
    "warm_start_mult_bound_push": 1e-3,
    "mu_init": 1e-4,
}
COLD_OPTIONS: dict[str, Any] = {"warm_start_init_point": "no", "mu_init": 0.1}
# A warm-started feasible scenario converges in 5-20 iterations; one that needs many more is
# almost always beyond the boundary, and is settled by a relaxation or the second solver.
MAX_ITERATIONS_WARM = 100
MAX_ITERATIONS_COLD = 150  # PIPS's limit, for cold starts (nominal points, second attempts)

# Early infeasibility test: beyond the boundary Ipopt's primal infeasibility falls for a few
# iterations and then stalls near 1 p.u. until the iteration limit (case118: 60 iterations,
# ~1 s). A run whose infeasibility (above `STALL_MIN_INF_PR`) has not halved in
# `STALL_ITERATIONS` iterations is stopped as not converged; the labeller then asks the
# relaxations and the second solver. Measured on 60 case118 recipe scenarios: failing runs stop
# after 22 iterations instead of 58; 15 lost no solvable scenario (10 lost 1 of 21).
STALL_ITERATIONS = 15
STALL_FACTOR = 0.5
STALL_MIN_INF_PR = 1e-4
# Warm-start anchors: the intact grid's AC-OPF at uniform load scales on a grid of this step
# (the scale just below each scenario's). Measured on case118 near its boundary: 7-12 iterations
# from an anchor, 17-19 cold, 17-28 from the nominal point (scale 1).
ANCHOR_STEP = 0.05
ANCHOR_TRIES = 3           # anchors tried downwards before starting cold

SUCCESS = {0, 1}  # Solve_Succeeded, Solved_To_Acceptable_Level


@dataclasses.dataclass
class _Start:
    x: np.ndarray
    lagrange: np.ndarray
    zl: np.ndarray
    zu: np.ndarray


class _Callbacks(_OpfCallbacks):
    """cyipopt's problem interface on the structures of `_OpfCallbacks`, built once per topology.

    Constraint order: P balance (n_bus), Q balance (n_bus), |I_f|^2 and |I_t|^2 of limited
    branches (2 n_lim), linear rows of `opf_setup` (n_lin).
    """

    def __init__(self, ybus: Any, ends: list[tuple[np.ndarray, ...]], flow_max: np.ndarray,
                 gen_bus: np.ndarray, cost: np.ndarray, base: float, a_lin: Any, *,
                 apparent: bool = False):
        super().__init__(ybus, ends, flow_max, gen_bus, np.zeros(ybus.shape[0], dtype=complex),
                         cost, base, apparent=apparent)
        nb, ng, nl2 = self.nb, self.ng, len(flow_max)
        r, c = self.r, self.c
        self.nl2 = nl2
        self.reset_progress()
        self.dg_r = np.flatnonzero(self.diag)
        self.dg_bus = r[self.dg_r]
        # ---- Jacobian structure (no duplicates) -------------------------------------------------
        gi = np.arange(ng)
        rows = [r, r, nb + r, nb + r, gen_bus, nb + gen_bus]
        cols = [c, nb + c, c, nb + c, 2 * nb + gi, 2 * nb + ng + gi]
        for e, (p1, p2, _, _) in enumerate(ends):
            rr = 2 * nb + e * nl2 + np.arange(nl2)
            rows += [rr, rr, rr, rr]
            cols += [p1, p2, nb + p1, nb + p2]
        a = a_lin.tocoo() if a_lin is not None and a_lin.shape[0] else None
        self.n_lin = 0 if a is None else a.shape[0]
        if a is not None:
            a.sum_duplicates()
            rows.append(2 * nb + 2 * nl2 + a.row)
            cols.append(a.col)
            self.a_vals, self.a_csr = a.data.astype(float), a.tocsr()
        else:
            self.a_vals, self.a_csr = np.zeros(0), None
        self.jac_rows = np.concatenate(rows).astype(np.int32)
        self.jac_cols = np.concatenate(cols).astype(np.int32)
        self.m = 2 * nb + 2 * nl2 + self.n_lin
        self.minus_ones = -np.ones(2 * ng)
        # ---- Hessian structure: every contribution, folded into the lower triangle ---------------
        self.yh = self.ysp.conj().T.tocsr()  # the flow rows' index arrays: set by _OpfCallbacks
        h_rows, h_cols = self._hess_coords()
        keep = h_rows >= h_cols
        key = h_rows[keep].astype(np.int64) * self.nx + h_cols[keep]
        uniq, self.h_inv = np.unique(key, return_inverse=True)
        self.h_keep = np.flatnonzero(keep)
        self.h_rows = (uniq // self.nx).astype(np.int32)
        self.h_cols = (uniq % self.nx).astype(np.int32)
        self.h_n = len(uniq)
        self._x_last: np.ndarray | None = None

    # ---- structures ---------------------------------------------------------------------------
    def _hess_coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of every Hessian value `_hess_values` returns, in its order."""
        nb, ng, r, c = self.nb, self.ng, self.r, self.c
        ip = np.arange(2 * nb, 2 * nb + ng)
        rows, cols = [ip, r, nb + r, nb + r], [ip, c, c, nb + c]
        if self.nl2:
            var = self.flow_vars  # (4, 2 n_lim): Va_f, Va_t, Vm_f, Vm_t of each branch end row
            rows.append(np.broadcast_to(var[:, None, :], (4, 4, var.shape[1])).ravel())
            cols.append(np.broadcast_to(var[None, :, :], (4, 4, var.shape[1])).ravel())
        return np.concatenate(rows), np.concatenate(cols)

    def jacobianstructure(self) -> tuple[np.ndarray, np.ndarray]:
        return self.jac_rows, self.jac_cols

    def hessianstructure(self) -> tuple[np.ndarray, np.ndarray]:
        return self.h_rows, self.h_cols

    # ---- scenario data ------------------------------------------------------------------------
    def set_scenario(self, sd_pu: np.ndarray, cost: np.ndarray) -> None:
        self.sd, self.cost = sd_pu, cost
        self._x_last = None

    def _state(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(V, Vn = V/|V|, I_bus) at x, cached for the last x (Ipopt evaluates g and J at one x)."""
        if self._x_last is None or not np.array_equal(x, self._x_last):
            nb = self.nb
            vm = x[nb: 2 * nb]
            vn = np.exp(1j * x[:nb])
            v = vm * vn
            self._cache = (v, vn, self.ysp @ v)
            self._x_last = x.copy()
        return self._cache

    # ---- callbacks ----------------------------------------------------------------------------
    def objective(self, x: np.ndarray) -> float:
        nb, ng = self.nb, self.ng
        p = x[2 * nb: 2 * nb + ng] * self.base
        c2, c1, c0 = self.cost.T
        return float(np.sum((c2 * p + c1) * p + c0))

    def gradient(self, x: np.ndarray) -> np.ndarray:
        nb, ng = self.nb, self.ng
        p = x[2 * nb: 2 * nb + ng] * self.base
        df = np.zeros(self.nx)
        df[2 * nb: 2 * nb + ng] = self.base * (2 * self.cost[:, 0] * p + self.cost[:, 1])
        return df

    def constraints(self, x: np.ndarray) -> np.ndarray:
        nb, ng = self.nb, self.ng
        v, _, i_bus = self._state(x)
        s_gen = np.zeros(nb, dtype=complex)
        np.add.at(s_gen, self.gen_bus, x[2 * nb: 2 * nb + ng] + 1j * x[2 * nb + ng:])
        mis = v * np.conj(i_bus) - s_gen + self.sd
        parts = [mis.real, mis.imag]
        if self.apparent and self.nl2:
            parts.append(self._flow(v)[0])
        for p1, p2, c1, c2 in ([] if self.apparent else self.ends):
            parts.append(np.abs(c1 * v[p1] + c2 * v[p2]) ** 2)
        if self.a_csr is not None:
            parts.append(self.a_csr @ x)
        return np.concatenate(parts)

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        v, vn, i_bus = self._state(x)
        r, c, d, db = self.r, self.c, self.dg_r, self.dg_bus
        yv = self.y_rc * v[c]
        ds_dva = -1j * v[r] * np.conj(yv)
        ds_dva[d] += 1j * v[db] * np.conj(i_bus[db])
        ds_dvm = v[r] * np.conj(yv / np.abs(v[c]))
        ds_dvm[d] += np.conj(i_bus[db]) * vn[db]
        parts = [ds_dva.real, ds_dvm.real, ds_dva.imag, ds_dvm.imag, self.minus_ones]
        if self.apparent and self.nl2:
            grad = self._flow(v)[1]  # (4, 2 n_lim): from ends, then to ends
            nl = self.nl2
            for e in range(2):  # the structure lists each end's four columns in turn
                parts += list(grad[:, e * nl: (e + 1) * nl])
        for p1, p2, c1, c2 in ([] if self.apparent else self.ends):
            i_br = c1 * v[p1] + c2 * v[p2]
            ci = 2 * np.conj(i_br)
            a1, a2 = ci * c1 * v[p1], ci * c2 * v[p2]  # 2 conj(I) c V_p
            # d|I|^2/dVa_p = Re(2 conj(I) c j V_p) = -Im(a); d/dVm_p = Re(a) / |V_p|
            parts += [-a1.imag, -a2.imag, a1.real / np.abs(v[p1]), a2.real / np.abs(v[p2])]
        parts.append(self.a_vals)
        return np.concatenate(parts)

    def hessian(self, x: np.ndarray, lagrange: np.ndarray, obj_factor: float) -> np.ndarray:
        vals = self._hess_values(x, lagrange, obj_factor)
        return np.bincount(self.h_inv, weights=vals[self.h_keep], minlength=self.h_n)

    def _hess_values(self, x: np.ndarray, lagrange: np.ndarray, obj_factor: float) -> np.ndarray:
        """Every Hessian contribution on `_hess_coords` (lower-triangle ones are kept later).

        Balance rows (TN2, d2Sbus_dV2) with one complex multiplier mu = lam_P - j lam_Q, since
        lam_P Re(H) + lam_Q Im(H) = Re(H(mu)) and H is linear in the multiplier. Flow rows: per
        branch end, the 4x4 block of |I|^2 in (Va_p1, Va_p2, Vm_p1, Vm_p2) is
        2 Re(conj(dI_a) dI_b) + 2 Re(conj(I) d2I_ab), d2I nonzero only within one bus.
        """
        nb, nl2 = self.nb, self.nl2
        r, c, d, db = self.r, self.c, self.dg_r, self.dg_bus
        v, vn, i_bus = self._state(x)
        ginv = 1.0 / np.abs(v)
        mu = lagrange[:nb] - 1j * lagrange[nb: 2 * nb]
        yv_rc = self.y_rc * v[c]
        c_rc = mu[r] * v[r] * np.conj(yv_rc)
        c_cr = mu[c] * v[c] * np.conj(self.y_cr * v[r])
        e_rc = np.conj(v[r] * self.y_cr) * v[c] * mu[c]
        d_lam = self.yh @ (v * mu)
        e_rc[d] -= np.conj(v[db]) * d_lam[db]
        f_rc = c_rc.copy()
        f_rc[d] -= mu[db] * v[db] * np.conj(i_bus[db])
        gaa = (e_rc + f_rc).real
        gva = (1j * ginv[r] * (e_rc - f_rc)).real
        gvv = (ginv[r] * (c_rc + c_cr) * ginv[c]).real
        parts = [obj_factor * self.base ** 2 * 2 * self.cost[:, 0], gaa, gva, gvv]
        if nl2:  # the flow rows' Hessian blocks, |I|^2 or |S|^2 (`opf.flow_terms`)
            parts.append(self._flow(v, lagrange[2 * nb: 2 * nb + 2 * nl2])[2].ravel())
        return np.concatenate(parts)

    def intermediate(self, alg_mod, iter_count, obj_value, inf_pr, *args) -> bool:  # noqa: ANN001
        """Record the iteration; stop a run whose primal infeasibility has stalled (module doc)."""
        self.iter_count = iter_count
        if inf_pr < STALL_FACTOR * self.best_inf_pr:
            self.best_inf_pr, self.best_iter = inf_pr, iter_count
        return not (inf_pr > STALL_MIN_INF_PR and iter_count - self.best_iter >= STALL_ITERATIONS)

    def reset_progress(self) -> None:
        self.iter_count, self.best_inf_pr, self.best_iter = 0, np.inf, 0


@dataclasses.dataclass
class _TopologyProblem:
    """Everything about one topology that scenarios share."""

    callbacks: _Callbacks
    problem: Any
    ppc: dict[str, Any]
    branch_kept: np.ndarray
    gen_kept: np.ndarray
    x0: np.ndarray               # opf_setup's flat interior start, as PIPS uses it
    yf: Any
    yt: Any
    base_cost: np.ndarray        # (n_kept_gen, 3) polynomial coefficients before cost scales
    limited: np.ndarray          # grid indices of the branches with flow-limit rows, in row order
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


class IpoptOpf:
    """Ipopt AC-OPF of one grid's scenarios; see the module docstring.

    Args:
        grid: the grid (not modified).
        options: Ipopt options overriding `IPOPT_OPTIONS`.
        warm: warm-start each scenario from its topology's nominal solution (default: True).
        max_topologies: problems kept per grid (least recently used dropped; default: 64).

    Not picklable on purpose (the cyipopt problems); `Labeller` rebuilds one after unpickling.
    """

    def __init__(self, grid: GridModel, *, options: dict[str, Any] | None = None, warm: bool = True,
                 max_topologies: int = 64):
        import cyipopt  # noqa: F401  (fail early with an ImportError naming the package)

        self.grid, self.warm = grid, warm
        self.options = {**IPOPT_OPTIONS, **(options or {})}
        self.max_topologies = max_topologies
        self._problems: dict[tuple[tuple[int, ...], tuple[int, ...]], _TopologyProblem] = {}
        self.anchor_solves = 0  # cold solves spent on warm-start anchors
        self._anchors: dict[int, _Start | None] = {}  # load-scale step -> intact-grid solution
        self._intact: _TopologyProblem | None = None

    # ---- structures per topology ----------------------------------------------------------------
    def _topology(self, scenario: Scenario) -> _TopologyProblem:
        key = (tuple(sorted(int(k) for k in scenario.branch_out)),
               tuple(sorted(int(g) for g in scenario.gen_out)))
        tp = self._problems.pop(key, None)
        if tp is None:
            tp = self._build(scenario)
            while len(self._problems) >= self.max_topologies:
                self._problems.pop(next(iter(self._problems)))
        self._problems[key] = tp  # most recently used last
        return tp

    def _build(self, scenario: Scenario) -> _TopologyProblem:
        import cyipopt
        from pandapower.pypower.idx_brch import F_BUS, RATE_A, T_BUS
        from pandapower.pypower.idx_gen import GEN_BUS
        from pandapower.pypower.makeYbus import makeYbus
        from pandapower.pypower.opf_setup import opf_setup
        from pandapower.pypower.ppoption import ppoption

        ppc, branch_kept, gen_kept = scenario_ppc(self.grid, scenario)
        nb, ng = ppc["bus"].shape[0], ppc["gen"].shape[0]
        work = dict(ppc)
        pad_result_columns(work)
        om = opf_setup(work, ppoption(VERBOSE=0, OPF_FLOW_LIM=2))
        if om.getN("var", "y") or om.getN("var") != 2 * nb + 2 * ng:
            raise ValueError("Ipopt AC-OPF supports polynomial costs without extra variables only")
        mppc = om.get_ppc()
        base, bus, gen, branch = mppc["baseMVA"], mppc["bus"], mppc["gen"], mppc["branch"]
        a_lin, l_lin, u_lin = om.linear_constraints()
        _, xmin, xmax = om.getv()
        # PIPS's flat start (pipsopf_solver): the middle of the bounds, reference angle kept
        lo, hi = xmin.copy(), xmax.copy()
        lo[xmin == -np.inf], hi[xmax == np.inf] = -1e10, 1e10
        x0 = (lo + hi) / 2
        ref_va = xmin[:nb][xmin[:nb] == xmax[:nb]]
        x0[:nb] = ref_va[0] if ref_va.size else 0.0

        ybus, yf, yt = makeYbus(base, bus, branch)
        yf, yt = yf.tocsr(), yt.tocsr()
        il = np.flatnonzero((branch[:, RATE_A] != 0) & (branch[:, RATE_A] < 1e10))
        f_bus, t_bus = branch[il, F_BUS].astype(int), branch[il, T_BUS].astype(int)
        ends = [(f_bus, t_bus, np.asarray(yf[il, f_bus]).ravel(), np.asarray(yf[il, t_bus]).ravel()),
                (f_bus, t_bus, np.asarray(yt[il, f_bus]).ravel(), np.asarray(yt[il, t_bus]).ravel())]
        flow_max = (branch[il, RATE_A] / base) ** 2
        base_cost = _poly_coeffs(mppc["gencost"], ng)
        cb = _Callbacks(ybus, ends, flow_max, gen[:, GEN_BUS].astype(int), base_cost,
                        base, a_lin if a_lin is not None and a_lin.shape[0] else None,
                        apparent=self.grid.apparent_power_limits)
        nl2 = len(flow_max)
        cl = np.r_[np.zeros(2 * nb), np.full(2 * nl2, -INF)]
        cu = np.r_[np.zeros(2 * nb), flow_max, flow_max]
        if cb.n_lin:
            cl = np.r_[cl, np.where(np.isfinite(l_lin), l_lin, -INF)]
            cu = np.r_[cu, np.where(np.isfinite(u_lin), u_lin, INF)]
        lb = np.where(np.isfinite(xmin), xmin, -INF)
        ub = np.where(np.isfinite(xmax), xmax, INF)
        problem = cyipopt.Problem(n=cb.nx, m=cb.m, problem_obj=cb, lb=lb, ub=ub, cl=cl, cu=cu)
        for k, val in self.options.items():
            problem.add_option(k, val)
        return _TopologyProblem(cb, problem, ppc, branch_kept, gen_kept, x0, yf, yt, base_cost,
                                branch_kept[il],
                                options=dict(self.options))

    # ---- solving -------------------------------------------------------------------------------
    def _set_options(self, tp: _TopologyProblem, options: dict[str, Any]) -> None:
        for k, val in options.items():
            if tp.options.get(k) != val:
                tp.problem.add_option(k, val)
                tp.options[k] = val

    def _run(self, tp: _TopologyProblem, scenario: Scenario, start: _Start | None,
             max_iterations: int) -> tuple[np.ndarray, dict[str, Any], int]:
        base = self.grid.base_mva
        sd = (np.asarray(scenario.pd_mw, dtype=float) + 1j * np.asarray(scenario.qd_mvar, dtype=float)) / base
        cost = tp.base_cost
        if scenario.cost_scale is not None:
            cost = cost * np.asarray(scenario.cost_scale, dtype=float)[tp.gen_kept][:, None]
        tp.callbacks.set_scenario(sd, cost)
        tp.callbacks.reset_progress()
        opts = {**(WARM_OPTIONS if start is not None else COLD_OPTIONS), "max_iter": max_iterations}
        self._set_options(tp, opts)
        with deferred_interrupts():  # an interrupt inside Ipopt's callbacks can crash it
            if start is None:
                x, info = tp.problem.solve(tp.x0.copy())
            else:
                x, info = tp.problem.solve(start.x.copy(), lagrange=start.lagrange.copy(),
                                           zl=start.zl.copy(), zu=start.zu.copy())
        return x, info, tp.callbacks.iter_count

    def _anchor_start(self, tp: _TopologyProblem, scenario: Scenario) -> _Start | None:
        """The warm start of `scenario`: the nearest anchor at or below its load scale that has
        an AC-OPF solution (at most `ANCHOR_TRIES` tried), mapped onto the scenario's topology;
        None (cold start) without one."""
        scale = float(scenario.load_scale)
        if not np.isfinite(scale) or scale <= 0:
            return None
        k = max(1, int(np.floor(scale / ANCHOR_STEP + 1e-9)))
        for step in range(k, max(0, k - ANCHOR_TRIES), -1):
            if step not in self._anchors:
                s = step * ANCHOR_STEP
                anchor = Scenario(-1, s, self.grid.pd_mw * s, self.grid.qd_mvar * s)
                if self._intact is None:
                    self._intact = self._topology(anchor)
                x, info, _ = self._run(self._intact, anchor, None, MAX_ITERATIONS_COLD)
                ok = info["status"] in SUCCESS
                self._anchors[step] = _Start(x, info["mult_g"], info["mult_x_L"], info["mult_x_U"]) \
                    if ok else None
                self.anchor_solves += 1
            if self._anchors[step] is not None:
                return self._map_start(self._anchors[step], tp)
        return None

    def _map_start(self, start: _Start, tp: _TopologyProblem) -> _Start:
        """An intact-grid point and multipliers in the layout of topology `tp`: outaged
        generators' variables and outaged branches' flow rows dropped."""
        intact = self._intact
        assert intact is not None
        if tp is intact:
            return start
        nb = self.grid.n_bus
        ng0 = len(intact.gen_kept)
        g = np.searchsorted(intact.gen_kept, tp.gen_kept)
        cols = np.r_[np.arange(2 * nb), 2 * nb + g, 2 * nb + ng0 + g]
        nl0 = len(intact.limited)
        rows = np.searchsorted(intact.limited, tp.limited)
        lam = start.lagrange
        lin = lam[2 * nb + 2 * nl0:]
        if len(lin) != tp.callbacks.n_lin:
            lin = np.zeros(tp.callbacks.n_lin)
        lagrange = np.r_[lam[:2 * nb], lam[2 * nb + rows], lam[2 * nb + nl0 + rows], lin]
        return _Start(start.x[cols], lagrange, start.zl[cols], start.zu[cols])

    def solve(self, scenario: Scenario, *, warm: bool | None = None,
              max_iterations: int | None = None) -> AcOpfResult:
        """Solve the AC-OPF of `scenario`; the result has `opf.solve_ac_opf`'s form.

        Args:
            scenario: loads, outages and cost scales.
            warm: start from an anchor of the scenario's topology (module docstring; default:
                the instance's `warm`); without a solved anchor the start is cold (PIPS's flat
                start, the middle of the bounds).
            max_iterations: iteration limit (default: `MAX_ITERATIONS_WARM` warm,
                `MAX_ITERATIONS_COLD` cold).
        """
        start_t = time.perf_counter()
        tp = self._topology(scenario)
        warm = self.warm if warm is None else warm
        start = self._anchor_start(tp, scenario) if warm else None
        if max_iterations is None:
            max_iterations = MAX_ITERATIONS_WARM if start is not None else MAX_ITERATIONS_COLD
        x, info, iterations = self._run(tp, scenario, start, max_iterations)
        return self._result(tp, x, info, iterations, time.perf_counter() - start_t)

    def _result(self, tp: _TopologyProblem, x: np.ndarray, info: dict[str, Any], iterations: int,
                elapsed: float) -> AcOpfResult:
        grid, nb, ng = self.grid, self.grid.n_bus, len(tp.gen_kept)
        base = grid.base_mva
        va, vm = x[:nb], x[nb: 2 * nb]
        pg, qg = np.zeros(grid.n_gen), np.zeros(grid.n_gen)
        pg[tp.gen_kept] = x[2 * nb: 2 * nb + ng] * base
        qg[tp.gen_kept] = x[2 * nb + ng: 2 * nb + 2 * ng] * base
        v = vm * np.exp(1j * va)
        i_f, i_t = tp.yf @ v, tp.yt @ v
        br = tp.ppc["branch"]
        from pandapower.pypower.idx_brch import F_BUS, T_BUS

        f, t = br[:, F_BUS].astype(int), br[:, T_BUS].astype(int)
        s_mva = np.maximum(np.abs(v[f] * np.conj(i_f)), np.abs(v[t] * np.conj(i_t))) * base
        i_pu = np.maximum(np.abs(i_f), np.abs(i_t))
        flow_full, loading_full = full_branch_results(grid, tp.branch_kept, s_mva, i_pu)
        converged = info["status"] in SUCCESS and bool(np.all(np.isfinite(x)))
        msg = info["status_msg"]
        if isinstance(msg, bytes):
            msg = msg.decode(errors="replace")
        return AcOpfResult(
            converged=converged, objective=float(info["obj_val"]) if converged else float("nan"),
            pg_mw=pg, qg_mvar=qg, vm_pu=vm.copy(), va_degree=np.rad2deg(va), branch_flow_mva=flow_full,
            loading_percent=loading_full, iterations=int(iterations), solve_time_s=elapsed,
            message="" if converged else f"Ipopt status {info['status']}: {msg}")
