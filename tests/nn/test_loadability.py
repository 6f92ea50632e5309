"""The per-topology DC loadability solve (`gridtune.nn.basis_lp`) against the reference LP.

Scenarios on case14 and case118 with load noise and single-branch outages (so several topologies
share one batch): the warm-started scaled LP must give the reference LP's `lam` and, where that is
unique, its load sensitivity; a phase shifter and an islanded, generator-less load exercise the
shift injections and the fallback to the reference LP.
"""

import numpy as np
import pytest
import torch
from synthetic import grid
from torch_geometric.loader import DataLoader

import gridtune.nn.basis_lp as basis_lp
import gridtune.nn.loadability as lp
from gridtune.grids.features import BRANCH_FEATURES, BUS_FEATURES, to_graph
from gridtune.grids.scenarios import Scenario

PD = BUS_FEATURES.index("pd_pu")


def _graphs(case, n, seed=0, outages=4, scale=(0.8, 1.6)):
    g = grid(case)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        s = rng.uniform(*scale)
        noise = 1 + 0.05 * rng.standard_normal(g.n_bus)
        branch_out = (int(rng.integers(outages)),) if rng.random() < 0.6 else ()
        out.append(to_graph(g, Scenario(i, s, g.pd_mw * s * noise, g.qd_mvar * s * noise, branch_out)))
    return out


def _features(batch, x=None, reference=False):
    x = batch.x.double() if x is None else x
    with lp.uncached():
        if reference:
            with lp.reference_lp():
                return lp.loadability_features(x, batch.edge_index, batch.edge_attr.double(), batch.batch)
        return lp.loadability_features(x, batch.edge_index, batch.edge_attr.double(), batch.batch)


def _lams(graphs, reference):
    out = []
    for d in graphs:
        x, ea, ei = d.x.double().numpy(), d.edge_attr.double().numpy(), d.edge_index.numpy()
        if reference:
            out.append(lp._solve(x, ei, ea)[0])
        else:
            with lp.uncached():
                out.append(lp._lookup_or_solve(x, ei, ea)[0])
    return np.array(out)


@pytest.mark.parametrize("case,n", [("case14", 60), ("case118", 40)])
def test_batched_solve_equals_the_reference_lp(case, n):
    basis_lp.clear()
    graphs = _graphs(case, n)
    batch = next(iter(DataLoader(graphs, batch_size=n)))
    x_new = batch.x.double().clone().requires_grad_(True)
    x_ref = batch.x.double().clone().requires_grad_(True)
    new, new_loading = _features(batch, x_new)
    ref, ref_loading = _features(batch, x_ref, reference=True)
    torch.testing.assert_close(new, ref, rtol=0, atol=1e-8)  # 10 x (1 / lam - 1)
    np.testing.assert_allclose(_lams(graphs, False), _lams(graphs, True), rtol=1e-9)
    (g_new,) = torch.autograd.grad(new.sum(), x_new)
    (g_ref,) = torch.autograd.grad(ref.sum(), x_ref)
    torch.testing.assert_close(g_new, g_ref, rtol=1e-6, atol=1e-7)
    # the loading at the limit is the same wherever it is unique: the branches that bind
    binds = ref_loading > 1 - 1e-9
    assert torch.all(new_loading[binds] > 1 - 1e-6)
    assert torch.all(new_loading <= 1 + 1e-6)
    assert basis_lp.stats()["topologies"] >= 3  # outages: several topologies in one batch


def test_one_lp_per_topology_and_warm_solves():
    basis_lp.clear()
    graphs = _graphs("case14", 30, seed=1, outages=2)
    batch = next(iter(DataLoader(graphs, batch_size=30)))
    _features(batch)
    stats = basis_lp.stats()
    assert stats["solves"] == 30 and stats["topologies"] <= 3
    _features(batch)  # uncached: solved again, on the same topologies
    assert basis_lp.stats()["solves"] == 60 and basis_lp.stats()["topologies"] == stats["topologies"]
    basis_lp.clear()
    assert basis_lp.stats() == {"topologies": 0, "cuts": 0, "solves": 0}


def test_result_cache_spares_the_solve_and_reference_mode_bypasses_the_topologies(monkeypatch):
    monkeypatch.setattr(lp, "_CACHE", {})
    basis_lp.clear()
    graphs = _graphs("case14", 8, seed=2)
    batch = next(iter(DataLoader(graphs, batch_size=8)))
    x, ea = batch.x.double(), batch.edge_attr.double()
    first, _ = lp.loadability_features(x, batch.edge_index, ea, batch.batch)
    assert basis_lp.stats()["solves"] == 8
    again, _ = lp.loadability_features(x, batch.edge_index, ea, batch.batch)
    assert basis_lp.stats()["solves"] == 8  # all from the cache
    torch.testing.assert_close(first, again)
    calls = []
    solve = lp._solve
    monkeypatch.setattr(lp, "_solve", lambda *a: calls.append(1) or solve(*a))
    with lp.uncached(), lp.reference_lp():
        ref, _ = lp.loadability_features(x, batch.edge_index, ea, batch.batch)
    assert len(calls) == 8 and basis_lp.stats()["solves"] == 8
    torch.testing.assert_close(first, ref, rtol=0, atol=1e-8)


def test_phase_shifter_and_an_island_without_generation():
    g = grid("case14")
    data = to_graph(g, Scenario(0, 1.1, g.pd_mw * 1.1, g.qd_mvar * 1.1))
    shifted = data.clone()
    shifted.edge_attr = data.edge_attr.clone()
    e = data.edge_attr.shape[0] // 2
    shifted.edge_attr[[3, 3 + e], BRANCH_FEATURES.index("shift_rad")] = 0.05  # both directions
    shifted.edge_attr[:, BRANCH_FEATURES.index("rate_a_pu")] *= 0.5  # make ratings bind
    islanded = data.clone()
    islanded.edge_attr = data.edge_attr.clone()
    # bus 7 (0-based) hangs on branch 13 alone in case14 (pandapower order): cut it, keep its load
    rows = np.flatnonzero((data.edge_index[0].numpy() == 7) | (data.edge_index[1].numpy() == 7))
    islanded.edge_attr[rows, BRANCH_FEATURES.index("in_service")] = 0.0
    islanded.x = data.x.clone()
    islanded.x[7, PD] = 0.2
    islanded.x[7, BUS_FEATURES.index("max_pg_pu")] = 0.0
    islanded.x[7, BUS_FEATURES.index("n_gen")] = 0.0
    for d in (shifted, islanded):
        basis_lp.clear()
        assert _lams([d], False)[0] == pytest.approx(_lams([d], True)[0], rel=1e-9, abs=1e-12)
    assert _lams([islanded], False)[0] == 0.0  # a load no generator can reach: no margin


def test_cut_bound_is_exact_for_seen_bottlenecks_and_an_upper_bound_otherwise():
    basis_lp.clear()
    graphs = _graphs("case118", 24, seed=3, outages=1)
    x = graphs[0].x.double().numpy()
    ei, ea = graphs[0].edge_index.numpy(), graphs[0].edge_attr.double().numpy()
    same = [d for d in graphs if torch.equal(d.edge_attr, graphs[0].edge_attr)]
    key = lp._digest(lp._topology_bytes(x, ei, ea))
    topo = basis_lp.topology(key, x, ei, ea)
    pd = np.stack([d.x[:, PD].double().numpy() for d in same], axis=1)
    exact = [r[0] for r in basis_lp.solve_group(topo, pd)]
    bound = [r[0] for r in basis_lp.bound_group(topo, pd)]
    np.testing.assert_allclose(bound, exact, rtol=1e-9)  # every bottleneck seen
    fresh = pd * np.random.default_rng(4).uniform(0.7, 1.3, pd.shape)
    approx = np.array([r[0] for r in basis_lp.bound_group(topo, fresh)])
    truth = np.array([r[0] for r in basis_lp.solve_group(topo, fresh)])
    assert np.all(approx >= truth * (1 - 1e-9))


def test_grouped_dc_flow_equals_one_sparse_solve(monkeypatch):
    """`linear_flows` solves graphs sharing a B-theta matrix with one cached inverse; the angles
    and flows equal one sparse solve of the whole batch (a phase shifter and outages included)."""
    import gridtune.nn.stress as stress

    graphs = _graphs("case118", 12, seed=5, outages=3)
    e = graphs[0].edge_attr.shape[0] // 2
    graphs[1].edge_attr = graphs[1].edge_attr.clone()
    graphs[1].edge_attr[[7, 7 + e], BRANCH_FEATURES.index("shift_rad")] = 0.03
    batch = next(iter(DataLoader(graphs, batch_size=12)))
    x, ea, ei, idx = (batch.x.double().numpy(), batch.edge_attr.double().numpy(), batch.edge_index.numpy(),
                      batch.batch.numpy())
    p = stress.proportional_injection(x, idx, "pd_pu", "max_pg_pu")
    theta, flow = stress.linear_flows(x, ei, ea, idx, p)
    monkeypatch.setattr(stress, "_grouped_solve", lambda *a: None)  # the single sparse solve
    theta_ref, flow_ref = stress.linear_flows(x, ei, ea, idx, p)
    np.testing.assert_allclose(theta, theta_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(flow, flow_ref, rtol=0, atol=1e-10)


def test_graph_groups_find_equal_structures_only():
    from gridtune.nn.topology import graph_groups, layout

    graphs = _graphs("case14", 10, seed=6, outages=2)
    batch = next(iter(DataLoader(graphs, batch_size=10)))
    ei, ea, idx = batch.edge_index.numpy(), batch.edge_attr.double().numpy(), batch.batch.numpy()
    groups = list(graph_groups(layout(idx, ei), ei, np.zeros((idx.size, 1)), ea))
    assert sorted(int(g) for gid, *_ in groups for g in gid) == list(range(10))
    for gid, nodes, edges, _key in groups:
        for g in gid:
            assert torch.equal(graphs[g].edge_attr, graphs[gid[0]].edge_attr)
        assert nodes.shape == (gid.size, 14) and edges.shape[0] == gid.size
    outs = {tuple(d.edge_attr[:, BRANCH_FEATURES.index("in_service")].tolist()) for d in graphs}
    assert len(groups) == len(outs) and len({k for *_, k in groups}) == len(groups)


def test_graph_groups_of_a_mixed_batch_match_those_of_each_grid_alone():
    """Graphs of two grids interleaved: each size's graphs are no longer consecutive in the
    batch (the gathering path); the groups and their keys are those of each grid batched alone
    (the path that reads the batch's arrays in place)."""
    from gridtune.nn.topology import graph_groups, layout

    def groups(graphs):
        batch = next(iter(DataLoader(graphs, batch_size=len(graphs))))
        ei, ea, idx = batch.edge_index.numpy(), batch.edge_attr.double().numpy(), batch.batch.numpy()
        found = list(graph_groups(layout(idx, ei), ei, batch.x.double().numpy()[:, :2], ea))
        return {key for *_, key in found}, found

    a, b = _graphs("case9", 6, seed=3, outages=2), _graphs("case14", 6, seed=4, outages=2)
    mixed = [g for pair in zip(a, b, strict=True) for g in pair]
    alone_a, _ = groups(a)
    alone_b, _ = groups(b)
    together, found = groups(mixed)
    assert together == alone_a | alone_b  # the same keys, whichever path made them
    for gid, nodes, _edges, _key in found:
        for g in gid:
            assert torch.equal(mixed[g].edge_attr, mixed[gid[0]].edge_attr)
        assert nodes.shape[1] == mixed[gid[0]].num_nodes
    assert sorted(int(g) for gid, *_ in found for g in gid) == list(range(12))


def test_cut_bounds_answer_without_a_solve_and_leave_the_cache_alone(monkeypatch):
    monkeypatch.setattr(lp, "_CACHE", {})
    basis_lp.clear()
    graphs = _graphs("case118", 16, seed=7, outages=1)
    batch = next(iter(DataLoader(graphs, batch_size=16)))
    with lp.uncached():
        exact, exact_loading = _features(batch)
    solves = basis_lp.stats()["solves"]
    with lp.cut_bounds():
        approx, approx_loading = _features(batch)
        lp.loadability_features(batch.x.double(), batch.edge_index, batch.edge_attr.double(), batch.batch)
    assert basis_lp.stats()["solves"] == solves and lp._CACHE == {}
    torch.testing.assert_close(approx, exact, rtol=0, atol=1e-8)  # these very loads made the cuts
    assert approx_loading.shape == exact_loading.shape
    binds = approx_loading > 1 - 1e-9
    assert torch.all(exact_loading[binds] > 1 - 1e-6)  # a cut's bottleneck binds in its scenarios
