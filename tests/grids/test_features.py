import numpy as np
import pytest
import torch

from gridtune.errors import DataError
from gridtune.grids.features import (
    BRANCH_FEATURES,
    BUS_FEATURES,
    OPF_TARGETS,
    STATUSES,
    check_graph,
    to_graph,
)
from gridtune.grids.labels import Label
from gridtune.grids.scenarios import Topology, uniform_scenario


def test_schema_shapes_are_the_same_on_every_grid(case9_grid, case14_grid):
    for grid in (case9_grid, case14_grid):
        data = to_graph(grid, uniform_scenario(grid, 1.0))
        check_graph(data)
        assert data.x.shape == (grid.n_bus, len(BUS_FEATURES))
        assert data.edge_attr.shape == (2 * grid.n_branch, len(BRANCH_FEATURES))
        assert data.y_opf.shape == (grid.n_bus, len(OPF_TARGETS))
        assert data.status.item() == STATUSES.index("unknown")  # unlabelled
        assert torch.isnan(data.y_infeasible).all()


def test_per_unit_values_and_generator_aggregation(case14_grid):
    g = case14_grid
    data = to_graph(g, uniform_scenario(g, 1.0))
    x = data.x.numpy()
    np.testing.assert_allclose(x[:, BUS_FEATURES.index("pd_pu")].sum(), g.pd_mw.sum() / 100, rtol=1e-6)
    max_pg = x[:, BUS_FEATURES.index("max_pg_pu")]
    np.testing.assert_allclose(max_pg.sum(), g.max_p_mw[g.gen_in_service].sum() / 100, rtol=1e-6)
    assert x[:, BUS_FEATURES.index("is_ref")].sum() == 1
    assert x[:, BUS_FEATURES.index("n_gen")].sum() == g.gen_in_service.sum()


def test_outages_flag_branches_and_remove_generators(case14_grid):
    g = case14_grid
    data = to_graph(g, uniform_scenario(g, 1.0, Topology(branch_out=(2,), gen_out=(1,))))
    in_service = data.edge_attr[:, BRANCH_FEATURES.index("in_service")]
    assert in_service[2] == 0 and in_service[2 + g.n_branch] == 0 and in_service.sum() == 2 * (g.n_branch - 1)
    assert data.x[:, BUS_FEATURES.index("n_gen")].sum() == g.gen_in_service.sum() - 1
    rev = data.edge_attr[:, BRANCH_FEATURES.index("is_reverse")]
    assert rev[: g.n_branch].sum() == 0 and rev[g.n_branch:].sum() == g.n_branch
    assert torch.equal(data.edge_index[0, : g.n_branch], data.edge_index[1, g.n_branch:])


def test_labels_become_targets(case9_grid):
    g = case9_grid
    va = np.linspace(0, 10, g.n_bus)
    label = Label(status="feasible", certificate="ac-opf", objective=5296.7,
                  pg_mw=np.array([90.0, 134.0, 94.0]), qg_mvar=np.zeros(3), vm_pu=np.ones(g.n_bus),
                  va_degree=va)
    data = to_graph(g, uniform_scenario(g, 1.0), label)
    assert data.y_infeasible.item() == 0 and data.y_cost.item() == pytest.approx(5296.7)
    np.testing.assert_allclose(data.y_opf[:, 1].numpy(), np.deg2rad(va), rtol=1e-6)
    assert data.y_opf[:, 2].sum().item() == pytest.approx(3.18, rel=1e-5)  # MW -> p.u. on 100 MVA
    bad = to_graph(g, uniform_scenario(g, 1.0), Label(status="infeasible", certificate="soc-infeasible"))
    assert bad.y_infeasible.item() == 1 and torch.isnan(bad.y_opf).all()


def test_non_finite_inputs_are_rejected(case9_grid):
    s = uniform_scenario(case9_grid, 1.0)
    s.pd_mw[0] = np.nan
    with pytest.raises(DataError, match=r"non-finite features"):
        to_graph(case9_grid, s)


def test_nominal_load_is_the_grids_own_whatever_the_scenario(case14_grid):
    g = case14_grid
    base = to_graph(g, uniform_scenario(g, 1.0))
    heavy = to_graph(g, uniform_scenario(g, 1.3, Topology(branch_out=(2,), gen_out=(1,))))
    assert base.nominal_load_pu.shape == (g.n_bus, 2)
    np.testing.assert_allclose(base.nominal_load_pu.numpy(), np.column_stack([g.pd_mw, g.qd_mvar]) / 100, rtol=1e-6)
    torch.testing.assert_close(heavy.nominal_load_pu, base.nominal_load_pu)
    np.testing.assert_allclose(heavy.x[:, BUS_FEATURES.index("pd_pu")].sum().item(), 1.3 * g.pd_mw.sum() / 100, rtol=1e-5)


def test_a_builder_reused_across_scenarios_gives_each_ones_own_graph(case14_grid):
    """Shared topology and generator-set parts never leak from one scenario into another: every
    graph equals the features computed for that scenario alone."""
    import dataclasses

    from gridtune.grids.features import GraphBuilder, branch_features, bus_features

    g = case14_grid
    rng = np.random.default_rng(0)
    topologies = [Topology(), Topology(branch_out=(3,)), Topology(gen_out=(1,)),
                  Topology(branch_out=(3, 7), gen_out=(1,))]
    build = GraphBuilder(g)
    for i in range(24):
        topo = topologies[i % 4]
        s = uniform_scenario(g, 0.8 + 0.02 * i, topo, scenario_id=i)
        s = dataclasses.replace(s, pd_mw=s.pd_mw * rng.uniform(0.9, 1.1, g.n_bus),
                                cost_scale=rng.uniform(0.8, 1.2, g.n_gen) if i % 3 == 0 else None)
        data = build(s)
        x = bus_features(g, s.pd_mw, s.qd_mvar, s.gen_out, s.cost_scale)
        ei, ea = branch_features(g, s.branch_out)
        assert torch.equal(data.x, torch.tensor(x, dtype=torch.float32)), i
        assert torch.equal(data.edge_index, torch.tensor(ei)), i
        assert torch.equal(data.edge_attr, torch.tensor(ea, dtype=torch.float32)), i
        fresh = to_graph(g, s)
        assert all(torch.equal(data[k], fresh[k]) for k in ("x", "edge_attr", "load_scale",
                                                             "nominal_load_pu", "scenario_id"))
