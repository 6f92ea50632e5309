"""Local stress inputs (`gridtune.nn.stress`) against values worked out by hand on case9.

case9 (pandapower order, buses 1..9 -> 0..8): loads at bus 4 (90 MW, 30 Mvar), 6 (100, 35) and
8 (125, 50), no generation at those buses; branch 1 joins buses 3-4 (rated 250 MVA), branch 2
joins 4-5 (150 MVA). With branch 1 out, bus 4 hangs on branch 2 alone: a radial load.
"""

import numpy as np
import pytest
import torch
from synthetic import grid
from torch_geometric.loader import DataLoader

from gridtune.errors import DataError
from gridtune.grids.features import BRANCH_FEATURES, BUS_FEATURES, to_graph
from gridtune.grids.scenarios import Scenario
from gridtune.nn.checkpoint import load_checkpoint, save_checkpoint
from gridtune.nn.model import ModelConfig, _dc_flow, build_model
from gridtune.nn.stress import STRESS_BRANCH, STRESS_BUS, stress_features


def _case9_scenario(branch_out=()):
    g = grid("case9")
    factor = np.full(g.n_bus, 1.2)
    factor[4] = 1.26  # bus 4 draws 5% more than the system-wide 1.2
    return g, to_graph(g, Scenario(0, 1.2, g.pd_mw * factor, g.qd_mvar * factor, tuple(branch_out)))


def _stress(data, index=None):
    index = torch.zeros(data.x.shape[0], dtype=torch.long) if index is None else index
    _, flow, _ = _dc_flow(data.x, data.edge_index, data.edge_attr, index)
    return stress_features(data.x, data.edge_index, data.edge_attr, data.nominal_load_pu, index, flow)


def test_graphs_carry_the_nominal_load():
    g, data = _case9_scenario()
    np.testing.assert_allclose(data.nominal_load_pu[:, 0].numpy(), g.pd_mw / 100, rtol=1e-6)
    np.testing.assert_allclose(data.nominal_load_pu[:, 1].numpy(), g.qd_mvar / 100, rtol=1e-6)


def test_bus_columns_by_hand():
    _, data = _case9_scenario()
    bus, _ = _stress(data)
    col = {name: bus[:, k].numpy() for k, name in enumerate(STRESS_BUS)}
    assert col["load_ratio"][[4, 6, 8]] == pytest.approx([1.26, 1.2, 1.2], rel=1e-5)
    assert col["load_ratio"][[0, 1, 2, 3, 5, 7]] == pytest.approx([0.0] * 6)
    system = (90 * 1.26 + 100 * 1.2 + 125 * 1.2) / 315  # 1.21714
    assert col["load_deviation"][4] == pytest.approx(10 * (1.26 / system - 1), rel=1e-4)  # +0.352
    assert col["load_deviation"][6] == pytest.approx(10 * (1.2 / system - 1), rel=1e-4)   # -0.141
    # bus 4: 113.4 MW + 37.8 Mvar fed by 250 + 150 MVA of branches
    assert col["load_over_feed"][4] == pytest.approx(np.hypot(1.134, 0.378) / 4.0, rel=1e-5)
    assert col["load_over_feed"][0] == 0.0  # a generator bus without load
    assert col["inv_degree"][4] == pytest.approx(0.5)
    assert col["inv_degree"][0] == pytest.approx(1.0)  # bus 0 hangs on its step-up branch


def test_an_outage_makes_a_radial_load_and_its_branch_loading_exact():
    _, data = _case9_scenario(branch_out=(1,))
    bus, branch = _stress(data)
    assert bus.shape == (9, len(STRESS_BUS)) and branch.shape == (18, len(STRESS_BRANCH))
    assert bus[4, STRESS_BUS.index("inv_degree")] == pytest.approx(1.0)
    s = np.hypot(1.134, 0.378)  # the only path: branch 2 carries the whole load of bus 4
    assert bus[4, STRESS_BUS.index("load_over_feed")] == pytest.approx(s / 1.5, rel=1e-5)
    assert branch[2, 0] == pytest.approx(s / 1.5, rel=1e-4)
    assert branch[2 + 9, 0] == pytest.approx(s / 1.5, rel=1e-4)  # the reverse row alike
    assert branch[1, 0] == 0.0 and branch[1 + 9, 0] == 0.0  # the open branch carries nothing


def test_batched_values_equal_single_graph_values():
    _, a = _case9_scenario()
    _, b = _case9_scenario(branch_out=(1,))
    batch = next(iter(DataLoader([a, b], batch_size=2)))
    bus, branch = _stress(batch, batch.batch)
    for k, data in enumerate((a, b)):
        one_bus, one_branch = _stress(data)
        torch.testing.assert_close(bus[9 * k: 9 * (k + 1)], one_bus, atol=1e-6, rtol=0)
        torch.testing.assert_close(branch[18 * k: 18 * (k + 1)], one_branch, atol=1e-6, rtol=0)


def test_model_uses_the_columns_only_when_asked_and_old_graphs_fail_clearly(tmp_path):
    torch.manual_seed(0)
    _, data = _case9_scenario()
    model = build_model(ModelConfig(hidden=16, layers=2, stress_features=True), "feasibility").eval()
    louder = data.clone()
    louder.nominal_load_pu = data.nominal_load_pu * 0.5  # same load, twice its nominal value
    assert not torch.allclose(model(data), model(louder))
    plain = build_model(ModelConfig(hidden=16, layers=2, stress_features=False), "feasibility").eval()
    torch.testing.assert_close(plain(data), plain(louder))  # off: the field is not read
    loaded, _ = load_checkpoint(save_checkpoint(model, tmp_path / "ck"))
    torch.testing.assert_close(loaded(data), model(data))
    del louder.nominal_load_pu
    with pytest.raises(DataError, match="nominal_load_pu"):
        model(louder)


def test_dc_loadability_by_hand():
    """case9 (generation 250 + 300 + 270 MW, load 315 MW): with branch ratings out of the way the
    load can scale to 820 / 315 of itself; with branch 1 out, bus 4's 90 MW hang on branch 2
    (150 MVA), so the scale stops at 150 / 90 with branch 2 exactly at its rating."""
    from gridtune.nn.loadability import loadability_features

    g = grid("case9")
    index = torch.zeros(9, dtype=torch.long)
    free = to_graph(g, Scenario(0, 1.0, g.pd_mw, g.qd_mvar))
    free.edge_attr[:, BRANCH_FEATURES.index("rate_a_pu")] = 100.0
    overload, _ = loadability_features(free.x, free.edge_index, free.edge_attr, index)
    assert overload.squeeze(-1).tolist() == pytest.approx([10 * (315 / 820 - 1)] * 9, rel=1e-5)
    radial = to_graph(g, Scenario(0, 1.0, g.pd_mw, g.qd_mvar, (1,)))
    overload, loading = loadability_features(radial.x, radial.edge_index, radial.edge_attr, index)
    assert overload[0, 0] == pytest.approx(10 * (90 / 150 - 1), rel=1e-5)  # -4.0
    assert loading[2, 0] == pytest.approx(1.0, rel=1e-5) and loading[11, 0] == pytest.approx(1.0, rel=1e-5)
    assert loading[1, 0] == 0.0  # the open branch
    # the graph-level value reaches the head directly: embed grows by one column
    plain = build_model(ModelConfig(hidden=8, layers=1, dc_loadability=False), "feasibility")
    with_lp = build_model(ModelConfig(hidden=8, layers=1, dc_loadability=True), "feasibility")
    assert with_lp.embed_dim == plain.embed_dim + 1
    assert float(with_lp.embed(radial)[0, -1].detach()) == pytest.approx(-4.0, rel=1e-5)


def test_loadability_cache_answers_a_graph_seen_before_unless_told_not_to(monkeypatch):
    import gridtune.nn.loadability as lp

    g = grid("case9")
    data = to_graph(g, Scenario(0, 1.07, g.pd_mw * 1.07, g.qd_mvar * 1.07))
    index = torch.zeros(9, dtype=torch.long)
    monkeypatch.setattr(lp, "_CACHE", {})  # a load-scaled copy seen by another test would answer
    calls = []
    solve = lp._solve_graphs  # every cache miss, one row of `pd` per graph
    monkeypatch.setattr(lp, "_solve_graphs", lambda pd, *a: calls.extend([1] * len(pd)) or solve(pd, *a))
    first, _ = lp.loadability_features(data.x, data.edge_index, data.edge_attr, index)
    again, _ = lp.loadability_features(data.x, data.edge_index, data.edge_attr, index)
    with lp.uncached():
        fresh, _ = lp.loadability_features(data.x, data.edge_index, data.edge_attr, index)
    assert len(calls) == 2  # solved, looked up, solved again
    torch.testing.assert_close(first, again)
    torch.testing.assert_close(first, fresh)


def test_loadability_cache_answers_a_load_scaled_copy_as_a_fresh_solve_would(monkeypatch):
    """A monotonicity constraint scales every load by 1 + eps: the cache answers that copy from the
    unscaled graph (lam / s, gradient / s^2), equal to what solving it gives."""
    import gridtune.nn.loadability as lp
    from gridtune.constraints.monotonic import direction_columns, perturbed

    g = grid("case9")
    data = to_graph(g, Scenario(0, 1.3, g.pd_mw * 1.3, g.qd_mvar * 1.3, (1,)))
    index = torch.zeros(9, dtype=torch.long)
    monkeypatch.setattr(lp, "_CACHE", {})
    calls = []
    solve = lp._solve_graphs  # every cache miss, one row of `pd` per graph
    monkeypatch.setattr(lp, "_solve_graphs", lambda pd, *a: calls.extend([1] * len(pd)) or solve(pd, *a))
    lp.loadability_features(data.x.double(), data.edge_index, data.edge_attr.double(), index)
    scaled = perturbed(data, direction_columns("load"), torch.tensor(1.04))
    x = scaled.x.double().clone().requires_grad_(True)
    looked_up, loading = lp.loadability_features(x, data.edge_index, data.edge_attr.double(), index)
    (grad,) = torch.autograd.grad(looked_up[0, 0], x)
    assert len(calls) == 1  # the scaled copy cost no LP
    x2 = scaled.x.double().clone().requires_grad_(True)
    with lp.uncached():
        fresh, fresh_loading = lp.loadability_features(x2, data.edge_index, data.edge_attr.double(), index)
    (fresh_grad,) = torch.autograd.grad(fresh[0, 0], x2)
    assert len(calls) == 2
    torch.testing.assert_close(looked_up, fresh, rtol=1e-5, atol=1e-6)  # float32 load shares
    torch.testing.assert_close(loading, fresh_loading, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, fresh_grad, rtol=1e-5, atol=1e-6)
    other = data.clone()
    other.x = data.x.clone()
    other.x[4, BUS_FEATURES.index("pd_pu")] *= 1.5  # a different load pattern: solved
    lp.loadability_features(other.x.double(), data.edge_index, data.edge_attr.double(), index)
    assert len(calls) == 3


def test_load_driven_inputs_carry_their_gradient_in_the_load():
    """A gradient-based constraint (monotonic `method="gradient"`) differentiates the model in its
    load columns: `dc_overload` (via the LP's duals) and the load-driven stress columns must move
    as finite differences say they do. case9, branch 1 out: only bus 4's load is bottlenecked."""
    from gridtune.nn.loadability import loadability_features, uncached

    g = grid("case9")
    data = to_graph(g, Scenario(0, 1.3, g.pd_mw * 1.3, g.qd_mvar * 1.3, (1,)))
    index = torch.zeros(9, dtype=torch.long)
    x = data.x.double().clone().requires_grad_(True)
    ea = data.edge_attr.double()
    overload, _ = loadability_features(x, data.edge_index, ea, index)
    (grad,) = torch.autograd.grad(overload[0, 0], x)
    pd_col = BUS_FEATURES.index("pd_pu")
    assert grad[4, pd_col].item() == pytest.approx(10 / 1.5, rel=1e-5)  # 10 / rating of branch 2
    with uncached():  # the cache may answer from a load-scaled copy, equal to ~1e-8 only
        base, _ = loadability_features(data.x.double(), data.edge_index, ea, index)
    for bus in (4, 6):
        bumped = data.x.double().clone()
        bumped[bus, pd_col] += 1e-4
        with uncached():
            moved, _ = loadability_features(bumped, data.edge_index, ea, index)
        assert grad[bus, pd_col].item() == pytest.approx((moved[0, 0] - base[0, 0]).item() / 1e-4, abs=1e-4)
    _, flow, _ = _dc_flow(data.x, data.edge_index, data.edge_attr, index)
    bus, _ = stress_features(x, data.edge_index, ea, data.nominal_load_pu, index, flow)
    (grad,) = torch.autograd.grad(bus[4, STRESS_BUS.index("load_ratio")], x)
    assert grad[4, pd_col].item() == pytest.approx(100 / 90, rel=1e-5)  # 1 / nominal p.u. load
