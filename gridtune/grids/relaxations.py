"""Convex relaxations of the AC-OPF in cvxpy: second-order cone (SOC), SOC with cycle cuts, and
chordal SDP.

All lift the voltages to `W = V V^H` and keep, of the rank-one condition, only a convex part:
SOC keeps `|W_ij|^2 <= W_ii W_jj` per branch (Jabr, "Radial distribution load flow using conic
programming", IEEE Trans. Power Systems 21(3), 2006); the SDP keeps `W >= 0` (PSD) on the cliques
of a chordal extension of the grid graph, which is equivalent to the full-matrix SDP of Lavaei
and Low ("Zero duality gap in optimal power flow problems", IEEE Trans. Power Systems 27(1), 2012)
by the matrix-completion theorem (Grone et al. 1984; Molzahn et al., "Implementation of a
large-scale optimal power flow solver based on semidefinite programming", IEEE TPS 28(4), 2013).
Between them, the cycle relaxation keeps SOC and adds `W >= 0` on the triangles of a
triangulated cycle basis, a minimum one where that is cheap (3x3 PSD cuts on the grid's cycles,
after Kocuk, Dey and Sun, "Strong SOCP relaxations for the optimal power flow problem", Operations Research 64(6), 2016):
SOC says nothing about angles summing to zero around a cycle, and that is where it is loose on
meshed, line-limited grids. Every triangle is a principal submatrix of `V V^H`, so the cuts are
valid; small cones keep it cheaper than the chordal SDP (case118: ~0.25 s against 0.35-0.5 s).

Every constraint of the AC-OPF holds for `W = V V^H` of any AC-feasible point, so:
    relaxation infeasible  =>  AC-OPF infeasible (a certificate), and
    relaxation optimum     <=  AC-OPF optimum (a lower bound).

The branch model is exactly PYPOWER's (taps, phase shifts, line charging, bus shunts): each
branch's four admittances are read from `makeYbus`. Branch limits are pandapower's current limits
(`OPF_FLOW_LIM = 2`): `|I_f|^2 <= rate^2` is written `P_f^2 + Q_f^2 <= rate^2 W_ff`, exact in `W`;
a grid with MATPOWER's apparent-power limits gets `P_f^2 + Q_f^2 <= rate^2`.

Each problem is built once per grid with `cp.Parameter`s for loads, branch / generator in-service
status and cost scales (DPP), and re-solved per scenario with Clarabel.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import cvxpy as cp
import networkx as nx
import numpy as np
import scipy.sparse as sp
from pandapower.pypower.idx_brch import branch_cols

from gridtune.grids.farkas import FarkasRays
from gridtune.grids.model import GridModel
from gridtune.grids.scenarios import Scenario, dispatch_values, set_dispatch_parameters

CERTIFIED_INFEASIBLE = {cp.INFEASIBLE}  # "infeasible_inaccurate" is not a certificate
# Clarabel's optimality tolerances for the cycle relaxation. At its defaults (1e-8) it stopped
# `optimal_inaccurate` on every one of 112 AC-feasible case118 recipe scenarios. At 1e-7, on the
# shipped case118 recipe: 398 of 400 AC-feasible scenarios `optimal` (2 inaccurate, none
# infeasible); of the 212 that both AC solvers failed, 112 certified infeasible, 7 inaccurate,
# 0.33 s each. Infeasibility tolerances stay Clarabel's.
# The chordal SDP uses them too: on 61 case57 recipe scenarios both AC solvers failed, 39 end
# `optimal` (a valid bound) instead of `optimal_inaccurate`, the same 3 certified infeasible.
CYCLE_SOLVER_OPTIONS = {"tol_feas": 1e-7, "tol_gap_abs": 1e-7, "tol_gap_rel": 1e-7}


@dataclasses.dataclass
class RelaxationResult:
    """Outcome of one relaxation solve.

    Attributes:
        status: `"optimal"`, `"infeasible"` (certified) or the solver's status otherwise
            (e.g. `"optimal_inaccurate"`, `"infeasible_inaccurate"`, `"solver_error"`).
        objective: lower bound on the AC-OPF cost in $/h (NaN unless optimal).
        vm_pu: sqrt(W_ii) per bus (n_bus,), None unless optimal.
        pg_mw, qg_mvar: generator dispatch (n_gen,), None unless optimal.
        solve_time_s: wall time (parameter update + solve).
    """

    status: str
    objective: float
    vm_pu: np.ndarray | None
    pg_mw: np.ndarray | None
    qg_mvar: np.ndarray | None
    solve_time_s: float

    @property
    def infeasible(self) -> bool:
        return self.status in CERTIFIED_INFEASIBLE


def branch_admittances(grid: GridModel) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-branch (y_ff, y_ft, y_tf, y_tt) in p.u., PYPOWER's pi model (taps, shifts, charging)."""
    from pandapower.pypower.makeYbus import makeYbus

    branch = grid.ppc["branch"].copy()
    if branch.shape[1] < branch_cols:
        branch = np.c_[branch, np.zeros((branch.shape[0], branch_cols - branch.shape[1]))]
    branch[:, 10] = 1  # every branch in service: outages are a Parameter
    _, yf, yt = makeYbus(grid.base_mva, grid.ppc["bus"], branch)
    yf, yt = sp.csr_matrix(yf), sp.csr_matrix(yt)
    k = np.arange(grid.n_branch)
    f, t = grid.f_bus, grid.t_bus
    return (np.asarray(yf[k, f]).ravel(), np.asarray(yf[k, t]).ravel(),
            np.asarray(yt[k, f]).ravel(), np.asarray(yt[k, t]).ravel())


class _Relaxation:
    """The lifted AC-OPF shared by SOC and SDP; subclasses add the cone on `W`."""

    name = "relaxation"
    solver_options: dict[str, float] = {}

    def __init__(self, grid: GridModel, pairs: list[tuple[int, int]]):
        self.grid = grid
        nb, nl, ng = grid.n_bus, grid.n_branch, grid.n_gen
        base = grid.base_mva
        self.pairs = pairs
        pair_index = {p: i for i, p in enumerate(pairs)}
        npair = len(pairs)

        # ---- parameters (values set per scenario) ----
        self.pd = cp.Parameter(nb, name="pd_pu")
        self.qd = cp.Parameter(nb, name="qd_pu")
        self.branch_on = cp.Parameter(nl, nonneg=True, name="branch_on")
        self.pmin = cp.Parameter(ng, name="pmin_pu")
        self.pmax = cp.Parameter(ng, name="pmax_pu")
        self.qmin = cp.Parameter(ng, name="qmin_pu")
        self.qmax = cp.Parameter(ng, name="qmax_pu")
        self.c2 = cp.Parameter(ng, nonneg=True, name="c2")
        self.c1 = cp.Parameter(ng, name="c1")
        self.c0 = cp.Parameter(ng, name="c0")
        self.w_min = cp.Parameter(nb, nonneg=True, name="w_min")
        self.w_max = cp.Parameter(nb, nonneg=True, name="w_max")

        # ---- variables ----
        self.w = cp.Variable(nb, name="w")          # |V_i|^2
        self.wr = cp.Variable(npair, name="wr")     # Re(V_i conj(V_j)), i < j
        self.wi = cp.Variable(npair, name="wi")     # Im(V_i conj(V_j)), i < j
        self.pg = cp.Variable(ng, name="pg_pu")
        self.qg = cp.Variable(ng, name="qg_pu")
        cost_epi = cp.Variable(ng, name="pg_sq")

        # ---- branch flows, linear in (w, wr, wi): S_f = conj(y_ff) w_f + conj(y_ft) W_ft ----
        yff, yft, ytf, ytt = branch_admittances(grid)
        f, t = grid.f_bus, grid.t_bus
        rows = np.arange(nl)
        pidx = np.array([pair_index[(min(a, b), max(a, b))] for a, b in zip(f, t, strict=False)])
        sign = np.where(f < t, 1.0, -1.0)  # W_ft = conj(W_tf) when f > t

        def lin(coef_w: np.ndarray, bus: np.ndarray, cr: np.ndarray, ci: np.ndarray) -> cp.Expression:
            mw = sp.csr_matrix((coef_w, (rows, bus)), shape=(nl, nb))
            mr = sp.csr_matrix((cr, (rows, pidx)), shape=(nl, npair))
            mi = sp.csr_matrix((ci, (rows, pidx)), shape=(nl, npair))
            return mw @ self.w + mr @ self.wr + mi @ self.wi

        # conj(a) (wr + j s wi) = (ar wr + s ai wi) + j (s ar wi - ai wr)
        pf = lin(yff.real, f, yft.real, sign * yft.imag)
        qf = lin(-yff.imag, f, -yft.imag, sign * yft.real)
        # S_t = conj(y_tt) w_t + conj(y_tf) conj(W_ft): same with s -> -s
        pt = lin(ytt.real, t, ytf.real, -sign * ytf.imag)
        qt = lin(-ytt.imag, t, -ytf.imag, -sign * ytf.real)
        pf, qf = cp.multiply(self.branch_on, pf), cp.multiply(self.branch_on, qf)
        pt, qt = cp.multiply(self.branch_on, pt), cp.multiply(self.branch_on, qt)

        a_f = sp.csr_matrix((np.ones(nl), (f, rows)), shape=(nb, nl))
        a_t = sp.csr_matrix((np.ones(nl), (t, rows)), shape=(nb, nl))
        c_g = sp.csr_matrix((np.ones(ng), (grid.gen_bus, np.arange(ng))), shape=(nb, ng))
        gs, bs = grid.gs_mw / base, grid.bs_mvar / base
        self.cost_cone = cp.SOC(cost_epi + 1, cp.vstack([2 * self.pg, cost_epi - 1]))

        cons = [
            c_g @ self.pg - self.pd - cp.multiply(gs, self.w) == a_f @ pf + a_t @ pt,
            c_g @ self.qg - self.qd + cp.multiply(bs, self.w) == a_f @ qf + a_t @ qt,
            self.w >= self.w_min, self.w <= self.w_max,
            self.pg >= self.pmin, self.pg <= self.pmax,
            self.qg >= self.qmin, self.qg <= self.qmax,
            # pg^2 <= epi  <=>  ||(2 pg, epi - 1)|| <= epi + 1
            self.cost_cone,
        ]
        rate = grid.rate_a_mva / base
        lim = np.flatnonzero((rate > 0) & (rate < 1e10 / base))
        if lim.size:
            r2 = rate[lim] ** 2
            w_f = self.w[f[lim]]
            w_t = self.w[t[lim]]
            if grid.apparent_power_limits:  # MATPOWER: |S|^2 = P^2 + Q^2 <= r^2
                cons.append(cp.SOC(rate[lim], cp.vstack([pf[lim], qf[lim]])))
                cons.append(cp.SOC(rate[lim], cp.vstack([pt[lim], qt[lim]])))
            else:
                # |I|^2 <= r^2 <=> P^2 + Q^2 <= r^2 w  <=> ||(2P, 2Q, w - r^2)|| <= w + r^2
                cons.append(cp.SOC(w_f + r2, cp.vstack([2 * pf[lim], 2 * qf[lim], w_f - r2])))
                cons.append(cp.SOC(w_t + r2, cp.vstack([2 * pt[lim], 2 * qt[lim], w_t - r2])))
        cons += self._angle_limits(pidx, sign)
        cons += self._cone(pair_index)
        objective = cp.Minimize(self.c2 @ cost_epi + self.c1 @ self.pg + cp.sum(self.c0))
        self.problem = cp.Problem(objective, cons)

        # cost polynomials in p.u. of power: c2 MW^2 -> c2 base^2 pu^2
        self._cost = grid.gen_cost() * np.array([base ** 2, base, 1.0])
        self._rays: FarkasRays | None = None  # from infeasible solves, kept from the first one

    def _angle_limits(self, pidx: np.ndarray, sign: np.ndarray) -> list[cp.Constraint]:
        """Branch angle-difference limits, where a grid sets them tighter than +-90 degrees.

        `theta_min <= angle(W_ft) <= theta_max` is `wi <= tan(theta_max) wr` etc. for wr >= 0;
        an outaged branch drops it (big-M on the status parameter).
        """
        g = self.grid
        # MATPOWER: a bound of 0 means no bound (`makeAang`), not a limit of 0 degrees
        lo = np.where(g.min_angle_degree == 0, -360.0, g.min_angle_degree)
        hi = np.where(g.max_angle_degree == 0, 360.0, g.max_angle_degree)
        k = np.flatnonzero((np.abs(lo) < 90) | (np.abs(hi) < 90))
        if k.size == 0:
            return []
        big = 10.0  # |W_ij| <= vmax^2 < 2, so 10 never binds
        off = 1 - self.branch_on[k]
        wr, wi = self.wr[pidx[k]], cp.multiply(sign[k], self.wi[pidx[k]])
        tan_hi = np.tan(np.deg2rad(np.clip(hi[k], -89.9, 89.9)))
        tan_lo = np.tan(np.deg2rad(np.clip(lo[k], -89.9, 89.9)))
        return [wi - cp.multiply(tan_hi, wr) <= big * off, cp.multiply(tan_lo, wr) - wi <= big * off,
                wr >= -big * off]

    def _cone(self, pair_index: dict[tuple[int, int], int]) -> list[cp.Constraint]:
        raise NotImplementedError

    def _set(self, scenario: Scenario, margin: float) -> None:
        g, base = self.grid, self.grid.base_mva
        vm_band = margin * (g.max_vm_pu - g.min_vm_pu)
        self.w_min.value = (g.min_vm_pu + vm_band) ** 2
        self.w_max.value = (g.max_vm_pu - vm_band) ** 2
        values = dispatch_values(g, scenario, self._cost)
        set_dispatch_parameters(self, values)
        self.qd.value = np.asarray(scenario.qd_mvar, dtype=float) / base
        gon = values["gen_on"]
        q_band = margin * np.maximum(g.max_q_mvar - g.min_q_mvar, 0.0)
        self.qmin.value = gon * (g.min_q_mvar + q_band) / base
        self.qmax.value = gon * (g.max_q_mvar - q_band) / base

    def solve(self, scenario: Scenario, *, margin: float = 0.0) -> RelaxationResult:
        """Solve for `scenario`; raises on non-finite scenario data (cvxpy rejects NaN values).

        A scenario that a ray of an earlier infeasible solve proves infeasible (`farkas.py`) is
        answered `"infeasible"` without a solve; the rays of infeasible solves are kept.

        Args:
            scenario: loads, outages and cost scales.
            margin: shrink the voltage and generator Q ranges by this fraction of their width
                on each side (default: 0, the true relaxation). A margin > 0 gives a restricted
                problem, no longer a relaxation: use it only to find points to recover, never
                to certify anything.
        """
        start = time.perf_counter()
        self._set(scenario, margin)
        options = dict(self.solver_options)
        data, chain, inverse = self.problem.get_problem_data(cp.CLARABEL, solver_opts=options)
        box = self._box(inverse, data["A"].shape[1])
        if self._rays is not None and self._rays.certifies(data["A"], data["b"], *box):
            return RelaxationResult(cp.INFEASIBLE, float("nan"), None, None, None,
                                    time.perf_counter() - start)
        try:
            raw = chain.solve_via_data(self.problem, data, False, False, options)
            self.problem.unpack_results(raw, chain, inverse)
        except cp.SolverError as exc:
            return RelaxationResult(f"solver_error: {exc}", float("nan"), None, None, None,
                                    time.perf_counter() - start)
        status = self.problem.status
        elapsed = time.perf_counter() - start
        if status == cp.INFEASIBLE:
            if self._rays is None:
                self._rays = FarkasRays(data["dims"])
            self._rays.remember(np.asarray(raw.z), data["A"], data["b"], *box)
        if status != cp.OPTIMAL:
            return RelaxationResult(status, float("nan"), None, None, None, elapsed)
        base = self.grid.base_mva
        return RelaxationResult(status, float(self.problem.value),
                                np.sqrt(np.maximum(self.w.value, 0.0)), self.pg.value * base,
                                self.qg.value * base, elapsed)

    @property
    def settled_by_rays(self) -> int:
        """How many scenarios a kept Farkas ray proved infeasible without a solve."""
        return 0 if self._rays is None else self._rays.hits

    def known_infeasible(self, scenario: Scenario) -> bool:
        """True if a ray kept from an earlier infeasible solve proves `scenario` infeasible
        (a matrix product, no solve; False before the first infeasible solve)."""
        if self._rays is None:
            return False
        self._set(scenario, 0.0)
        data, _, inverse = self.problem.get_problem_data(cp.CLARABEL)
        return self._rays.certifies(data["A"], data["b"], *self._box(inverse, data["A"].shape[1]))

    def _box(self, inverse: list, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Bounds on the solver's variables that every feasible point of the current problem
        meets (its own limits on w, pg, qg; |W_ij| <= sqrt(w_i w_j) <= max w for every pair, as
        each pair lies in an SOC cone or a PSD clique); other variables unbounded."""
        offsets = next(d.var_offsets for d in reversed(inverse) if hasattr(d, "var_offsets"))
        lower, upper = np.full(n, -np.inf), np.full(n, np.inf)
        w_top = float(np.max(self.w_max.value))
        for var, lo, hi in ((self.w, self.w_min.value, self.w_max.value),
                            (self.pg, self.pmin.value, self.pmax.value),
                            (self.qg, self.qmin.value, self.qmax.value),
                            (self.wr, -w_top, w_top), (self.wi, -w_top, w_top)):
            at = offsets[var.id]
            lower[at: at + var.size], upper[at: at + var.size] = lo, hi
        return lower, upper


class SocRelaxation(_Relaxation):
    """Second-order cone relaxation of the AC-OPF (Jabr 2006), built once per grid.

    Args:
        grid: the grid (not modified).

    Example:
        >>> soc = SocRelaxation(grid); res = soc.solve(scenario); res.infeasible, res.objective
    """

    name = "soc"

    def __init__(self, grid: GridModel):
        pairs = sorted({(min(a, b), max(a, b)) for a, b in zip(grid.f_bus, grid.t_bus, strict=False)})
        super().__init__(grid, pairs)

    def _cone(self, pair_index: dict[tuple[int, int], int]) -> list[cp.Constraint]:
        i = np.array([p[0] for p in self.pairs])
        j = np.array([p[1] for p in self.pairs])
        wi_, wj_ = self.w[i], self.w[j]
        # wr^2 + wi^2 <= w_i w_j  <=>  ||(2 wr, 2 wi, w_i - w_j)|| <= w_i + w_j
        return [cp.SOC(wi_ + wj_, cp.vstack([2 * self.wr, 2 * self.wi, wi_ - wj_]))]


def grid_graph(grid: GridModel) -> nx.Graph:
    """The grid's buses and branches as an undirected graph (parallel branches count once, no
    self-loops), buses 0..n-1 in order."""
    g = nx.Graph()
    g.add_nodes_from(range(grid.n_bus))
    g.add_edges_from((int(a), int(b)) for a, b in zip(grid.f_bus, grid.t_bus, strict=False) if a != b)
    return g


def chordal_cliques(grid: GridModel) -> tuple[list[tuple[int, int]], list[list[int]]]:
    """Edges of a chordal extension of the grid graph and its maximal cliques (sorted buses).

    The extension fills in along networkx's minimum-fill elimination order
    (`treewidth_min_fill_in`): each eliminated bus's remaining neighbours become a clique. Its
    cliques are far smaller than those of the minimal extension networkx's `complete_to_chordal_graph`
    finds (largest clique case57 6 against 9, case118 5 against 8, case300 8 against 15); every
    chordal extension gives the same relaxation (matrix completion), so only the cost changes:
    the SDP solves in 0.28 s instead of 2.0 s on case57 recipe scenarios.
    """
    import itertools

    from networkx.algorithms.approximation import treewidth_min_fill_in

    g = grid_graph(grid)
    _, decomposition = treewidth_min_fill_in(g)
    h = g.copy()
    for bag in decomposition.nodes:  # a bag: an eliminated bus and its neighbours at that moment
        h.add_edges_from(itertools.combinations(bag, 2))
    cliques = sorted(sorted(c) for c in nx.chordal_graph_cliques(h))
    edges = sorted({(min(a, b), max(a, b)) for a, b in h.edges()})
    return edges, cliques


class SdpRelaxation(_Relaxation):
    """Chordal SDP relaxation of the AC-OPF (Lavaei & Low 2012; Molzahn et al. 2013).

    `W` is PSD on each maximal clique of a chordal extension of the grid graph, written as the
    real matrix `[[Re W_C, -Im W_C], [Im W_C, Re W_C]] >= 0` (size 2|C|), with the entries shared
    across cliques. Tighter than SOC (it implies every 2x2 minor), slower.

    Args:
        grid: the grid (not modified).
    """

    name = "sdp"
    solver_options = CYCLE_SOLVER_OPTIONS

    def __init__(self, grid: GridModel):
        edges, self.cliques = chordal_cliques(grid)
        super().__init__(grid, edges)

    def _cone(self, pair_index: dict[tuple[int, int], int]) -> list[cp.Constraint]:
        return clique_psd(self, self.cliques, pair_index, tied=True)


# Above this cycle rank (branches - buses + components) the cycle basis is `short_cycle_basis`:
# networkx's minimum cycle basis takes 1.0-1.4 s on case118 (rank 62), 11-15 s on case300 (110)
# and grows about as rank^2 x buses (extrapolated: an hour or more on a 2000-bus grid, rank 668);
# below it, `minimum_cycle_basis` keeps each grid's on disk.
EXACT_BASIS_MAX_RANK = 150


def triangulated_cycles(grid: GridModel) -> list[list[int]]:
    """Triangles (sorted bus triples) that fan-triangulate each cycle of a cycle basis of the grid
    graph (parallel branches count once); a triangle's third side may be a chord. The basis is a
    minimum one up to `EXACT_BASIS_MAX_RANK` (kept on disk: `minimum_cycle_basis`),
    `short_cycle_basis` above."""
    g = grid_graph(grid)
    rank = g.number_of_edges() - g.number_of_nodes() + nx.number_connected_components(g)
    basis = minimum_cycle_basis(g) if rank <= EXACT_BASIS_MAX_RANK else short_cycle_basis(g)
    triangles: set[tuple[int, ...]] = set()
    for cycle in basis:
        ring = _cycle_order(g, cycle)
        for k in range(1, len(ring) - 1):
            triangles.add(tuple(sorted((ring[0], ring[k], ring[k + 1]))))
    return [list(t) for t in sorted(triangles)]


def minimum_cycle_basis(g: nx.Graph) -> list[list[int]]:
    """networkx's minimum cycle basis of `g`, computed once per graph and networkx version and
    kept under `$GRIDTUNE_CACHE/cycles/` (10.6 s on case300, paid again by every labelling
    worker otherwise). A file that cannot be read is computed again; one that cannot be written
    costs only the time."""
    import json

    from gridtune.files import atomic_write_text, json_digest
    from gridtune.grids.cases import cache_root

    # nodes and edges in the graph's own order, which networkx's result (and the order of each
    # cycle's buses, which `_cycle_order` starts from) follows
    graph = [list(map(int, g.nodes)), [[int(u), int(v)] for u, v in g.edges]]
    digest = json_digest([nx.__version__, graph])
    path = cache_root() / "cycles" / f"{digest[:24]}.json"
    try:
        basis = json.loads(path.read_text())
        if isinstance(basis, list) and all(isinstance(c, list) and all(isinstance(u, int) for u in c)
                                           for c in basis):
            return basis
    except (OSError, ValueError):
        pass
    basis = [[int(u) for u in cycle] for cycle in nx.minimum_cycle_basis(g)]
    try:
        atomic_write_text(path, json.dumps(basis))
    except OSError:
        pass
    return basis


def short_cycle_basis(g: nx.Graph) -> list[list[int]]:
    """A cycle basis of short cycles, each a list of buses in ring order (0.05 s on a 2000-bus grid).

    Candidates: for every edge, the edge closed by the shortest path between its ends that avoids
    it (networkx's breadth-first `shortest_path`); then the fundamental cycles of a breadth-first
    spanning tree, which alone span the cycle space. Taken shortest first while independent of those taken (Gaussian
    elimination over GF(2) on edge-incidence bit vectors), this is the minimum-length basis among
    the candidates (a matroid's greedy); on case14 and case30 it equals networkx's minimum one.
    """
    adj = {u: sorted(g.neighbors(u)) for u in sorted(g.nodes)}
    edges = sorted((min(u, v), max(u, v)) for u, v in g.edges)
    bit = {e: 1 << i for i, e in enumerate(edges)}
    rank = len(edges) - len(adj) + nx.number_connected_components(g)
    candidates = _detours(g, edges) + _fundamental_cycles(adj)
    candidates.sort(key=lambda ring: (len(ring), ring))
    pivots: dict[int, int] = {}
    basis: list[list[int]] = []
    for ring in candidates:
        v = 0
        for a, b in zip(ring, ring[1:] + ring[:1]):
            v ^= bit[(min(a, b), max(a, b))]
        while v:
            top = v.bit_length() - 1
            if top not in pivots:
                pivots[top] = v
                basis.append(ring)
                break
            v ^= pivots[top]
        if len(basis) == rank:
            break
    return basis


def _detours(g: nx.Graph, edges: list[tuple[int, int]]) -> list[list[int]]:
    """For each edge that is not a bridge, the ring it closes with the shortest path between its
    ends that avoids it."""
    h = g.copy()
    rings = []
    for a, b in edges:
        h.remove_edge(a, b)
        try:
            rings.append(nx.shortest_path(h, a, b))
        except nx.NetworkXNoPath:
            pass
        h.add_edge(a, b)
    return rings


def _fundamental_cycles(adj: dict[int, list[int]]) -> list[list[int]]:
    """The cycle each non-tree edge closes in a breadth-first spanning forest."""
    parent: dict[int, int] = {}
    depth: dict[int, int] = {}
    for root in adj:
        if root not in parent:
            tree, queue = {root: root}, [root]
            for u in queue:  # the list grows while it is read: breadth first
                for w in adj[u]:
                    if w not in tree:
                        tree[w] = u
                        queue.append(w)
            for u in tree:  # insertion order is breadth first: a parent's depth is known
                depth[u] = 0 if u == root else depth[tree[u]] + 1
            parent.update(tree)
    rings = []
    for u in adj:
        for w in adj[u]:
            if u < w and parent[u] != w and parent[w] != u:
                left, right = [u], [w]
                while left[-1] != right[-1]:
                    if depth[left[-1]] >= depth[right[-1]]:
                        left.append(parent[left[-1]])
                    else:
                        right.append(parent[right[-1]])
                rings.append(left + right[-2::-1])
    return rings


def _cycle_order(g: nx.Graph, cycle: list[int]) -> list[int]:
    """The buses of `cycle` in the order its edges join them (networkx does not promise one)."""
    ring = g.subgraph(cycle)
    if all(d == 2 for _, d in ring.degree()):
        return [u for u, _ in nx.find_cycle(ring, source=cycle[0])]
    # a chord among the cycle's buses: walk the cycle's own edges, which networkx lists in order
    # whenever consecutive entries are adjacent
    if all(g.has_edge(cycle[i], cycle[(i + 1) % len(cycle)]) for i in range(len(cycle))):
        return list(cycle)
    raise ValueError(f"cannot order the cycle {cycle} of the grid graph")


class CycleRelaxation(_Relaxation):
    """SOC relaxation strengthened by PSD cuts on the grid's cycles (see the module docstring).

    Certifies infeasibility where SOC cannot at a fraction of the chordal SDP's cost: on the
    shipped case118 recipe it settled half of the scenarios that both AC solvers failed and SOC
    left open, ~0.3 s each, and called none of 400 AC-feasible scenarios infeasible
    (`benchmarks/bench_certificates.py`, docs/data.md).

    Args:
        grid: the grid (not modified).
    """

    name = "cycles"
    solver_options = CYCLE_SOLVER_OPTIONS

    def __init__(self, grid: GridModel):
        self.cliques = triangulated_cycles(grid)
        pairs = {(min(a, b), max(a, b)) for a, b in zip(grid.f_bus, grid.t_bus, strict=False)}
        pairs |= {(c[a], c[b]) for c in self.cliques for a in range(3) for b in range(a + 1, 3)}
        super().__init__(grid, sorted(pairs))

    def _cone(self, pair_index: dict[tuple[int, int], int]) -> list[cp.Constraint]:
        return SocRelaxation._cone(self, pair_index) + clique_psd(self, self.cliques, pair_index)


def clique_psd(relaxation: _Relaxation, cliques: list[list[int]],
               pair_index: dict[tuple[int, int], int], *, tied: bool = False) -> list[cp.Constraint]:
    """`W_C >= 0` on each clique C (sorted buses), over the relaxation's shared (w, wr, wi).

    Written as the real matrix `[[Re W_C, -Im W_C], [Im W_C, Re W_C]] >= 0` (size 2|C|). Two
    forms of the same constraint:
    - affine (default): the matrix is an affine expression of the shared variables (one sparse
      map for all cliques), so the cone needs no variables or equality rows of its own. On
      case118's cycle relaxation: half the time and about 40% fewer Clarabel iterations than the
      tied form, same optima to 1e-5.
    - tied (`tied=True`, the chordal SDP's): one PSD variable per clique whose upper-triangle
      entries are tied to the shared variables exactly once, so the equalities stay linearly
      independent (tying the full matrix duplicates every equality and made Clarabel fail). The
      SDP keeps it: at Clarabel's default tolerances the affine form ended `optimal_inaccurate` on
      case30's nominal scenario, and the SDP's certificates stay those of datasets built with it.
    """
    if tied:
        return _tied_psd(relaxation, cliques, pair_index)
    nb, npair = relaxation.grid.n_bus, len(relaxation.pairs)
    z = cp.hstack([relaxation.w, relaxation.wr, relaxation.wi])  # (nb + 2 npair,)
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    sizes = []
    offset = 0
    for clique in cliques:
        k = len(clique)
        size = 2 * k

        def put(r: int, c: int, col: int, v: float, offset=offset, size=size) -> None:
            rows.append(offset + c * size + r)  # column-major position in the clique's matrix
            cols.append(col)
            vals.append(v)

        for a, i in enumerate(clique):
            put(a, a, i, 1.0)
            put(k + a, k + a, i, 1.0)
            for b in range(a + 1, k):
                p = pair_index[(i, clique[b])]
                for r, c in ((a, b), (b, a), (k + a, k + b), (k + b, k + a)):
                    put(r, c, nb + p, 1.0)                 # Re W_ab in both diagonal blocks
                for r, c, v in ((k + a, b, 1.0), (b, k + a, 1.0), (k + b, a, -1.0), (a, k + b, -1.0)):
                    put(r, c, nb + npair + p, v)           # Im W_ab = -Im W_ba, off-diagonal blocks
        sizes.append(size)
        offset += size * size
    flat = sp.csr_matrix((vals, (rows, cols)), shape=(offset, nb + 2 * npair)) @ z
    cons = []
    offset = 0
    for size in sizes:
        cons.append(cp.reshape(flat[offset: offset + size * size], (size, size), order="F") >> 0)
        offset += size * size
    return cons


def _tied_psd(relaxation: _Relaxation, cliques: list[list[int]],
              pair_index: dict[tuple[int, int], int]) -> list[cp.Constraint]:
    nb, npair = relaxation.grid.n_bus, len(relaxation.pairs)
    z = cp.hstack([relaxation.w, relaxation.wr, relaxation.wi])  # (nb + 2 npair,)
    cons = []
    for clique in cliques:
        k = len(clique)
        x = cp.Variable((2 * k, 2 * k), PSD=True)
        ent_r: list[int] = []
        ent_c: list[int] = []
        links: list[tuple[int, int, float]] = []  # (entry, column of z, coefficient)

        def tie(r: int, c: int, col: int | None, v: float = 1.0, ent_r=ent_r, ent_c=ent_c,
                links=links) -> None:
            ent_r.append(r)
            ent_c.append(c)
            if col is not None:
                links.append((len(ent_r) - 1, col, v))

        for a, i in enumerate(clique):
            tie(a, a, i)
            tie(k + a, k + a, i)
            tie(a, k + a, None)                      # Im W_aa = 0
            for b in range(a + 1, k):
                p = pair_index[(i, clique[b])]
                tie(a, b, nb + p)                    # Re W_ab
                tie(k + a, k + b, nb + p)
                tie(a, k + b, nb + npair + p, -1.0)  # upper-right block is -Im W
                tie(b, k + a, nb + npair + p, 1.0)   # -Im W_ba = Im W_ab
        rows, cols, vals = (list(x) for x in zip(*links, strict=True))
        m = sp.csr_matrix((vals, (rows, cols)), shape=(len(ent_r), nb + 2 * npair))
        cons.append(x[np.array(ent_r), np.array(ent_c)] == m @ z)
    return cons


# Bound tightening. Bound problems near the boundary have thin feasible sets on which Clarabel
# mostly stops `AlmostSolved` (gap ~1e-5 at the cycle relaxation's tolerances), so a bound is
# taken from the smaller of its primal and dual objectives and widened by this margin (p.u. of
# W; for an angle bound it enters `F`, about 1e-4 rad) before use.
BOUND_MARGIN = 1e-4
OBBT_PASSES = 4          # rounds of bound problems (each round re-tightens from the last bounds)
OBBT_RATIO_STEPS = 1     # Dinkelbach steps per angle bound and round
OBBT_VOLTAGE_ROUNDS = 1  # rounds that also tighten the voltage bounds (the first ones)
OBBT_WIDENING = (1e-3, 1e-2)  # bounds widened by these (p.u. / rad) after a numerical failure
OBBT_SETTLED = 1e-4      # stop once no bound moved by more than this in a round (p.u. / rad)


@dataclasses.dataclass
class Bounds:
    """Bounds valid for every AC-feasible point of one scenario.

    Attributes:
        w_lo, w_hi: (n_bus,) bounds on |V_i|^2.
        th_lo, th_hi: (n_pair,) bounds on the angle of W_ij = V_i conj(V_j) (radians), for the
            pairs where `known`; elsewhere unbounded.
        known: (n_pair,) which angle bounds hold (their width is below pi).
    """

    w_lo: np.ndarray
    w_hi: np.ndarray
    th_lo: np.ndarray
    th_hi: np.ndarray
    known: np.ndarray


class BoundTightenedRelaxation(CycleRelaxation):
    """The cycle relaxation strengthened by optimization-based bound tightening (OBBT), for
    infeasibility certificates.

    Bounds on each |V_i|^2 and on the angle of each branch's `W_ij` are tightened by minimising
    and maximising them over the relaxation itself (each bound problem is the relaxation with a
    linear objective, so every AC-feasible point stays inside), and re-imposed as constraints:
    the box on `W_ii`, a wedge `theta_lo <= angle(W_ij) <= theta_hi` (two half-planes through
    the origin) and the two lifted nonlinear cuts that voltage and angle bounds imply together
    (Coffrin, Hijazi and Van Hentenryck, "Strengthening the SDP relaxation of AC power flows
    with convex envelopes, bound tightening, and valid inequalities", IEEE Trans. Power Systems
    32(5), 2017): with `v^s = v^l + v^u`, `phi` and `delta` the mid-angle and half-width,

        v^s_i v^s_j (cos(phi) Re W_ij + sin(phi) Im W_ij) - v^u_j cos(delta) v^s_j W_ii
            - v^u_i cos(delta) v^s_i W_jj >= v^u_i v^u_j cos(delta) (v^l_i v^l_j - v^u_i v^u_j)

    and the same with `v^l` for `v^u` and the right-hand side negated. Tighter bounds make a
    tighter relaxation and the next round tightens further.

    Validity. Each bound only needs to hold for AC-feasible points, which lie in every
    relaxation of the round. A voltage bound is a bound problem's optimum widened by
    `BOUND_MARGIN`. Angle bounds: a first round bounds `Re W_ij` from below; where that is
    positive, `cos angle >= min Re W_ij / (v^u_i v^u_j)` gives a wedge narrower than pi. Later
    rounds rotate by the wedge's mid-angle `phi` (`u + j s = W_ij e^{-j phi}`) and maximise
    `s - t u` (Dinkelbach's step for the largest `s / u`, from `t = 0`) to `F`; an AC point
    has `|W_ij| = v_i v_j` and relative angle `a` with `s - t u = v_i v_j sqrt(1 + t^2)
    sin(a - atan t) <= F`, so `a <= atan t + asin(F / (v_i v_j sqrt(1 + t^2)))` with the
    voltages at their bounds. These bounds hold for AC points, not for every point of the
    relaxation (which need not have `|W_ij| = v_i v_j`); that is all a certificate needs.

    Certificate: only Clarabel's `PrimalInfeasible` on the relaxation with valid bounds (or on
    one of its bound problems, which share its constraints) counts; `AlmostPrimalInfeasible`
    and numerical failures certify nothing. After a numerical failure the bounds are widened
    by `OBBT_WIDENING` (still valid) and the feasibility solve retried.

    The bound problems of a block share one compiled problem solved by Clarabel directly (one
    solver; only the objective vector changes). On pandapower's case30, one Clarabel solve
    takes about 25 ms, a scenario about 190 to 350 of them (rounds: voltages and the first
    angle wedge, then one maximisation per angle side).

    Args:
        grid: the grid (not modified).
        passes: rounds of bound tightening (default: `OBBT_PASSES`).
        ratio_steps: Dinkelbach steps per angle bound and round (default: `OBBT_RATIO_STEPS`).
        voltage_rounds: the first rounds that also tighten voltage bounds (default:
            `OBBT_VOLTAGE_ROUNDS`).
    """

    name = "obbt"

    def __init__(self, grid: GridModel, *, passes: int = OBBT_PASSES,
                 ratio_steps: int = OBBT_RATIO_STEPS, voltage_rounds: int = OBBT_VOLTAGE_ROUNDS):
        self.passes, self.ratio_steps, self.voltage_rounds = passes, ratio_steps, voltage_rounds
        super().__init__(grid)
        # without the cost's epigraph, whose free direction would leave every bound problem's
        # optimal set unbounded (Clarabel then stops `AlmostSolved`)
        self.feasibility = cp.Problem(cp.Minimize(0), [c for c in self.problem.constraints
                                                       if c is not self.cost_cone])
        branch_pairs = {(min(a, b), max(a, b)) for a, b in zip(grid.f_bus, grid.t_bus, strict=False)
                        if a != b}
        self.tightened = np.array([k for k, p in enumerate(self.pairs) if p in branch_pairs])
        self.last_bounds: Bounds | None = None
        self.rounds = self.solves = 0  # of the last `tighten`: rounds run, conic solves

    def _cone(self, pair_index: dict[tuple[int, int], int]) -> list[cp.Constraint]:
        cons = super()._cone(pair_index)
        n = len(self.pairs)
        i = np.array([p[0] for p in self.pairs])
        j = np.array([p[1] for p in self.pairs])
        names = ("hi_c", "hi_s", "lo_c", "lo_s", "kr", "ki", "a1", "b1", "e1", "a2", "b2", "e2")
        self.cut = {k: cp.Parameter(n, name=f"cut_{k}") for k in names}
        c = self.cut
        wi_, wj_ = self.w[i], self.w[j]
        lifted = cp.multiply(c["kr"], self.wr) + cp.multiply(c["ki"], self.wi)
        self.bound_cuts = [
            # angle(W) <= theta_hi: sin(angle - theta_hi) <= 0; angle >= theta_lo likewise
            cp.multiply(c["hi_c"], self.wi) - cp.multiply(c["hi_s"], self.wr) <= 0,
            cp.multiply(c["lo_s"], self.wr) - cp.multiply(c["lo_c"], self.wi) <= 0,
            lifted - cp.multiply(c["a1"], wi_) - cp.multiply(c["b1"], wj_) >= c["e1"],
            lifted - cp.multiply(c["a2"], wi_) - cp.multiply(c["b2"], wj_) >= c["e2"],
        ]
        self._set_cuts(None)
        return cons + self.bound_cuts

    def _set_cuts(self, bounds: Bounds | None) -> None:
        """Cut parameters for `bounds` (None: every cut off, the plain cycle relaxation)."""
        n = len(self.pairs)
        zero = np.zeros(n)
        if bounds is None:
            for k, p in self.cut.items():
                p.value = np.full(n, -1.0) if k in ("e1", "e2") else zero
            return
        on = bounds.known.astype(float)
        lo = np.where(bounds.known, bounds.th_lo, 0.0)
        hi = np.where(bounds.known, bounds.th_hi, 0.0)
        i = np.array([p[0] for p in self.pairs])
        j = np.array([p[1] for p in self.pairs])
        vl, vu = np.sqrt(bounds.w_lo), np.sqrt(bounds.w_hi)
        vli, vlj, vui, vuj = vl[i], vl[j], vu[i], vu[j]
        si, sj = vli + vui, vlj + vuj
        phi, delta = (hi + lo) / 2, (hi - lo) / 2
        cd = np.cos(delta)
        c = self.cut
        c["hi_c"].value, c["hi_s"].value = on * np.cos(hi), on * np.sin(hi)
        c["lo_c"].value, c["lo_s"].value = on * np.cos(lo), on * np.sin(lo)
        c["kr"].value, c["ki"].value = on * si * sj * np.cos(phi), on * si * sj * np.sin(phi)
        c["a1"].value, c["b1"].value = on * vuj * cd * sj, on * vui * cd * si
        c["e1"].value = np.where(bounds.known, vui * vuj * cd * (vli * vlj - vui * vuj), -1.0)
        c["a2"].value, c["b2"].value = on * vlj * cd * sj, on * vli * cd * si
        c["e2"].value = np.where(bounds.known, -vli * vlj * cd * (vli * vlj - vui * vuj), -1.0)

    # ---- bound tightening --------------------------------------------------------------------
    def tighten(self, scenario: Scenario) -> tuple[str, Bounds]:
        """Run the rounds of bound tightening for `scenario`.

        Each round tightens the voltage bounds, re-imposes them, then tightens the angle bounds
        and re-imposes those; before each block the relaxation with the current bounds is
        solved for feasibility. Stops early once no bound moves by more than `OBBT_SETTLED`.

        Returns (status, bounds): `"infeasible"` when the relaxation with valid bounds, or one of
        its bound problems, is certified infeasible (Clarabel's `PrimalInfeasible`; its
        `AlmostPrimalInfeasible` certifies nothing), else `"optimal"` or the status that
        stopped the feasibility solve (e.g. `"NumericalError"`, no certificate either).
        """
        g = self.grid
        npair = len(self.pairs)
        bounds = Bounds(g.min_vm_pu ** 2, g.max_vm_pu ** 2, np.zeros(npair), np.zeros(npair),
                        np.zeros(npair, dtype=bool))
        self._set(scenario, 0.0)
        self.solves = 0
        status = "optimal"
        for rounds in range(1, self.passes + 1):
            self.rounds = rounds
            before = dataclasses.replace(bounds)
            blocks = [self._tighten_angles]
            if rounds <= self.voltage_rounds:
                blocks.insert(0, self._tighten_voltages)
            for block in blocks:
                status, bounds = block(self._bound_problems(bounds), bounds)
                if status != "optimal":
                    self.last_bounds = bounds
                    return self._widened(status, bounds), bounds
            moved = max(np.abs(bounds.w_lo - before.w_lo).max(), np.abs(bounds.w_hi - before.w_hi).max(),
                        np.abs(np.where(before.known, bounds.th_lo - before.th_lo, 0)).max(),
                        np.abs(np.where(before.known, bounds.th_hi - before.th_hi, 0)).max())
            if moved < OBBT_SETTLED and before.known.sum() == bounds.known.sum():
                break
        status = self._bound_problems(bounds).feasibility()
        self.last_bounds = bounds
        return self._widened(status, bounds), bounds

    def _widened(self, status: str, bounds: Bounds) -> str:
        """`status`, or `"infeasible"` if the relaxation is certified infeasible with `bounds`
        widened by one of `OBBT_WIDENING` (wider bounds are still valid). Near-collapsed bounds
        leave a sliver of a feasible set on which Clarabel can stop with a numerical error
        instead of a certificate either way."""
        if status in ("optimal", "infeasible"):
            return status
        for widen in OBBT_WIDENING:
            wide = Bounds(np.maximum(bounds.w_lo - widen, 0.0), bounds.w_hi + widen,
                          bounds.th_lo - widen, bounds.th_hi + widen, bounds.known)
            if self._bound_problems(wide).feasibility() == "infeasible":
                return "infeasible"
        return status

    def _apply(self, bounds: Bounds) -> None:
        self.w_min.value, self.w_max.value = bounds.w_lo, bounds.w_hi  # crossed: infeasible
        self._set_cuts(bounds)

    def _bound_problems(self, bounds: Bounds) -> _BoundProblems:
        self._apply(bounds)
        return _BoundProblems(self, self.feasibility.get_problem_data(cp.CLARABEL))

    def _tighten_voltages(self, problems: _BoundProblems, bounds: Bounds) -> tuple[str, Bounds]:
        status = problems.feasibility()
        if status != "optimal":
            return status, bounds
        lo, hi = bounds.w_lo.copy(), bounds.w_hi.copy()
        for k in range(self.grid.n_bus):
            for sign in (1.0, -1.0):
                status, _, val = problems.minimise({"w": {k: sign}})
                if status == "infeasible":
                    return status, bounds
                if status != "optimal":
                    continue
                if sign > 0:
                    lo[k] = max(lo[k], val - BOUND_MARGIN)
                else:
                    hi[k] = min(hi[k], -val + BOUND_MARGIN)
        return "optimal", dataclasses.replace(bounds, w_lo=lo, w_hi=hi)

    def _tighten_angles(self, problems: _BoundProblems, bounds: Bounds) -> tuple[str, Bounds]:
        status = problems.feasibility()
        if status != "optimal":
            return status, bounds
        th_lo, th_hi, known = bounds.th_lo.copy(), bounds.th_hi.copy(), bounds.known.copy()
        vl, vu = np.sqrt(bounds.w_lo), np.sqrt(bounds.w_hi)
        for p in self.tightened:
            i, j = self.pairs[p]
            if not bounds.known[p]:
                status, _, val = problems.minimise({"wr": {p: 1.0}})
                if status == "infeasible":
                    return status, bounds
                m = val - BOUND_MARGIN
                if status == "optimal" and m > 0:  # every AC point has Re W_ij >= m > 0
                    half = np.arccos(min(1.0, m / (vu[i] * vu[j])))
                    th_lo[p], th_hi[p], known[p] = -half, half, True
                continue
            lo, hi = bounds.th_lo[p], bounds.th_hi[p]
            phi, delta = (hi + lo) / 2, (hi - lo) / 2
            c, s_ = np.cos(phi), np.sin(phi)
            for side in (1.0, -1.0):
                t, best = 0.0, delta
                for _ in range(self.ratio_steps):
                    # maximise side * s - t u, with u + j s = W_ij e^{-j phi}
                    status, x, val = problems.minimise(
                        {"wr": {p: side * s_ + t * c}, "wi": {p: -side * c + t * s_}})
                    if status == "infeasible":
                        return status, bounds
                    if status != "optimal":
                        break
                    f = -val + BOUND_MARGIN
                    scale = np.sqrt(1 + t * t) * (vl[i] * vl[j] if f >= 0 else vu[i] * vu[j])
                    if f / scale <= 1 and np.arcsin(f / scale) <= np.pi / 2 - delta:
                        best = min(best, np.arctan(t) + np.arcsin(f / scale))
                    wr, wi = problems.value(x, "wr", p), problems.value(x, "wi", p)
                    u = c * wr + s_ * wi
                    if u <= 1e-9:
                        break
                    t = side * (c * wi - s_ * wr) / u  # Dinkelbach: the maximiser's ratio
                if side > 0:
                    th_hi[p] = min(th_hi[p], phi + best)
                else:
                    th_lo[p] = max(th_lo[p], phi - best)
        return "optimal", dataclasses.replace(bounds, th_lo=th_lo, th_hi=th_hi, known=known)

    def solve(self, scenario: Scenario, *, margin: float = 0.0) -> RelaxationResult:
        """Tighten the bounds for `scenario` (`tighten`), then solve the relaxation with them for
        the cost: a lower bound on the AC-OPF cost at least as tight as the cycle relaxation's.
        `margin` must be 0 (a restricted problem's bounds would hold for none of its points)."""
        if margin:
            raise ValueError("bound tightening needs the true relaxation (margin = 0)")
        start = time.perf_counter()
        status, bounds = self.tighten(scenario)
        if status != "optimal":
            return RelaxationResult(status, float("nan"), None, None, None,
                                    time.perf_counter() - start)
        self._apply(bounds)
        try:
            self.problem.solve(solver=cp.CLARABEL, warm_start=False, **self.solver_options)
        except cp.SolverError as exc:
            return RelaxationResult(f"solver_error: {exc}", float("nan"), None, None, None,
                                    time.perf_counter() - start)
        elapsed = time.perf_counter() - start
        if self.problem.status != cp.OPTIMAL:
            return RelaxationResult(self.problem.status, float("nan"), None, None, None, elapsed)
        base = self.grid.base_mva
        return RelaxationResult(self.problem.status, float(self.problem.value),
                                np.sqrt(np.maximum(self.w.value, 0.0)), self.pg.value * base,
                                self.qg.value * base, elapsed)


class _BoundProblems:
    """The relaxation with fixed bounds compiled once, re-solved by Clarabel with linear
    objectives over (w, wr, wi) (one solver; only its objective vector changes)."""

    def __init__(self, relaxation: BoundTightenedRelaxation, compiled: tuple) -> None:
        import clarabel
        from cvxpy.reductions.solvers.conic_solvers.clarabel_conif import dims_to_solver_cones

        self.relaxation = relaxation
        data, _, inverse = compiled
        offsets = next(d.var_offsets for d in reversed(inverse) if hasattr(d, "var_offsets"))
        self.offsets = {"w": offsets[relaxation.w.id], "wr": offsets[relaxation.wr.id],
                        "wi": offsets[relaxation.wi.id]}
        self.n = data["A"].shape[1]
        settings = clarabel.DefaultSettings()
        settings.verbose = False
        for key, value in relaxation.solver_options.items():
            setattr(settings, key, value)
        self.args = (data["A"], data["b"], dims_to_solver_cones(data["dims"]), settings)
        self.solver = self._new_solver(np.zeros(self.n))
        self.updatable = self.solver.is_data_update_allowed()

    def _new_solver(self, q: np.ndarray) -> Any:
        import clarabel

        a, b, cones, settings = self.args
        return clarabel.DefaultSolver(sp.csc_matrix((self.n, self.n)), q, a, b, cones, settings)

    def value(self, x: np.ndarray, name: str, k: int) -> float:
        return float(x[self.offsets[name] + k])

    def feasibility(self) -> str:
        return self._solve(np.zeros(self.n))[0]

    def minimise(self, objective: dict[str, dict[int, float]]) -> tuple[str, np.ndarray | None, float]:
        """Minimise a linear function of (w, wr, wi), given as {name: {index: coefficient}}.

        Returns (status, x, value): `"infeasible"` only on Clarabel's `PrimalInfeasible`;
        `"optimal"` on `Solved` or `AlmostSolved` with the smaller of the primal and dual
        objectives (bounds built from it are widened by `BOUND_MARGIN`); else Clarabel's status.
        """
        q = np.zeros(self.n)
        for name, terms in objective.items():
            for k, v in terms.items():
                q[self.offsets[name] + k] += v
        return self._solve(q)

    def _solve(self, q: np.ndarray) -> tuple[str, np.ndarray | None, float]:
        self.relaxation.solves += 1
        if self.updatable:
            self.solver.update(q=q)
        else:
            self.solver = self._new_solver(q)
        sol = self.solver.solve()
        status = str(sol.status)
        if status == "PrimalInfeasible":
            return "infeasible", None, float("nan")
        if status not in ("Solved", "AlmostSolved"):
            return status, None, float("nan")
        return "optimal", np.asarray(sol.x), float(min(sol.obj_val, sol.obj_val_dual))
