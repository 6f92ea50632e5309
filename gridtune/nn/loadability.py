"""DC loadability of each scenario: how far its load could scale before the DC network fails.

One small linear programme per graph (the DC-OPF's constraints, Christie, Wollenberg and Wangensteen
2000, "Transmission management in the deregulated environment", with the load scale as the
objective, i.e. the DC continuation / maximum-loadability problem):

    max  lam   s.t.  B theta = pg - lam * pd + (phase-shifter injections)      (each bus)
                     |b_k (theta_f - theta_t - shift_k)| <= rate_k             (energised branches)
                     0 <= pg <= max_pg,  theta_ref = 0,  0 <= lam <= MAX_SCALE

`1 / lam` above 1 means that no dispatch meets the scenario's load within branch ratings even in
the lossless DC model: the stored case118 labels say such scenarios are nearly all certified
AC-infeasible (917 of 961). The optimum also says which branches bind, the bottleneck a GNN
otherwise has to find by itself. Inputs derived from the schema's own columns, dimensionless,
so they mean the same on every grid.

Cost: the scenarios of one topology (branches, ratings, generator limits, reference bus) share
everything but the load, so a batch is grouped by topology and solved by `gridtune.nn.basis_lp`:
the LP divided through by `lam` has the load in its right-hand side only, is built once per
topology, and each scenario changes the balance rows' bounds and re-runs the dual simplex from
the previous optimal basis (still dual feasible). On the case118 recipe's test split that is
about 0.6 ms of CPU a scenario, 8 to 9 times faster than a fresh solve of the LP above, with the
same `lam` to 1e-12 (`benchmarks/bench_inference.py`); `reference_lp()` runs that original
LP (`_solve`, one scipy / HiGHS solve per graph) instead. Results are also cached by graph
content, so a graph seen again (every epoch) costs a dictionary look-up.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gridtune.grids.features import BRANCH_FEATURES as BF
from gridtune.grids.features import BUS_FEATURES as BUS
from gridtune.nn import basis_lp
from gridtune.nn.basis_lp import MAX_SCALE
from gridtune.nn.topology import graph_groups, layout

LOADABILITY_BUS = ("dc_overload",)          # 10 x (1 / lam - 1) of the bus's graph, on every bus
LOADABILITY_BRANCH = ("dc_limit_loading",)  # |flow| / rating at the loadability optimum
# key -> (lam x total pd, loading, d lam / d pd x total pd^2, lam sat at MAX_SCALE): two keys per
# solved graph, see `_lookup_or_solve`
_CACHE: dict[bytes, tuple[float, np.ndarray, np.ndarray, bool]] = {}
_CACHE_MAX = 40_000  # keys, two per graph; about 3 kB a graph on case118, so at most ~60 MB
_TOPOLOGY_KEYS: dict[bytes, bytes] = {}  # `graph_groups` key -> topology key (`_topology_groups`)
_USE_CACHE = [True]
_REFERENCE = [False]
_APPROXIMATE = [False]


def fresh_state() -> None:
    """Forget every stored result and warm start (`_CACHE`, `basis_lp`'s topologies)."""
    _CACHE.clear()
    _TOPOLOGY_KEYS.clear()
    basis_lp.clear()


@contextlib.contextmanager
def uncached() -> Iterator[None]:
    """Solve every LP afresh inside the block: what inference on unseen scenarios costs (a timing
    over graphs already seen would otherwise measure dictionary look-ups).

    Per-graph results are neither read nor stored; every graph is solved. The per-topology LPs of
    `gridtune.nn.basis_lp` (built once, warm-started from the last solve) stay in use;
    `gridtune.nn.basis_lp.clear()` drops them too, for a timing that pays each topology's set-up."""
    before = _USE_CACHE[0]
    _USE_CACHE[0] = False
    try:
        yield
    finally:
        _USE_CACHE[0] = before


@contextlib.contextmanager
def reference_lp() -> Iterator[None]:
    """Solve every graph with the original LP (`_solve`, one scipy / HiGHS solve per graph) inside
    the block instead of the per-topology basis reuse: the reference for exactness and timing."""
    before = _REFERENCE[0]
    _REFERENCE[0] = True
    try:
        yield
    finally:
        _REFERENCE[0] = before


@contextlib.contextmanager
def cut_bounds() -> Iterator[None]:
    """Inside the block, answer from each topology's stored cuts without a solve
    (`gridtune.nn.basis_lp.bound_group`): an approximation, exact only where the scenario's
    bottleneck was seen in an earlier solve of its topology (an over-estimate of `lam` otherwise).
    A topology without cuts is solved. Results are neither read from nor written to the cache."""
    before = _APPROXIMATE[0]
    _APPROXIMATE[0] = True
    try:
        yield
    finally:
        _APPROXIMATE[0] = before


def _solve(x: np.ndarray, ei: np.ndarray, ea: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(lam, loading per branch row, d lam / d pd per bus) of one graph (local bus numbering): the
    reference LP, one solve.

    The sensitivity comes from the LP's duals: pd_i is the coefficient of lam in bus i's balance
    row, and an optimal value's derivative in a constraint coefficient is -(dual of the row) x
    (the variable's value).
    """
    import scipy.sparse as sp
    from scipy.optimize import linprog

    from gridtune.nn.basis_lp import dc_branches

    net = dc_branches(x, ei, ea)
    n, f, t, b, shift, rate, pmax = net.n, net.f, net.t, net.b, net.shift, net.rate, net.pmax
    pd_ = x[:, BUS.index("pd_pu")]
    m = f.size
    # variables: theta (n), pg (n), lam (1)
    bus_b = sp.coo_matrix((np.r_[b, b, -b, -b], (np.r_[f, t, f, t], np.r_[f, t, t, f])), shape=(n, n))
    a_eq = sp.hstack([bus_b, -sp.identity(n), sp.coo_matrix(pd_[:, None])]).tocsr()
    b_eq = np.zeros(n)
    np.add.at(b_eq, f, b * shift)
    np.add.at(b_eq, t, -b * shift)
    flow_rows = sp.coo_matrix((np.r_[b, -b], (np.r_[np.arange(m), np.arange(m)], np.r_[f, t])), shape=(m, n))
    pad = sp.coo_matrix((m, n + 1))
    a_ub = sp.vstack([sp.hstack([flow_rows, pad]), sp.hstack([-flow_rows, pad])]).tocsr()
    b_ub = np.r_[rate + b * shift, rate - b * shift]
    ref_bus = net.ref_bus
    bounds = [(None, None)] * n + [(0.0, float(p)) for p in pmax] + [(0.0, MAX_SCALE)]
    bounds[ref_bus] = (0.0, 0.0)
    c = np.zeros(2 * n + 1)
    c[-1] = -1.0
    res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
    if res.status != 0:  # infeasible even at lam = 0 (e.g. an islanded generator-less load): no margin
        return 0.0, np.zeros(ea.shape[0]), np.zeros(n)
    loading = net.loading(res.x[:n], ea.shape[0])
    lam = float(res.x[-1])
    # objective -lam: d(-lam)/d(pd_i) = -marginal_i * lam
    dlam = np.asarray(res.eqlin.marginals, dtype=float) * lam
    return lam, loading, dlam


_LP_BUS = [BUS.index(c) for c in ("max_pg_pu", "n_gen", "is_ref")]
_LP_BRANCH = [BF.index(c) for c in ("in_service", "is_reverse", "x_pu", "tap_ratio", "shift_rad",
                                    "rate_a_pu")]
_SHARE_DECIMALS = 6  # rounding of the load shares (pd / total pd, sum 1) in the share key
_PD = BUS.index("pd_pu")
Result = tuple[float, np.ndarray, np.ndarray]  # lam, loading per branch row, d lam / d pd per bus


def _topology_bytes(xg: np.ndarray, eig: np.ndarray, eg: np.ndarray) -> bytes:
    """The LP's inputs other than the load (generator limits, reference bus, branches)."""
    return (np.ascontiguousarray(xg[:, _LP_BUS], dtype=float).tobytes()
            + np.ascontiguousarray(eg[:, _LP_BRANCH], dtype=float).tobytes()
            + np.ascontiguousarray(eig, dtype=np.int64).tobytes())


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _solve_graphs(pd: np.ndarray, topo_key: bytes, xg: np.ndarray, eig: np.ndarray, eg: np.ndarray
                  ) -> list[Result]:
    """Solve the scenarios of one topology: loads `pd` (k, n), the topology from one graph's arrays
    (`xg`'s load column is not read). Every cache miss goes through here."""
    if _REFERENCE[0]:
        out = []
        for row in pd:
            x = xg.copy()
            x[:, _PD] = row
            out.append(_solve(x, eig, eg))
        return out
    topo = basis_lp.topology(topo_key, xg, eig, eg)
    if _APPROXIMATE[0] and len(topo.cuts_w):
        answers = basis_lp.bound_group(topo, np.ascontiguousarray(pd.T))
    else:
        answers = basis_lp.solve_group(topo, np.ascontiguousarray(pd.T))
    for j, ans in enumerate(answers):
        if ans is None:  # no positive load scale is feasible: the reference LP says what is
            x = xg.copy()
            x[:, _PD] = pd[j]
            answers[j] = _solve(x, eig, eg)
    return answers  # type: ignore[return-value]


def _cache_keys(pd_: np.ndarray, topo_key: bytes) -> tuple[bytes, bytes, float]:
    total = float(pd_.sum())
    scale = total if total > 1e-9 else 1.0
    exact = _digest(b"exact" + pd_.tobytes() + topo_key)
    shares = _digest(b"share" + np.round(pd_ / scale, _SHARE_DECIMALS).tobytes() + topo_key)
    return exact, shares, scale


def _cache_get(exact: bytes, shares: bytes, scale: float) -> Result | None:
    hit = _CACHE.get(exact)
    if hit is not None:  # the graph itself (every epoch after the first): its own numbers
        lam_scaled, load, dlam_scaled, _ = hit
        return lam_scaled / scale, load, dlam_scaled / scale ** 2
    hit = _CACHE.get(shares)
    if hit is not None:
        lam_scaled, load, dlam_scaled, at_bound = hit
        lam = lam_scaled / scale
        if not at_bound and lam < MAX_SCALE - 1e-9:
            return lam, load, dlam_scaled / scale ** 2
    return None


def _cache_put(exact: bytes, shares: bytes, scale: float, result: Result) -> None:
    lam, load, dlam = result
    if len(_CACHE) < _CACHE_MAX:
        entry = (lam * scale, load, dlam * scale ** 2, lam >= MAX_SCALE - 1e-9)
        _CACHE[exact] = _CACHE[shares] = entry


def _solve_cached(pd: np.ndarray, topo_key: bytes, xg: np.ndarray, eig: np.ndarray, eg: np.ndarray
                  ) -> list[Result]:
    """`_solve_graphs`, answered from the cache for a graph seen before or a load-scaled copy of one.

    Two keys per solved graph. The exact key holds the LP's own inputs (active loads, generator
    limits, the reference bus, the branches; not the columns the LP ignores): a graph seen again
    gets exactly the numbers its solve gave. The share key holds the load *shares* (pd / total pd,
    rounded to `_SHARE_DECIMALS`) instead of the loads: the LP is homogeneous in the load, so a copy
    with every pd scaled by s has lam / s, the same branch loadings and d lam / d pd divided by s^2,
    and the scaled copies that a monotonicity constraint makes (`gridtune.constraints.monotonic`)
    cost a look-up instead of a solve (equal to a fresh solve to about 1e-6 relative: float32
    inputs round the shares). A copy whose lam would reach MAX_SCALE, or of an entry whose lam sat
    there (its dispatch then depends on the bound), solves afresh.
    """
    if not _USE_CACHE[0] or _APPROXIMATE[0]:
        return _solve_graphs(pd, topo_key, xg, eig, eg)
    out: list[Result | None] = []
    keys, miss = [], []
    for j, row in enumerate(pd):
        k = _cache_keys(row, topo_key)
        keys.append(k)
        out.append(_cache_get(*k))
        if out[-1] is None:
            miss.append(j)
    if miss:
        for j, result in zip(miss, _solve_graphs(pd[miss], topo_key, xg, eig, eg)):
            _cache_put(*keys[j], result)
            out[j] = result
    return out  # type: ignore[return-value]


def _lookup_or_solve(xg: np.ndarray, eig: np.ndarray, eg: np.ndarray) -> Result:
    """One graph through `_solve_cached`."""
    topo_key = _digest(_topology_bytes(xg, eig, eg))
    return _solve_cached(xg[None, :, _PD].copy(), topo_key, xg, eig, eg)[0]


def loadability_features(x_raw: Tensor, edge_index: Tensor, edge_attr_raw: Tensor, index: Tensor,
                         cuts: Any = None) -> tuple[Tensor, Tensor]:
    """`dc_overload` per bus (its graph's) and the branch loading at the loadability optimum.

    `dc_overload` = 10 x (1 / lam - 1): 0 at the DC limit, +1 for a load 10% beyond what the DC
    network can carry. Near a boundary 1 / lam spans a few hundredths around 1; stated raw, that
    signal would be too small for a network's first layer to pick up quickly.

    `dc_overload` carries its first-order derivative in the `pd_pu` column of `x_raw` (from the
    LP's duals), so gradients with respect to load see it; the branch column is a constant.

    With `cuts` (a `gridtune.nn.cut_table.CutTable`), a topology the table holds is answered
    from its stored cuts, no solve (an approximation, see that module); the others are solved.

    Shapes: x_raw (N, F_bus), edge_index (2, 2E), edge_attr_raw (2E, F_branch), index (N,)
        -> (N, 1) in [-10, 10], (2E, 1) in [0, MAX_SCALE]
    """
    xr = x_raw.detach().double().cpu().numpy()
    ea = edge_attr_raw.detach().double().cpu().numpy()
    ei = edge_index.cpu().numpy()
    idx = index.cpu().numpy()
    n_graphs = int(idx.max()) + 1 if idx.size else 0
    inv = np.zeros(idx.size)
    grad = np.zeros(idx.size)  # d overload of the bus's graph / d pd of this bus
    loading = np.zeros(ea.shape[0])
    for nodes, edges, key in _topology_groups(xr, ei, ea, idx, n_graphs):
        first = nodes[0]
        results = None if cuts is None else cuts.answer(key, xr[nodes, _PD])
        if results is None:
            results = _solve_cached(xr[nodes, _PD], key, xr[first], ei[:, edges[0]] - first[0], ea[edges[0]])
        elif any(r is None for r in results):  # a load no stored cut bounds: solve it
            miss = [j for j, r in enumerate(results) if r is None]
            solved = _solve_cached(xr[nodes[miss], _PD], key, xr[first], ei[:, edges[0]] - first[0], ea[edges[0]])
            for j, r in zip(miss, solved, strict=True):
                results[j] = r
        lam = np.array([r[0] for r in results])
        inv[nodes] = np.where(lam <= 1.0 / MAX_SCALE, MAX_SCALE, 1.0 / np.maximum(lam, 1e-300))[:, None]
        dlam = np.stack([r[2] for r in results])
        # below lam 0.5, 10 x (1 / lam - 1) is clipped at 10: flat
        grad[nodes] = np.where((lam > 0.5)[:, None], -10.0 * dlam / np.maximum(lam, 0.5)[:, None] ** 2, 0.0)
        loading[edges] = np.stack([r[1] for r in results])
    dtype, device = x_raw.dtype, x_raw.device
    overload = torch.as_tensor(np.clip(10.0 * (inv - 1.0), -10.0, 10.0), dtype=dtype, device=device)
    pd_ = x_raw[:, BUS.index("pd_pu")]
    if pd_.requires_grad:  # value unchanged, first-order term for autograd
        step = (pd_ - pd_.detach()) * torch.as_tensor(grad, dtype=dtype, device=device)
        overload = overload + torch.zeros(n_graphs, dtype=dtype, device=device).index_add_(0, index, step)[index]
    return (overload.unsqueeze(-1),
            torch.as_tensor(np.minimum(loading, MAX_SCALE), dtype=dtype, device=device).unsqueeze(-1))


def _topology_groups(xr: np.ndarray, ei: np.ndarray, ea: np.ndarray, idx: np.ndarray, n_graphs: int
                     ) -> Iterator[tuple[np.ndarray, np.ndarray, bytes]]:
    """The graphs of a batch grouped by LP topology: (bus ids (k, n), branch-row ids (k, 2E), key).

    `graph_groups`' own key hashes exactly the arrays `_topology_bytes` encodes (the LP columns and
    the local edge index), so it stands for the topology key in `_TOPOLOGY_KEYS` and a topology seen
    before is not encoded and hashed again."""
    lay = layout(idx, ei, n_graphs)
    for _, nodes, edges, group_key in graph_groups(lay, ei, xr[:, _LP_BUS], ea[:, _LP_BRANCH]):
        key = _TOPOLOGY_KEYS.get(group_key)
        if key is None:
            key = _digest(_topology_bytes(xr[nodes[0]], ei[:, edges[0]] - nodes[0, 0], ea[edges[0]]))
            if len(_TOPOLOGY_KEYS) < _CACHE_MAX:
                _TOPOLOGY_KEYS[group_key] = key
        yield nodes, edges, key


def solved_topologies(graphs: Any, batch_size: int = 256) -> list[tuple[bytes, basis_lp.Topology]]:
    """Solve every graph's LP afresh (`basis_lp`, which records each solve's cut) and return the
    topologies the graphs use, with their cuts: what a `CutTable` stores."""
    from gridtune.nn.batching import input_batches

    keys: dict[bytes, None] = {}
    with uncached():
        for b in input_batches(list(graphs), batch_size):
            xr, ea = b.x.double().numpy(), b.edge_attr.double().numpy()
            idx = b.batch.numpy()
            loadability_features(b.x, b.edge_index, b.edge_attr, b.batch)
            for _, _, key in _topology_groups(xr, b.edge_index.numpy(), ea, idx, int(b.num_graphs)):
                keys[key] = None
    return [(k, basis_lp._TOPOLOGIES[k]) for k in keys if k in basis_lp._TOPOLOGIES]


def dc_load_scale(graph: Any) -> float:
    """The DC loadability lam of one scenario graph (raw features): how far its load could scale
    before no dispatch carries it within branch ratings in the lossless DC model (capped at
    MAX_SCALE; 0 when even no load cannot be served). lam < 1: DC-infeasible as drawn.

    An OPF head is trained and scored on scenarios that have an OPF solution; unlabelled draws
    (no solve) are screened with `lam >= 1` before they stand in for that population
    (`gridtune.workflows.transfer`): on case118, 95.5% of DC-infeasible scenarios are certified
    AC-infeasible.
    """
    x = graph.x.detach().double().cpu().numpy()
    ea = graph.edge_attr.detach().double().cpu().numpy()
    lam, _, _ = _lookup_or_solve(x, graph.edge_index.cpu().numpy(), ea)
    return float(lam)
