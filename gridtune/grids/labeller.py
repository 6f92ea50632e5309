"""Status logic: one honest `Label` per scenario (docs/design.md, "Labels: honest statuses").

Order of work for one scenario, cheapest certificate first:

1. SOC relaxation (~10-40 ms). Infeasible => `infeasible` (`soc-infeasible`): a relaxation of the
   AC-OPF has no solution, so neither has the AC-OPF. The failing AC-OPF is never run. Each
   relaxation keeps the Farkas rays of its infeasible solves and tries them first (`farkas.py`):
   a ray that proves the new scenario infeasible replaces the solve (~1 ms). Where SOC is
   feasible, the cycle relaxation's kept rays are tried too (`cycle-infeasible` without an
   AC-OPF).
2. Label only (`solutions=False`): recover a point from the SOC solution (its dispatch and
   generator voltages), run an AC power flow and check every limit with `opf.recheck`. Passing =>
   `feasible` (`soc-recovered`): a feasible point exists, its optimum is not computed. Else the
   same from an AC-OPF stopped early (loose optimality tolerances) => `feasible`
   (`ac-recovered`).
3. AC-OPF with the recipe's solver (`solver`: PIPS as `pandapower.runopp`, or Ipopt,
   `ipopt_opf.py`, warm-started). Converged and re-checks => `feasible` (`ac-opf`) with the
   solution as the regression target.
4. The first solver failed: the cycle relaxation (SOC with PSD cuts on the grid's cycles,
   tighter than SOC, ~0.3 s on case118; built on first use). Infeasible => `infeasible`
   (`cycle-infeasible`): no solver can succeed, so the second one is not run.
5. Second-solver rule: the other solver, from another starting point (PIPS: the middle of the
   bounds; Ipopt: a warm start), gets its chance; converged and re-checks => `feasible` (`ac-opf`).
6. Both failed: a recovered SOC point still certifies feasibility (`soc-recovered`); else the
   chordal SDP relaxation (tighter still; built on first use). Infeasible => `infeasible`
   (`sdp-infeasible`).
7. Still open: the cycle relaxation with bounds tightened by optimization (`obbt = True`; seconds
   a scenario, built on first use). Infeasible => `infeasible` (`obbt-infeasible`). Else
   `unknown` (`ac-failed`), with both solvers' messages.

With `solver = "ipopt"` the label-only mode skips the early-stopped PIPS of step 2: a full
warm-started Ipopt solve costs less, and its solution is kept.

Anything that raises inside is caught: status `error` (`crash`) with the exception as reason.

SOC alone is not enough on line-limited grids: on pandapower's case30 the AC-OPF fails from a
uniform load scale of 1.04 while SOC stays feasible to ~1.17; the SDP is infeasible from 1.04.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from gridtune.grids.dcopf import DcOpf
from gridtune.grids.labels import Label, Tolerances
from gridtune.grids.model import REF, GridModel
from gridtune.grids.opf import (
    DEFAULT_TOLERANCES,
    AcOpfResult,
    branch_results,
    recheck,
    scenario_ppc,
    solve_ac_opf,
)
from gridtune.grids.relaxations import (
    BoundTightenedRelaxation,
    CycleRelaxation,
    RelaxationResult,
    SdpRelaxation,
    SocRelaxation,
)
from gridtune.grids.scenarios import Scenario, Topology
from gridtune.grids.scenarios import uniform_scenario as _uniform

PF_MAX_IT = 20
PF_TOL_PU = 1e-9
# Recovery retries the SOC with voltage and Q ranges shrunk by these fractions of their width:
# the relaxed optimum sits on limits the AC power flow then overshoots by a little (case14: the
# slack's Q by ~1.5 Mvar); a restricted optimum leaves room. 0.05 recovered 9 of 20 random
# case14 scenarios, 0 without it.
RECOVERY_MARGINS = (0.05, 0.1)
# Label-only mode: PIPS with loose optimality tolerances stops at a nearly optimal point in about
# half the iterations (case14: 6 instead of 12, case118: 12-17 instead of 18-23); a power flow
# from its dispatch and voltages then gives a point that passes the full re-check.
LOOSE_OPTIMALITY_TOL = 1e-2
# Recovery from the SOC point pays off on some grids (case9 always, case14 near its boundary) and
# almost never on others (case118: the relaxation's reactive dispatch is far from realisable).
# After this many attempts, a Labeller keeps trying only while at least a fifth succeed.
RECOVERY_PROBATION, RECOVERY_MIN_RATE = 5, 0.2
SOLVERS = ("ipopt", "pips")  # AC-OPF solvers a recipe can name (`[labels] solver`)


def uniform_scenario(grid: GridModel, scale: float, branch_out: tuple[int, ...] = (),
                     gen_out: tuple[int, ...] = ()) -> Scenario:
    """Nominal loads times `scale` with the given outages (tests, calibration, benchmarks)."""
    return _uniform(grid, scale, Topology(branch_out=tuple(branch_out), gen_out=tuple(gen_out)))


class Labeller:
    """Labels scenarios of one grid; see the module docstring for the logic.

    Args:
        grid: the grid (not modified).
        solutions: compute the AC-OPF optimum of feasible scenarios (the regression target;
            default: True). False certifies feasibility by a point recovered from the SOC
            relaxation when it can, which is several times faster.
        tolerances: re-check tolerances (default: `Tolerances()`).
        dc: also solve the DC-OPF (baseline labels; default: True).
        cycles: run the cycle relaxation where SOC is feasible but the first AC solver failed
            (default: True).
        sdp: run the chordal SDP where SOC is feasible but the AC-OPF failed (default: True).
        obbt: run the bound-tightened cycle relaxation where every other step left the
            scenario open (default: False).
        solver: the AC-OPF solver tried first, `"pips"` (default) or `"ipopt"`; the other one is
            the second solver.

    Attributes:
        solved_by: how many scenarios each solver settled as `ac-opf` (`"pips"`, `"ipopt"`),
            and how many of them needed the second solver (`"second"`).

    Picklable: pickling keeps only the arguments; the cvxpy problems are rebuilt on unpickling.
    """

    def __init__(self, grid: GridModel, *, solutions: bool = True,
                 tolerances: Tolerances = DEFAULT_TOLERANCES, dc: bool = True, sdp: bool = True,
                 solver: str = "pips", cycles: bool = True, obbt: bool = False):
        if solver not in SOLVERS:
            raise ValueError(f"solver `{solver}` is not known; valid: "
                             + ", ".join(f"`{s}`" for s in SOLVERS))
        self.grid, self.solutions, self.tolerances = grid, solutions, tolerances
        self.use_dc, self.use_sdp, self.use_cycles, self.solver = dc, sdp, cycles, solver
        self.use_obbt = obbt
        self._ipopt: Any = None
        self.solved_by = {"pips": 0, "ipopt": 0, "second": 0}
        self.soc = SocRelaxation(grid)
        self.dc = DcOpf(grid) if dc else None
        self._sdp: SdpRelaxation | None = None
        self._cycles: CycleRelaxation | None = None
        self._obbt: BoundTightenedRelaxation | None = None
        self._recovery_tries, self._recovery_wins = 0, 0

    def __getstate__(self) -> dict[str, Any]:
        return {"grid": self.grid, "solutions": self.solutions, "tolerances": self.tolerances,
                "dc": self.use_dc, "sdp": self.use_sdp, "solver": self.solver, "cycles": self.use_cycles,
                "obbt": self.use_obbt}

    def __setstate__(self, state: dict[str, Any]) -> None:
        grid = state.pop("grid")
        self.__init__(grid, **state)  # type: ignore[misc]

    @property
    def sdp(self) -> SdpRelaxation:
        if self._sdp is None:
            self._sdp = SdpRelaxation(self.grid)
        return self._sdp

    @property
    def cycles(self) -> CycleRelaxation:
        if self._cycles is None:
            self._cycles = CycleRelaxation(self.grid)
        return self._cycles

    @property
    def obbt(self) -> BoundTightenedRelaxation:
        if self._obbt is None:
            self._obbt = BoundTightenedRelaxation(self.grid)
        return self._obbt

    @property
    def ipopt(self) -> Any:
        if self._ipopt is None:
            from gridtune.grids.ipopt_opf import IpoptOpf

            self._ipopt = IpoptOpf(self.grid)
        return self._ipopt

    def solve_ac(self, scenario: Scenario, solver: str) -> AcOpfResult:
        """The AC-OPF of `scenario` with `solver` (`"pips"` from the middle of the bounds, as
        `runopp`; `"ipopt"` warm-started, `ipopt_opf.py`)."""
        if solver == "ipopt":
            return self.ipopt.solve(scenario)
        return solve_ac_opf(self.grid, scenario)

    def label(self, scenario: Scenario) -> Label:
        """Label one scenario. Never raises for solver or data trouble: see status `error`."""
        start = time.perf_counter()
        try:
            label = self._label(scenario)
        except Exception as exc:  # a crashing solve must not stop a dataset build
            label = Label(status="error", certificate="crash", reason=f"{type(exc).__name__}: {exc}")
        label.solve_time_s = time.perf_counter() - start
        return label

    # ---- internals ---------------------------------------------------------------------------
    def _label(self, scenario: Scenario) -> Label:
        check_scenario(self.grid, scenario)
        dc_fields: dict[str, Any] = {}
        if self.dc is not None:
            d = self.dc.solve(scenario)
            dc_fields = {"dc_status": d.status, "dc_objective": d.objective if d.pg_mw is not None else None,
                         "dc_pg_mw": d.pg_mw, "dc_va_degree": d.va_degree}
        soc = self.soc.solve(scenario)
        bound = soc.objective if soc.status == "optimal" else None
        if soc.infeasible:
            return Label(status="infeasible", certificate="soc-infeasible", **dc_fields)
        if self.use_cycles and self._cycles is not None and self._cycles.known_infeasible(scenario):
            return Label(status="infeasible", certificate="cycle-infeasible",
                         relaxation_objective=bound, **dc_fields)

        recovered_tried = False
        if not self.solutions and soc.status == "optimal":
            recovered_tried = True
            if self._recover(scenario, soc):
                return Label(status="feasible", certificate="soc-recovered",
                             relaxation_objective=bound, **dc_fields)

        if not self.solutions and self.solver == "pips":
            loose = solve_ac_opf(self.grid, scenario, optimality_tol=LOOSE_OPTIMALITY_TOL)
            if loose.converged and recover_feasible_point(self.grid, scenario, loose,
                                                          self.tolerances) is not None:
                return Label(status="feasible", certificate="ac-recovered",
                             relaxation_objective=bound, **dc_fields)
        reasons = []
        cycles_note = ""
        second = "ipopt" if self.solver == "pips" else "pips"
        for rank, solver in enumerate((self.solver, second)):
            if rank == 1 and self.use_cycles:
                cycles = self.cycles.solve(scenario)
                if cycles.infeasible:
                    return Label(status="infeasible", certificate="cycle-infeasible",
                                 relaxation_objective=bound, **dc_fields)
                if cycles.status == "optimal":
                    bound = cycles.objective if bound is None else max(bound, cycles.objective)
                cycles_note = f"cycle relaxation `{cycles.status}`"
            ac = self.solve_ac(scenario, solver)
            if ac.converged:
                bad = recheck(self.grid, scenario, ac, self.tolerances)
                if not bad:
                    self.solved_by[solver] += 1
                    self.solved_by["second"] += rank
                    return Label(status="feasible", certificate="ac-opf", objective=ac.objective,
                                 pg_mw=ac.pg_mw, qg_mvar=ac.qg_mvar, vm_pu=ac.vm_pu,
                                 va_degree=ac.va_degree, loading_percent=ac.loading_percent,
                                 branch_flow_mva=ac.branch_flow_mva, relaxation_objective=bound,
                                 **dc_fields)
                reasons.append(f"AC-OPF ({_NAMES[solver]}) converged but fails the re-check: "
                               + ", ".join(f"{k} off by `{v:.3g}`" for k, v in bad.items()))
            else:
                reasons.append(f"AC-OPF did not converge ({_NAMES[solver]}, {ac.iterations} "
                               f"iterations): {ac.message}")
        reason = "; ".join(reasons + ([cycles_note] if cycles_note else []))

        if soc.status == "optimal" and not recovered_tried:
            if self._recover(scenario, soc):
                return Label(status="feasible", certificate="soc-recovered",
                             relaxation_objective=bound, **dc_fields)
        if self.use_sdp:
            try:
                sdp = self.sdp.solve(scenario)
            except Exception as exc:  # the SDP is a last resort: its failure leaves it open
                reason += f"; SDP relaxation failed: {type(exc).__name__}: {exc}"
            else:
                if sdp.infeasible:
                    return Label(status="infeasible", certificate="sdp-infeasible",
                                 relaxation_objective=bound, **dc_fields)
                if sdp.status == "optimal":
                    bound = sdp.objective if bound is None else max(bound, sdp.objective)
                    reason += f"; SDP relaxation feasible (bound {sdp.objective:.6g})"
                else:
                    reason += f"; SDP relaxation status `{sdp.status}`"
        if self.use_obbt:
            try:
                status, _ = self.obbt.tighten(scenario)
            except Exception as exc:  # as the SDP: a failure leaves `unknown`
                reason += f"; bound tightening failed: {type(exc).__name__}: {exc}"
            else:
                if status == "infeasible":
                    return Label(status="infeasible", certificate="obbt-infeasible",
                                 relaxation_objective=bound, **dc_fields)
                reason += f"; bound-tightened relaxation `{status}`"
        return Label(status="unknown", certificate="ac-failed", relaxation_objective=bound,
                     reason=reason, **dc_fields)

    def _recover(self, scenario: Scenario, soc: RelaxationResult) -> bool:
        """True if a point recovered from the SOC optimum (or a restricted one) re-checks.

        Only a speed-up: skipped once it has proved useless on this grid (see
        `RECOVERY_PROBATION`); the AC-OPF then decides, as it would have anyway.
        """
        n, wins = self._recovery_tries, self._recovery_wins
        if n >= RECOVERY_PROBATION and wins < RECOVERY_MIN_RATE * n:
            return False
        self._recovery_tries += 1
        if self._try_recover(scenario, soc):
            self._recovery_wins += 1
            return True
        return False

    def _try_recover(self, scenario: Scenario, soc: RelaxationResult) -> bool:
        if recover_feasible_point(self.grid, scenario, soc, self.tolerances) is not None:
            return True
        for margin in RECOVERY_MARGINS:
            restricted = self.soc.solve(scenario, margin=margin)
            if restricted.status != "optimal":
                return False  # a larger margin would not be feasible either
            if recover_feasible_point(self.grid, scenario, restricted, self.tolerances) is not None:
                return True
        return False


_NAMES = {"pips": "PIPS", "ipopt": "Ipopt"}


def check_scenario(grid: GridModel, scenario: Scenario) -> None:
    """Raise ValueError naming the field when a scenario does not fit the grid or is not finite."""
    for name, arr, n in (("pd_mw", scenario.pd_mw, grid.n_bus), ("qd_mvar", scenario.qd_mvar, grid.n_bus)):
        arr = np.asarray(arr, dtype=float)
        if arr.shape != (n,):
            raise ValueError(f"scenario {scenario.scenario_id}: `{name}` has shape {arr.shape}, "
                             f"grid `{grid.name}` has {n} buses")
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise ValueError(f"scenario {scenario.scenario_id}: `{name}` is not finite at buses "
                             f"{bad.tolist()[:5]} (value `{arr[bad[0]]}`)")
    for name, idx, n in (("branch_out", scenario.branch_out, grid.n_branch),
                         ("gen_out", scenario.gen_out, grid.n_gen)):
        out = [i for i in idx if not 0 <= int(i) < n]
        if out:
            raise ValueError(f"scenario {scenario.scenario_id}: `{name}` index `{out[0]}` out of "
                             f"range 0..{n - 1}")


def recover_feasible_point(grid: GridModel, scenario: Scenario, soc: RelaxationResult | AcOpfResult,
                           tolerances: Tolerances = DEFAULT_TOLERANCES) -> AcOpfResult | None:
    """An AC-feasible operating point built from a relaxation (or approximate AC) solution, or None.

    Fixes the relaxation's dispatch at the non-reference generators and its voltage magnitudes
    at generator buses (clipped to limits), solves the AC power flow (Newton-Raphson; the
    reference bus balances the losses) with generator Q limits enforced by PV-to-PQ switching,
    splits bus totals among the generators at each bus in proportion to their ranges, and
    returns the point only if `recheck` finds no violation.
    """
    assert soc.vm_pu is not None and soc.pg_mw is not None
    ppc, branch_kept, gen_kept = scenario_ppc(grid, scenario)
    from pandapower.pypower.makeYbus import makeYbus

    ybus = makeYbus(ppc["baseMVA"], ppc["bus"], ppc["branch"])[0].tocsr()
    nb, base = grid.n_bus, grid.base_mva
    gbus = grid.gen_bus[gen_kept]
    ref = np.flatnonzero(grid.bus_type == REF)
    pv = np.setdiff1d(np.unique(gbus), ref)
    pq = np.setdiff1d(np.arange(nb), np.r_[ref, pv])
    vm = np.ones(nb)
    vm[np.r_[ref, pv]] = np.clip(soc.vm_pu[np.r_[ref, pv]], grid.min_vm_pu[np.r_[ref, pv]],
                                 grid.max_vm_pu[np.r_[ref, pv]])
    vm[pq] = soc.vm_pu[pq]
    p_spec = -np.asarray(scenario.pd_mw, dtype=float) / base
    q_spec = -np.asarray(scenario.qd_mvar, dtype=float) / base
    np.add.at(p_spec, gbus, soc.pg_mw[gen_kept] / base)
    q_lo, q_hi = np.zeros(nb), np.zeros(nb)  # summed generator Q limits per bus, Mvar
    np.add.at(q_lo, gbus, grid.min_q_mvar[gen_kept])
    np.add.at(q_hi, gbus, grid.max_q_mvar[gen_kept])
    s_load = np.asarray(scenario.pd_mw) + 1j * np.asarray(scenario.qd_mvar)
    # The relaxation's reactive dispatch is often not realisable (its gap sits in Q), so enforce
    # generator Q limits as a power flow does: PV buses beyond their limits become PQ buses held
    # at those limits, and the power flow is solved again.
    va = np.zeros(nb)
    for _ in range(len(pv) + 1):
        v = solve_power_flow(ybus, vm, va, p_spec, q_spec, ref, pv, pq)
        if v is None:
            return None
        s_gen = v * np.conj(ybus @ v) * base + s_load
        q = s_gen.imag[pv]
        over = np.maximum(q - q_hi[pv], q_lo[pv] - q)
        if over.size == 0 or over.max() <= tolerances.gen_mw:
            break
        bad = pv[over > tolerances.gen_mw]
        q_spec[bad] = (np.clip(s_gen.imag[bad], q_lo[bad], q_hi[bad])
                       - np.asarray(scenario.qd_mvar)[bad]) / base
        pv, pq = np.setdiff1d(pv, bad), np.sort(np.r_[pq, bad])
        vm, va = np.abs(v), np.angle(v)
    pg, qg = np.zeros(grid.n_gen), np.zeros(grid.n_gen)
    pg[gen_kept] = soc.pg_mw[gen_kept]
    for b in np.unique(gbus):
        gens = gen_kept[gbus == b]
        if b in ref:
            pg[gens] = _split(s_gen[b].real, grid.min_p_mw[gens], grid.max_p_mw[gens])
        qg[gens] = _split(s_gen[b].imag, grid.min_q_mvar[gens], grid.max_q_mvar[gens])
    vm_pu, va_degree = np.abs(v), np.rad2deg(np.angle(v))
    flow, loading = branch_results(grid, ppc, branch_kept, vm_pu, va_degree)
    point = AcOpfResult(converged=True, objective=float("nan"), pg_mw=pg, qg_mvar=qg, vm_pu=vm_pu,
                        va_degree=va_degree, branch_flow_mva=flow, loading_percent=loading,
                        iterations=0, solve_time_s=0.0)
    return None if recheck(grid, scenario, point, tolerances) else point


def _split(total: float, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Share `total` among units with limits [low, high], each at the same fraction of its range
    (outside the summed range every unit sits at its nearer limit plus an equal share of the
    excess, so the re-check reports the violation)."""
    span = high - low
    if span.sum() <= 0:
        return low + (total - low.sum()) / len(low)
    frac = (total - low.sum()) / span.sum()
    if 0.0 <= frac <= 1.0:
        return low + frac * span
    edge = low if frac < 0 else high
    return edge + (total - edge.sum()) / len(low)


def solve_power_flow(ybus: Any, vm: np.ndarray, va_rad: np.ndarray, p_spec: np.ndarray,
                     q_spec: np.ndarray, ref: np.ndarray, pv: np.ndarray, pq: np.ndarray
                     ) -> np.ndarray | None:
    """Newton-Raphson AC power flow in polar form (sparse; Tinney & Hart 1967).

    Args:
        ybus: (n, n) complex bus admittance matrix, p.u. (scipy sparse).
        vm, va_rad: initial voltages; `vm` at `ref` and `pv` buses are the set points.
        p_spec, q_spec: (n,) specified net injections, p.u. (`q_spec` used at PQ buses only).
        ref, pv, pq: bus index sets.

    Returns the complex voltages, or None if the iteration does not converge.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    ybus = sp.csr_matrix(ybus)
    coo = ybus.tocoo()
    r, c, y = coo.row, coo.col, coo.data
    nb = ybus.shape[0]
    pvpq = np.r_[pv, pq]
    npvpq = len(pvpq)
    # positions of each bus in the equations (P at PV+PQ, Q at PQ) and unknowns (Va, Vm)
    row_p, row_q = np.full(nb, -1), np.full(nb, -1)
    row_p[pvpq], row_q[pq] = np.arange(npvpq), npvpq + np.arange(len(pq))
    col_a, col_m = row_p, row_q  # same ordering for unknowns
    diag = np.arange(nb)
    v = vm * np.exp(1j * va_rad)
    for _ in range(PF_MAX_IT):
        i_bus = ybus @ v
        mis = v * np.conj(i_bus) - (p_spec + 1j * q_spec)
        f = np.r_[mis.real[pvpq], mis.imag[pq]]
        if not np.all(np.isfinite(f)):
            return None
        if np.abs(f).max() < PF_TOL_PU:
            return v
        vn = v / np.abs(v)
        # entries of dS/dVa and dS/dVm on the pattern of Y plus the diagonal (MATPOWER TN2)
        rr, cc = np.r_[r, diag], np.r_[c, diag]
        dva = np.r_[-1j * v[r] * np.conj(y * v[c]), 1j * v * np.conj(i_bus)]
        dvm = np.r_[v[r] * np.conj(y * vn[c]), np.conj(i_bus) * vn]
        rows, cols, vals = [], [], []
        for row_of, part in ((row_p, "real"), (row_q, "imag")):
            for col_of, d in ((col_a, dva), (col_m, dvm)):
                keep = (row_of[rr] >= 0) & (col_of[cc] >= 0)
                rows.append(row_of[rr[keep]])
                cols.append(col_of[cc[keep]])
                vals.append(getattr(d[keep], part))
        n = npvpq + len(pq)
        jac = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                            shape=(n, n))
        with np.errstate(all="ignore"):
            dx = spsolve(jac, -f)
        if not np.all(np.isfinite(dx)):
            return None
        va, vmag = np.angle(v), np.abs(v)
        va[pvpq] += dx[:npvpq]
        vmag[pq] += dx[npvpq:]
        v = vmag * np.exp(1j * va)
    return None
