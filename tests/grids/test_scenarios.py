import networkx as nx
import numpy as np

from gridtune.grids.scenarios import (
    Topology,
    candidate_topologies,
    connectivity_safe_branches,
    outage_generators,
    sample_scenario,
)


def _draw(grid, topos, i, **kw):
    args = dict(seed=3, n_minus_1=0.5, gen_outages=0.2, scale=(0.8, 1.2), band=0.08,
                load_noise=0.05, cost_noise=0.1)
    args.update(kw)
    return sample_scenario(grid, topos, i, **args)


def test_safe_outages_keep_grid_connected(case14_grid):
    g = case14_grid
    safe = connectivity_safe_branches(g)
    # case14: the branch to bus 8 (index 7 in 0-based, through the transformer 7-8) is a bridge
    assert 0 < len(safe) < g.n_branch
    for k in range(g.n_branch):
        graph = nx.MultiGraph()
        graph.add_nodes_from(range(g.n_bus))
        graph.add_edges_from((int(g.f_bus[j]), int(g.t_bus[j])) for j in range(g.n_branch) if j != k)
        assert nx.is_connected(graph) == (k in safe)


def test_generator_outages_exclude_reference_bus(case14_grid):
    g = case14_grid
    ref_bus = int(np.flatnonzero(g.bus_type == 3)[0])
    gens = outage_generators(g)
    assert gens and all(int(g.gen_bus[i]) != ref_bus for i in gens)


def test_same_seed_same_scenario_independent_of_order(case14_grid):
    topos = candidate_topologies(case14_grid, seed=3, n_minus_1=0.5, gen_outages=0.2, candidates=5)
    a = [_draw(case14_grid, topos, i) for i in range(20)]
    b = [_draw(case14_grid, topos, i) for i in reversed(range(20))][::-1]
    for x, y in zip(a, b):
        assert np.array_equal(x.pd_mw, y.pd_mw) and x.branch_out == y.branch_out
        assert np.array_equal(x.cost_scale, y.cost_scale)
    assert len({s.load_scale for s in a}) == 20


def test_q_follows_p_at_each_loads_power_factor(case14_grid):
    g = case14_grid
    s = _draw(g, [Topology()], 0)
    has = g.pd_mw != 0
    np.testing.assert_allclose(s.qd_mvar[has] / s.pd_mw[has], g.qd_mvar[has] / g.pd_mw[has])


def test_outage_shares_and_auto_band(case14_grid):
    g = case14_grid
    topos = [Topology(critical_scale=1.5), Topology(branch_out=(3,), critical_scale=1.0),
             Topology(gen_out=(1,), critical_scale=1.2)]
    draws = [_draw(g, topos, i, scale="auto", n_minus_1=0.5, gen_outages=0.2) for i in range(400)]
    kinds = np.array(["branch" if d.branch_out else "gen" if d.gen_out else "base" for d in draws])
    assert abs((kinds == "branch").mean() - 0.5) < 0.08
    assert abs((kinds == "gen").mean() - 0.2) < 0.06
    for d in draws:
        crit = 1.0 if d.branch_out else 1.2 if d.gen_out else 1.5
        assert crit * 0.92 <= d.load_scale <= crit * 1.08
