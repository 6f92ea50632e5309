"""Local stress inputs: load against its nominal value and against the branches that feed it.

Near a feasibility boundary reached by raising load, whether a scenario is feasible hangs on a few
bottlenecks: a bus on a radial line rated a little above its load, a corridor that an outage
overloads. Standardised bus features hide that: a 5% load change at one bus is a few hundredths
of a standard deviation of `pd_pu` across buses. These columns state it in dimensionless terms,
so they mean the same on case30 and on case118 (no bus ids, nothing sized by the grid):

bus (N, len(STRESS_BUS)):
    load_ratio       pd / the grid's nominal pd at the bus (`Data.nominal_load_pu`); 0 without load
    load_deviation   10 x (load_ratio / the graph's total-load ratio - 1): the bus's own deviation
                     from the system-wide scaling, in tenths (noise of 5% reads 0.5)
    load_over_feed   apparent load not covered by the bus's own generation capacity, over the
                     summed ratings of its energised branches (the most the network can bring)
    inv_degree       1 / energised branches at the bus (1 on a radial leaf, 0 when isolated)
branch (2E, len(STRESS_BRANCH)):
    s_loading        sqrt(P^2 + Q^2) / rating, P from the DC power flow (`dc_flow_features`'s
                     dispatch), Q from the same linear model with reactive injections (load met by
                     units in proportion to their Q capacity): exact on a radial branch feeding a
                     load-only bus, an apparent-power proxy elsewhere, where DC sees only P
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from gridtune.errors import DataError
from gridtune.grids.features import BRANCH_FEATURES as BF
from gridtune.grids.features import BUS_FEATURES as BUS
from gridtune.nn.topology import graph_groups, layout

STRESS_BUS = ("load_ratio", "load_deviation", "load_over_feed", "inv_degree")
STRESS_BRANCH = ("s_loading",)
MAX_RATIO = 10.0  # caps the ratios: an isolated load or an unrated branch must not dominate


def linear_flows(x_raw: np.ndarray, edge_index: np.ndarray, ea: np.ndarray, idx: np.ndarray,
                 injection: np.ndarray, shift: bool | Sequence[bool] = True) -> tuple[np.ndarray, np.ndarray]:
    """Solve the B-theta system of each graph for `injection` (p.u.).

    Lossless DC model over energised branches, angle 0 at the reference bus (graphs without one:
    their first bus). With `shift`, phase shifters act as fixed injections (MATPOWER Pbusinj).
    Graphs that share a B-theta matrix (a topology) share one dense inverse, cached across
    batches, applied to all their injections in one product. Several injection columns (e.g. P
    and Q) share one grouping and one product; `shift` then says per column whether phase
    shifters act on it.

    Shapes: x_raw (N, F_bus), edge_index (2, 2E), ea (2E, F_branch), idx (N,), injection (N,)
        or (N, k) -> theta (N,) or (N, k), flow (2E,) or (2E, k) from source to destination of
        each row (0 on outaged rows)
    """
    n = x_raw.shape[0]
    k_shape = injection.shape[1:]
    if n == 0:
        return np.zeros((0, *k_shape)), np.zeros((ea.shape[0], *k_shape))
    n_graphs = int(idx.max()) + 1
    on = ea[:, BF.index("in_service")] > 0.5
    fwd = on & (ea[:, BF.index("is_reverse")] < 0.5)
    f, t = edge_index[0, fwd], edge_index[1, fwd]
    b = 1.0 / (ea[fwd, BF.index("x_pu")] * ea[fwd, BF.index("tap_ratio")])
    p = injection.astype(float).reshape(n, -1).copy()  # (N, k)
    shifted = np.broadcast_to(np.asarray(shift, dtype=bool), (p.shape[1],))
    if shifted.any():
        shift_rad = ea[fwd, BF.index("shift_rad")]
        k = np.flatnonzero(shifted)[None, :]
        np.add.at(p, (f[:, None], k), (b * shift_rad)[:, None])
        np.add.at(p, (t[:, None], k), (-b * shift_rad)[:, None])
    ref = x_raw[:, BUS.index("is_ref")] > 0.5
    first = np.r_[True, idx[1:] != idx[:-1]]
    has_ref = np.bincount(idx, ref.astype(float), n_graphs) > 0
    ground = ref | (first & ~has_ref[idx])
    theta = _grouped_solve(edge_index, ea, idx, n_graphs, ground, p)
    if theta is None:  # buses not in graph order: one sparse solve for the whole batch
        import scipy.sparse as sp
        from scipy.sparse.linalg import spsolve

        rows = np.r_[f, t, f, t, np.arange(n)]
        cols = np.r_[f, t, t, f, np.arange(n)]
        vals = np.r_[b, b, -b, -b, np.where(ground, GROUND, FLOAT)]
        theta = np.asarray(spsolve(sp.csc_matrix((vals, (rows, cols)), shape=(n, n)), p)).reshape(n, -1)
    src, dst = edge_index[0, on], edge_index[1, on]
    sign = np.where(ea[on, BF.index("is_reverse")] < 0.5, 1.0, -1.0)
    b_on = 1.0 / (ea[on, BF.index("x_pu")] * ea[on, BF.index("tap_ratio")])
    flow = np.zeros((ea.shape[0], p.shape[1]))
    phase = (sign * ea[on, BF.index("shift_rad")])[:, None] * shifted  # (E_on, k)
    flow[on] = b_on[:, None] * (theta[src] - theta[dst] - phase)
    return theta.reshape(n, *k_shape), flow.reshape(ea.shape[0], *k_shape)


GROUND, FLOAT = 1e6, 1e-9  # diagonal terms: the reference bus held at 0, other buses regularised
_INV: OrderedDict[bytes, Tensor] = OrderedDict()  # B-theta structure -> its inverse (float64)
_INV_MAX = 2048  # structures kept (about 0.1 MB each on case118)
_STRUCTURE = [BF.index(c) for c in ("in_service", "is_reverse", "x_pu", "tap_ratio")]


def _grouped_solve(edge_index: np.ndarray, ea: np.ndarray, idx: np.ndarray, n_graphs: int, ground: np.ndarray,
                   p: np.ndarray) -> np.ndarray | None:
    """theta of every graph: one dense inverse per distinct B-theta matrix (from its LU, cached
    across batches) and one matrix product per group of graphs sharing it; None if the batch's
    buses are not in graph order."""
    try:
        lay = layout(idx, edge_index, n_graphs)
    except ValueError:
        return None
    theta = np.zeros(p.shape)
    for _, nodes, edges, key in graph_groups(lay, edge_index, ground[:, None], ea[:, _STRUCTURE]):
        inv = _INV.get(key)
        if inv is None:
            import scipy.linalg

            m = _b_theta(edge_index[:, edges[0]] - nodes[0, 0], ea[edges[0]], ground[nodes[0]])
            inv = torch.from_numpy(scipy.linalg.lu_solve(scipy.linalg.lu_factor(m), np.eye(m.shape[0])))
            _INV[key] = inv
            while len(_INV) > _INV_MAX:
                _INV.popitem(last=False)
        else:
            _INV.move_to_end(key)
        # torch, not numpy: one thread when torch has one (a BLAS pool is slow for small products)
        theta[nodes] = (inv @ torch.from_numpy(np.ascontiguousarray(p[nodes]))).numpy()  # (g, n, k)
    return theta


def _b_theta(ei: np.ndarray, ea: np.ndarray, ground: np.ndarray) -> np.ndarray:
    """The dense B-theta matrix of one graph (local bus numbering), as `linear_flows` states it."""
    n = ground.size
    fwd = (ea[:, BF.index("in_service")] > 0.5) & (ea[:, BF.index("is_reverse")] < 0.5)
    f, t = ei[0, fwd], ei[1, fwd]
    b = 1.0 / (ea[fwd, BF.index("x_pu")] * ea[fwd, BF.index("tap_ratio")])
    m = np.zeros((n, n))
    np.add.at(m, (np.r_[f, t, f, t], np.r_[f, t, t, f]), np.r_[b, b, -b, -b])
    m[np.arange(n), np.arange(n)] += np.where(ground, GROUND, FLOAT)
    return m


def proportional_injection(x_raw: np.ndarray, idx: np.ndarray, load_col: str, cap_col: str) -> np.ndarray:
    """Each graph's total load met by its units in proportion to capacity, minus the load: (N,) p.u."""
    n_graphs = int(idx.max()) + 1 if idx.size else 0
    load = x_raw[:, BUS.index(load_col)]
    cap = np.maximum(x_raw[:, BUS.index(cap_col)], 0.0)
    total_load = np.bincount(idx, load, n_graphs)
    total_cap = np.bincount(idx, cap, n_graphs)
    return cap / np.maximum(total_cap[idx], 1e-9) * total_load[idx] - load


def reactive_injection(x_raw: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The reactive injections of the `s_loading` proxy: load met by units in proportion to their
    Q capacity. (N,) p.u."""
    return proportional_injection(x_raw, idx, "qd_pu", "max_qg_pu")


def stress_features(x_raw: Tensor, edge_index: Tensor, edge_attr_raw: Tensor, nominal_load_pu: Tensor | None,
                    index: Tensor, p_flow: Tensor, q_flow: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The stress columns of the module docstring.

    The bus columns are differentiable in the load columns of `x_raw` (a gradient-based
    monotonicity constraint sees how they move with load); topology, ratings and the branch
    column are constants, like the DC flow.

    Args:
        x_raw, edge_attr_raw: unstandardised schema features.
        nominal_load_pu: `Data.nominal_load_pu` (N, 2); a graph made before it existed has none
            and gets a clear error.
        index: graph of each bus (N,).
        p_flow: signed DC active flow per branch row (2E,), p.u. (`dc_flow_features`'s dispatch).
        q_flow: the reactive flow of the `s_loading` proxy (2E,), when the caller solved it with
            `p_flow` (`linear_flows` on both columns); computed here otherwise (default: None).

    Shapes: -> bus (N, len(STRESS_BUS)), branch (2E, len(STRESS_BRANCH))
    """
    if nominal_load_pu is None:
        raise DataError("model setting `stress_features` needs graphs with `nominal_load_pu` "
                        "(made by gridtune.grids.features.to_graph); rebuild the graphs or turn it off")
    n = x_raw.shape[0]
    n_graphs = int(index.max()) + 1 if n else 0
    x = x_raw.double()
    pd_, qd = x[:, BUS.index("pd_pu")], x[:, BUS.index("qd_pu")]
    nom = nominal_load_pu.detach().double()[:, 0]
    has_load = nom.abs() > 1e-9
    ratio = torch.where(has_load, pd_ / torch.where(has_load, nom, torch.ones_like(nom)), torch.zeros_like(pd_))
    total = torch.zeros(n_graphs, dtype=x.dtype).index_add_(0, index, pd_)
    total_nom = torch.zeros(n_graphs, dtype=x.dtype).index_add_(0, index, nom).abs().clamp_min(1e-9)
    system = total / total_nom
    system = torch.where(system.abs() > 1e-9, system, torch.ones_like(system))[index]
    deviation = torch.where(has_load, 10.0 * (ratio / system - 1.0), torch.zeros_like(pd_))

    with torch.no_grad():
        xr = x_raw.detach().double().cpu().numpy()
        ea = edge_attr_raw.detach().double().cpu().numpy()
        ei = edge_index.cpu().numpy()
        idx = index.cpu().numpy()
        on = ea[:, BF.index("in_service")] > 0.5
        rate = ea[:, BF.index("rate_a_pu")]
        feed = np.bincount(ei[0, on], rate[on], n)  # each branch once per end (one row per direction)
        degree = np.bincount(ei[0, on], minlength=n).astype(float)
        if q_flow is None:
            _, q = linear_flows(xr, ei, ea, idx, reactive_injection(xr, idx), shift=False)
        else:
            q = q_flow.detach().double().cpu().numpy().reshape(-1)
        p = p_flow.detach().double().cpu().numpy().reshape(-1)
        s_loading = np.where(on, np.hypot(p, q) / np.maximum(rate, 1e-6), 0.0)
    p_net = (pd_ - x[:, BUS.index("max_pg_pu")].detach().clamp_min(0.0)).clamp_min(0.0)
    q_net = (qd - x[:, BUS.index("max_qg_pu")].detach().clamp_min(0.0)).clamp_min(0.0)
    s2 = p_net ** 2 + q_net ** 2
    s_net = torch.where(s2 > 0, s2.clamp_min(1e-18).sqrt(), torch.zeros_like(s2))
    feed_t = torch.as_tensor(feed, dtype=x.dtype)
    over_feed = torch.where(feed_t > 0, s_net / feed_t.clamp_min(1e-9),
                            torch.where(s_net > 0, torch.full_like(s_net, MAX_RATIO), torch.zeros_like(s_net)))
    inv_degree = torch.as_tensor(np.where(degree > 0, 1.0 / np.maximum(degree, 1.0), 0.0), dtype=x.dtype)

    bus = torch.stack([ratio, deviation, over_feed.clamp_max(MAX_RATIO), inv_degree], dim=-1)
    bus = bus.clamp(-MAX_RATIO, MAX_RATIO)
    branch = np.minimum(s_loading, MAX_RATIO)[:, None]
    dtype, device = x_raw.dtype, x_raw.device
    return bus.to(dtype=dtype, device=device), torch.as_tensor(branch, dtype=dtype, device=device)
