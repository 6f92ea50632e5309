"""Nodal balance against exact AC power flows from pandapower; system balance by hand."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest
import torch
from torch_geometric.loader import DataLoader

from gridtune.constraints import ConstraintSet
from gridtune.constraints.conservation import NodalBalance, SystemBalance
from gridtune.errors import SpecError
from gridtune.grids.features import BUS_FEATURES, to_graph
from gridtune.grids.model import grid_from_net
from gridtune.grids.physics import nodal_mismatch
from gridtune.grids.scenarios import Scenario


@functools.cache
def ac_solution(case: str, load_scale: float = 1.0):
    """(graph, state (N, 4) float64) of an exact AC power flow of `case` at `load_scale`.

    Cached: callers must not modify what it returns (they clone).
    """
    net = getattr(pn, case)()
    net.load["p_mw"] *= load_scale
    net.load["q_mvar"] *= load_scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grid = grid_from_net(net, case)
        pp.runpp(net, tolerance_mva=1e-10, numba=False)  # no JIT: one tiny solve
    base, n = grid.base_mva, grid.n_bus
    where = {int(b): i for i, b in enumerate(grid.bus_ids)}
    pg, qg = np.zeros(n), np.zeros(n)
    for table in ("ext_grid", "gen", "sgen"):
        res = getattr(net, f"res_{table}")
        for idx, row in getattr(net, table).iterrows():
            if row.in_service:
                pg[where[int(row.bus)]] += res.p_mw[idx] / base
                qg[where[int(row.bus)]] += res.q_mvar[idx] / base
    vm = net.res_bus.vm_pu.loc[grid.bus_ids].to_numpy()
    va = np.deg2rad(net.res_bus.va_degree.loc[grid.bus_ids].to_numpy())
    graph = to_graph(grid, Scenario(0, load_scale, grid.pd_mw, grid.qd_mvar))
    return graph, torch.tensor(np.column_stack([vm, va, pg, qg]), dtype=torch.float64)


@pytest.mark.parametrize("case", ["case9", "case14"])  # case14: transformers with taps, a shunt
def test_nodal_balance_is_zero_on_an_exact_ac_power_flow(case):
    graph, state = ac_solution(case, 1.1)
    dp, dq = nodal_mismatch(graph.x.double(), graph.edge_index, graph.edge_attr.double(), state)
    assert dp.abs().max() < 1e-6 and dq.abs().max() < 1e-6


@pytest.mark.parametrize("case", ["case9", "case14"])
def test_nodal_balance_is_positive_on_a_perturbed_solution(case):
    graph, state = ac_solution(case)
    bad = state.clone()
    bad[3, 1] += 0.01  # 0.57 degree at one bus
    dp, dq = nodal_mismatch(graph.x.double(), graph.edge_index, graph.edge_attr.double(), bad)
    # the bus and its neighbours see the change; far buses do not
    assert dp.abs()[3] > 1e-2
    neighbours = graph.edge_index[1, graph.edge_index[0] == 3]
    assert torch.all(dp.abs()[neighbours] > 1e-3)
    con = NodalBalance("kcl")
    assert con.violation(None, graph, bad, train=False).item() > 1e-3
    assert con.violation(None, graph, state, train=False).item() < 1e-6


def test_phase_shift_and_tap_enter_the_branch_model():
    # changing a transformer's tap or shift in the features breaks the exact balance
    graph, state = ac_solution("case14")
    trafo = int(torch.nonzero(graph.edge_attr[:, 6] > 0.5)[0])
    for col, delta in ((4, 0.05), (5, 0.05)):  # tap_ratio, shift_rad
        g = graph.clone()
        g.edge_attr = g.edge_attr.clone()
        g.edge_attr[trafo, col] += delta
        dp, dq = nodal_mismatch(g.x.double(), g.edge_index, g.edge_attr.double(), state)
        assert (dp.abs() + dq.abs()).max() > 1e-2


def test_outaged_branch_carries_no_flow():
    graph, state = ac_solution("case9")
    g = graph.clone()
    g.edge_attr = g.edge_attr.clone()
    g.edge_attr[0, 7] = 0.0  # take branch 0 out (forward row)
    dp, _ = nodal_mismatch(g.x.double(), g.edge_index, g.edge_attr.double(), state)
    assert dp.abs().max() > 1e-2  # the same state no longer balances without that branch


def test_nodal_balance_batches_per_graph():
    g1, s1 = ac_solution("case9")
    g2, s2 = ac_solution("case9", 1.2)
    s2 = s2.clone()
    s2[:, 0] *= 1.01
    batch = next(iter(DataLoader([g1, g2], batch_size=2)))
    v = NodalBalance("kcl").violation(None, batch, torch.cat([s1, s2]), train=False)
    assert v.shape == (2,) and v[0] < 1e-6 and v[1] > 1e-3


def test_system_balance_by_hand(case9_graphs):
    g = case9_graphs[0]
    load = float(g.x[:, BUS_FEATURES.index("pd_pu")].sum())  # case9 has no shunts
    state = torch.zeros(g.num_nodes, 4)
    state[:, 0] = 1.0
    con = SystemBalance("balance", max_loss_fraction=0.05)
    ConstraintSet([con], "opf")
    for gen_total, expected in ((load * 1.02, 0.0), (load * 0.9, 0.1 * load),
                                (load * 1.10, 0.05 * load)):
        state[:, 2] = 0.0
        state[0, 2] = gen_total
        v = con.violation(None, g, state, train=False)
        assert v.item() == pytest.approx(expected, abs=1e-5)
    dc = SystemBalance("dc", mode="dc")
    state[0, 2] = load * 1.02
    assert dc.violation(None, g, state, train=False).item() == pytest.approx(0.02 * load, abs=1e-5)


def test_conservation_does_not_apply_to_feasibility_head():
    with pytest.raises(SpecError, match=r"constraint `kcl` \(kind `nodal_balance`\) does not "
                                        r"apply to task `feasibility`; it applies to `opf`"):
        ConstraintSet([NodalBalance("kcl")], "feasibility")
    with pytest.raises(SpecError, match=r"need 0 <= min_loss_fraction <= max_loss_fraction"):
        SystemBalance("b", min_loss_fraction=0.1, max_loss_fraction=0.05)
