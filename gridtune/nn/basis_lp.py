"""DC loadability of the scenarios of one topology: the LP stated once, solved warm per load.

`gridtune.nn.loadability` states the maximum-loadability LP in `lam`, where the load `pd` is the
coefficient of a variable. Divided through by `lam` (mu = 1 / lam, theta' = mu theta, pg' = mu pg)
the same problem reads

    min  mu   s.t.  B theta' - pg' - mu s = -pd                          (each bus; s: phase shifters)
                    b_k (theta'_f - theta'_t) - mu (b_k shift_k + rate_k) <= 0   (energised branches,
                    b_k (theta'_f - theta'_t) - mu (b_k shift_k - rate_k) >= 0    both directions)
                    pg'_g - mu pmax_g <= 0,  pg' >= 0,  theta'_ref = 0,  mu >= 1 / MAX_SCALE

with the load in the right-hand side only. Everything else is fixed by the topology (branches,
ratings, generator limits, reference bus), which the scenarios of a dataset share in a few dozen
variants. So a `Topology` builds its LP once and keeps one HiGHS instance: the next scenario only
changes the balance rows' bounds, and the previous optimal basis, still dual feasible (the dual
feasible set does not depend on the load), warm-starts the dual simplex (about 15 iterations on
case118 instead of a solve from scratch, and no model set-up).

Answers: `lam` equals the reference LP's to solver precision (1e-12 measured); `d lam / d pd` is
the optimal dual of the balance rows (unique wherever the reference's is); the branch loadings
are those of the optimal vertex the warm start reaches. When the dispatch at the limit is not
unique (usual on case118: one bottleneck leaves the other units free), that is another optimal
vertex than a cold solve of the reference LP returns, and which one depends on the topology's
previous solve: on the case118 recipe's test split `lam` agrees with the reference to 2e-13 and
the load sensitivity on all but 1 of 49,324 buses, while branch loadings differ by 0.17 on
average; the default model trained on these inputs reaches test AUROC 0.978.

Each solve's duals are also a cut: the dual feasible set is shared, so `mu >= w . pd + c` holds
for every scenario of the topology, and the optimum is the largest such bound over all dual
vertices. `bound_group` answers from the stored cuts alone, without a solve: exact when the
scenario's bottleneck has been seen, an over-estimate of `lam` otherwise (an approximation, not
used by default).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from gridtune.grids.features import BRANCH_FEATURES as BF
from gridtune.grids.features import BUS_FEATURES as BUS

MAX_SCALE = 10.0      # largest load scale the LP looks for (mu >= 1 / MAX_SCALE)
MAX_CUTS = 256        # dual vertices kept per topology
MAX_TOPOLOGIES = 512  # topologies kept (least recently used dropped); ~0.3 MB each on case118


@dataclass(frozen=True)
class DcBranches:
    """The DC network of one graph (local bus numbering), as both LPs of the loadability read it."""

    n: int
    on: np.ndarray            # (2E,) bool: energised branch rows
    f: np.ndarray             # forward energised branch rows: from / to bus
    t: np.ndarray
    b: np.ndarray             # susceptance 1 / (x tap) of each forward row
    shift: np.ndarray
    rate: np.ndarray
    pmax: np.ndarray          # (N,) generation capacity per bus, 0 without a unit
    ref_bus: int
    src: np.ndarray           # endpoints, sign x shift, susceptance and rating of every energised row
    dst: np.ndarray
    sign_shift: np.ndarray
    b_on: np.ndarray
    rate_on: np.ndarray

    def loading(self, theta: np.ndarray, n_rows: int) -> np.ndarray:
        """|flow| / rating of every branch row (0 on de-energised rows) at bus angles `theta`."""
        out = np.zeros(n_rows)
        flow = self.b_on * (theta[self.src] - theta[self.dst] - self.sign_shift)
        out[self.on] = np.abs(flow) / self.rate_on
        return out


def dc_branches(x: np.ndarray, ei: np.ndarray, ea: np.ndarray) -> DcBranches:
    """The arrays of `DcBranches` from a graph's raw bus features, edge index and branch features."""
    on = ea[:, BF.index("in_service")] > 0.5
    fwd = on & (ea[:, BF.index("is_reverse")] < 0.5)
    ref = np.flatnonzero(x[:, BUS.index("is_ref")] > 0.5)
    sign = np.where(ea[on, BF.index("is_reverse")] < 0.5, 1.0, -1.0)
    return DcBranches(
        n=x.shape[0], on=on, f=ei[0, fwd], t=ei[1, fwd],
        b=1.0 / (ea[fwd, BF.index("x_pu")] * ea[fwd, BF.index("tap_ratio")]),
        shift=ea[fwd, BF.index("shift_rad")], rate=ea[fwd, BF.index("rate_a_pu")],
        pmax=np.maximum(x[:, BUS.index("max_pg_pu")], 0.0) * (x[:, BUS.index("n_gen")] > 0),
        ref_bus=int(ref[0]) if ref.size else 0,
        src=ei[0, on], dst=ei[1, on], sign_shift=sign * ea[on, BF.index("shift_rad")],
        b_on=1.0 / (ea[on, BF.index("x_pu")] * ea[on, BF.index("tap_ratio")]),
        rate_on=np.maximum(ea[on, BF.index("rate_a_pu")], 1e-6))


@dataclass
class Topology:
    """The scaled LP of one topology, its HiGHS instance and the cuts its solves found."""

    n: int
    gens: np.ndarray          # buses with generation capacity (a pg' column each)
    pmax: np.ndarray          # (G,)
    ref_bus: int
    f: np.ndarray             # forward energised branch rows: from / to bus
    t: np.ndarray
    b: np.ndarray
    shift: np.ndarray
    rate: np.ndarray
    on: np.ndarray            # (2E,) bool: energised branch rows
    src: np.ndarray           # endpoints, sign and susceptance of every energised row
    dst: np.ndarray
    sign_shift: np.ndarray    # sign x shift of each energised row
    b_on: np.ndarray
    rate_on: np.ndarray
    n_rows_edge: int          # 2E
    a: object = None          # scipy csr (nrow, ncol)
    a_csc: object = None
    col_lb: np.ndarray = None
    col_ub: np.ndarray = None
    row_lb: np.ndarray = None  # balance rows hold -pd: filled per scenario
    row_ub: np.ndarray = None
    cuts_w: np.ndarray = None  # (K, n) dual vertices: mu >= w . pd + c
    cuts_c: np.ndarray = None  # (K,)
    cuts_loading: list = None  # (2E,) branch loadings of the solve that found each cut
    highs: object = None       # dual simplex, warm
    solves: int = 0

    @property
    def mu_col(self) -> int:
        return self.n + self.gens.size

    @property
    def ncol(self) -> int:
        return self.n + self.gens.size + 1


_TOPOLOGIES: OrderedDict[bytes, Topology] = OrderedDict()


def clear() -> None:
    """Forget every topology (the next scenario of each builds its LP and solves cold again)."""
    _TOPOLOGIES.clear()


def stats() -> dict[str, int]:
    """Topologies held, cuts stored, HiGHS solves made."""
    tops = _TOPOLOGIES.values()
    return {"topologies": len(_TOPOLOGIES), "cuts": sum(len(t.cuts_w) for t in tops),
            "solves": sum(t.solves for t in tops)}


def topology(key: bytes, x: np.ndarray, ei: np.ndarray, ea: np.ndarray) -> Topology:
    """The topology state under `key` (built from one graph's arrays on first use)."""
    topo = _TOPOLOGIES.get(key)
    if topo is not None:
        _TOPOLOGIES.move_to_end(key)
        return topo
    topo = _build(x, ei, ea)
    _TOPOLOGIES[key] = topo
    while len(_TOPOLOGIES) > MAX_TOPOLOGIES:
        _TOPOLOGIES.popitem(last=False)
    return topo


def _build(x: np.ndarray, ei: np.ndarray, ea: np.ndarray) -> Topology:
    import scipy.sparse as sp

    net = dc_branches(x, ei, ea)
    n, f, t, b, shift, rate, ref_bus = net.n, net.f, net.t, net.b, net.shift, net.rate, net.ref_bus
    gens = np.flatnonzero(net.pmax > 0)
    pmax = net.pmax[gens]
    m, g = f.size, gens.size
    s = np.zeros(n)
    np.add.at(s, f, b * shift)
    np.add.at(s, t, -b * shift)
    mu = n + g
    ar, ac = np.arange(m), np.arange(g)
    rows = np.r_[f, t, f, t, gens, np.flatnonzero(s),
                 n + ar, n + ar, n + ar, n + m + ar, n + m + ar, n + m + ar,
                 n + 2 * m + ac, n + 2 * m + ac]
    cols = np.r_[f, t, t, f, n + ac, np.full(np.count_nonzero(s), mu),
                 f, t, np.full(m, mu), f, t, np.full(m, mu),
                 n + ac, np.full(g, mu)]
    vals = np.r_[b, b, -b, -b, -np.ones(g), -s[s != 0],
                 b, -b, -(b * shift + rate), b, -b, -(b * shift - rate),
                 np.ones(g), -pmax]
    nrow, ncol = n + 2 * m + g, n + g + 1
    a = sp.coo_matrix((vals, (rows, cols)), shape=(nrow, ncol)).tocsr()
    a.sum_duplicates()
    col_lb = np.r_[np.full(n, -np.inf), np.zeros(g), 1.0 / MAX_SCALE]
    col_ub = np.r_[np.full(n, np.inf), np.full(g, np.inf), np.inf]
    col_lb[ref_bus] = col_ub[ref_bus] = 0.0
    row_lb = np.r_[np.zeros(n), np.full(m, -np.inf), np.zeros(m), np.full(g, -np.inf)]
    row_ub = np.r_[np.zeros(n), np.zeros(m), np.full(m, np.inf), np.zeros(g)]
    return Topology(n=n, gens=gens, pmax=pmax, ref_bus=ref_bus, f=f, t=t, b=b, shift=shift, rate=rate,
                    on=net.on, src=net.src, dst=net.dst, sign_shift=net.sign_shift, b_on=net.b_on,
                    rate_on=net.rate_on, n_rows_edge=ea.shape[0],
                    a=a, a_csc=a.tocsc(), col_lb=col_lb, col_ub=col_ub, row_lb=row_lb, row_ub=row_ub,
                    cuts_w=np.zeros((0, n)), cuts_c=np.zeros(0), cuts_loading=[])


def _new_highs() -> object:
    """A silent HiGHS instance (its constructor prints a banner on the process's stdout, below
    Python's `sys.stdout`, so the file descriptor is muted around it)."""
    import os
    import sys

    import highspy

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            h = highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    h.setOptionValue("output_flag", False)
    return h


def _highs(topo: Topology, pd: np.ndarray) -> object:
    """The topology's HiGHS instance, its balance rows set to `pd`, after `run()`."""
    import highspy

    n = topo.n
    h = topo.highs
    if h is None:
        h = _new_highs()
        h.setOptionValue("threads", 1)
        lp = highspy.HighsLp()
        a = topo.a_csc
        lp.num_col_, lp.num_row_ = a.shape[1], a.shape[0]
        lp.col_cost_ = np.r_[np.zeros(topo.ncol - 1), 1.0]
        lp.col_lower_, lp.col_upper_ = topo.col_lb, topo.col_ub
        row_lb, row_ub = topo.row_lb.copy(), topo.row_ub.copy()
        row_lb[:n] = row_ub[:n] = -pd
        lp.row_lower_, lp.row_upper_ = row_lb, row_ub
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = a.indptr.astype(np.int32)
        lp.a_matrix_.index_ = a.indices.astype(np.int32)
        lp.a_matrix_.value_ = a.data.astype(float)
        h.passModel(lp)
        topo.highs = h
    else:
        h.changeRowsBounds(n, np.arange(n, dtype=np.int32), -pd, -pd)
    h.run()
    return h


def _simplex(topo: Topology, pd: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
    """HiGHS (dual simplex, warm-started from the topology's previous solve) for one load vector:
    (column values, its cut w, c with mu = w . pd + c), or None without an optimum."""
    import highspy

    h = _highs(topo, pd)
    topo.solves += 1
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        topo.highs = None  # nothing worth warm-starting from
        return None
    sol = h.getSolution()
    z = np.asarray(sol.col_value, dtype=float)
    w = -np.asarray(sol.row_dual, dtype=float)[: topo.n]  # d mu / d (-pd) is the balance row's dual
    return z, w, float(z[topo.mu_col] - w @ pd)


def _answer(topo: Topology, z: np.ndarray, w: np.ndarray) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """(lam, loading per branch row, d lam / d pd) of each column of z (ncol, k); w (k, n): d mu / d pd."""
    mu = z[topo.mu_col]
    lam = 1.0 / mu
    theta = z[: topo.n]
    flow = topo.b_on[:, None] * (theta[topo.src] - theta[topo.dst]) - (topo.b_on * topo.sign_shift)[:, None] * mu
    loading_on = np.abs(flow) / mu / topo.rate_on[:, None]
    out = []
    for j in range(z.shape[1]):
        loading = np.zeros(topo.n_rows_edge)
        loading[topo.on] = loading_on[:, j]
        out.append((float(lam[j]), loading, -(lam[j] ** 2) * w[j]))
    return out


def _bound(topo: Topology, pd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The largest stored dual bound on mu for each load column (k,) and its cut's index."""
    if topo.cuts_w.shape[0] == 0:
        return np.full(pd.shape[1], -np.inf), np.zeros(pd.shape[1], dtype=np.int64)
    import torch  # its thread setting, not a BLAS pool's

    vals = (torch.from_numpy(topo.cuts_w) @ torch.from_numpy(np.ascontiguousarray(pd))).numpy() + topo.cuts_c[:, None]
    best = np.argmax(vals, axis=0)
    return vals[best, np.arange(pd.shape[1])], best


def _add_cut(topo: Topology, w: np.ndarray, c: float, loading: np.ndarray) -> None:
    if topo.cuts_w.shape[0]:
        gap = np.abs(topo.cuts_w - w).max(axis=1) + np.abs(topo.cuts_c - c)
        if gap.min() <= 1e-9 * (1.0 + np.abs(w).max()):
            return
        if topo.cuts_w.shape[0] >= MAX_CUTS:
            return
    topo.cuts_w = np.vstack([topo.cuts_w, w])
    topo.cuts_c = np.r_[topo.cuts_c, c]
    topo.cuts_loading.append(loading)


def solve_group(topo: Topology, pd: np.ndarray) -> list[tuple[float, np.ndarray, np.ndarray] | None]:
    """(lam, loading, d lam / d pd) for each column of pd (n, k), the scenarios of one topology,
    each solved by the warm dual simplex; None where the scaled LP has no optimum (no positive
    load scale is feasible: the caller solves those with the reference LP). Records each
    solve's cut."""
    out: list = [None] * pd.shape[1]
    for j in range(pd.shape[1]):
        solved = _simplex(topo, pd[:, j])
        if solved is None:
            continue
        z, w, c = solved
        out[j] = _answer(topo, z[:, None], w[None, :])[0]
        _add_cut(topo, w, c, out[j][1])
    return out


def bound_group(topo: Topology, pd: np.ndarray) -> list[tuple[float, np.ndarray, np.ndarray] | None]:
    """Approximate answers from the stored cuts alone, no solve: lam = 1 / max_k (w_k . pd + c_k),
    exact whenever the scenario's optimal cut is stored, otherwise an over-estimate (a missing
    bottleneck); d lam / d pd from that cut; the branch loadings of the solve that found the cut
    (the same bottleneck binds; the rest of the dispatch is another scenario's). None without cuts."""
    if topo.cuts_w.shape[0] == 0:
        return [None] * pd.shape[1]
    mu, best = _bound(topo, pd)
    out = []
    for j in range(pd.shape[1]):
        if not mu[j] > 0:
            out.append(None)
            continue
        lam = 1.0 / mu[j]
        out.append((float(lam), topo.cuts_loading[best[j]], -(lam ** 2) * topo.cuts_w[best[j]]))
    return out
