import dataclasses

import pytest
import torch
from synthetic import graphs
from torch import nn
from torch_geometric.loader import DataLoader

from gridtune.core.protocol import TransferModel, encoder_blocks
from gridtune.errors import GridtuneError
from gridtune.grids.features import BRANCH_FEATURES, BUS_FEATURES
from gridtune.grids.physics import ac_power_balance
from gridtune.nn.model import ModelConfig, build_model
from gridtune.nn.normalizer import Normalizer


@pytest.fixture(scope="module")
def mixed():
    """case9 and case14 graphs in one list: the same model must take both."""
    return graphs("case9", 4, seed=1) + graphs("case14", 4, seed=2)


@pytest.mark.parametrize("conv", ["gine", "gatv2", "transformer"])
@pytest.mark.parametrize("task,node_level", [("feasibility", False), ("opf", True), ("cost", False)])
def test_shapes_on_two_grid_sizes(mixed, conv, task, node_level):
    torch.manual_seed(0)
    model = build_model(ModelConfig(conv=conv, hidden=16, layers=2, heads=2), task).eval()
    batch = next(iter(DataLoader(mixed, batch_size=len(mixed))))
    out = model(batch)
    n_bus = 9 * 4 + 14 * 4
    assert out.shape == ((n_bus, 4) if node_level else (8,))
    assert model.embed(batch).shape == ((n_bus if node_level else 8), model.embed_dim)
    assert torch.isfinite(out).all()
    # a graph alone gives what it gives inside a mixed batch: nothing leaks between grids
    alone = model(mixed[0])
    first = out[:9] if node_level else out[:1]
    torch.testing.assert_close(alone, first, rtol=1e-4, atol=1e-5)


def test_follows_transfer_contract_and_uses_plain_linear():
    model = build_model(ModelConfig(hidden=16, layers=3), "feasibility")
    assert isinstance(model, TransferModel)
    assert len(encoder_blocks(model)) == 3
    assert isinstance(model.encoder.edge_input, nn.Linear)
    assert all(isinstance(m, nn.Linear) for m in model.head.mlp if not isinstance(m, nn.SiLU))
    g = graphs("case9", 1)[0]
    h = torch.randn(9, 16)
    ei = g.edge_index
    e = torch.randn(ei.shape[1], 16)
    assert model.encoder.blocks[0](h, ei, e).shape == (9, 16)
    model.head = nn.Linear(model.embed_dim, 1)  # head swap
    assert model(g).shape == (1, 1)


def test_outaged_branches_carry_no_messages():
    torch.manual_seed(0)
    g = graphs("case14", 1)[0].clone()
    on = BRANCH_FEATURES.index("in_service")
    r = BRANCH_FEATURES.index("r_pu")
    config = ModelConfig(hidden=16, layers=3, outage_messages=False, edge_readout=False)
    model = build_model(config, "opf").eval()
    model.config = dataclasses.replace(config, balance_pg=False)  # compare raw outputs
    g.edge_attr[[0, 20], on] = 0.0  # branch 0 out, both directions (20 branches in case14)
    before = model(g)
    changed = g.clone()
    changed.edge_attr[[0, 20], r] += 5.0  # an open branch's impedance cannot matter
    torch.testing.assert_close(model(changed), before)
    live = g.clone()
    live.edge_attr[[1, 21], r] += 5.0  # an energised one's does
    assert not torch.allclose(model(live), before)


def test_opf_output_closes_system_balance_and_keeps_generation_at_generator_buses():
    torch.manual_seed(0)
    gs = graphs("case14", 3)
    model = build_model(ModelConfig(hidden=16, layers=2), "opf", Normalizer().fit(gs)).eval()
    batch = next(iter(DataLoader(gs, batch_size=3)))
    out = model(batch).detach()
    no_gen = batch.x[:, BUS_FEATURES.index("n_gen")] == 0
    assert (out[no_gen][:, 2:] == 0).all()
    for i, g in enumerate(gs):
        o = out[batch.ptr[i]:batch.ptr[i + 1]]
        nodal, _ = ac_power_balance(g.x, g.edge_index, g.edge_attr, o[:, 0], o[:, 1], o[:, 2])
        assert abs(float(nodal.sum())) * 100 < 1e-2  # MW, on a 100 MVA base
    raw = build_model(ModelConfig(hidden=16, layers=2, balance_pg=False), "opf", Normalizer().fit(gs))
    raw.load_state_dict(model.state_dict())
    o = raw(gs[0]).detach()
    nodal, _ = ac_power_balance(gs[0].x, gs[0].edge_index, gs[0].edge_attr, o[:, 0], o[:, 1], o[:, 2])
    assert abs(float(nodal.sum())) * 100 > 1.0  # without the completion an untrained model is off


def test_unknown_names_list_choices():
    with pytest.raises(GridtuneError, match=r"unknown model `gcn`; valid: `gatv2`, `gine`, `transformer`"):
        ModelConfig(conv="gcn")
    with pytest.raises(GridtuneError, match=r"unknown task `power`; valid: `cost`, `feasibility`, `opf`"):
        build_model(ModelConfig(), "power")
    with pytest.raises(GridtuneError, match=r"`dropout` must lie in \[0, 1\), got `1.5`"):
        ModelConfig(dropout=1.5)


def test_normalizer_is_fitted_on_given_graphs_and_keeps_indicators():
    gs = graphs("case14", 10)
    nz = Normalizer().fit(gs)
    x = torch.cat([g.x for g in gs])
    pd = BUS_FEATURES.index("pd_pu")
    assert float(nz.x_mean[pd]) == pytest.approx(float(x[:, pd].mean()), rel=1e-5)
    z = nz.bus(x)
    assert float(z[:, pd].mean()) == pytest.approx(0.0, abs=1e-5)
    is_ref = BUS_FEATURES.index("is_ref")
    torch.testing.assert_close(z[:, is_ref], x[:, is_ref])  # 0/1 indicators stay 0/1


def test_dc_flow_inputs_match_pandapower_dc_power_flow():
    """Angles of the capacity-proportional DC power flow equal pandapower's `rundcpp` (case14, taps)."""
    import warnings

    import numpy as np
    import pandapower as pp
    import pandapower.networks as pn

    from gridtune.grids.features import to_graph
    from gridtune.grids.model import grid_from_net
    from gridtune.grids.scenarios import Scenario
    from gridtune.nn.model import dc_flow_features

    net = pn.case14()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grid = grid_from_net(net, "case14")
    g = to_graph(grid, Scenario(0, 1.0, grid.pd_mw, grid.qd_mvar))
    total_cap = net.gen.max_p_mw.sum() + net.ext_grid.max_p_mw.sum()
    net.gen.p_mw = net.gen.max_p_mw / total_cap * grid.pd_mw.sum()
    pp.rundcpp(net)
    va = np.deg2rad(net.res_bus.va_degree.loc[grid.bus_ids].to_numpy())
    va -= va[int(np.argmax(g.x[:, BUS_FEATURES.index("is_ref")].numpy()))]
    theta, loading = dc_flow_features(g.x, g.edge_index, g.edge_attr, torch.zeros(14, dtype=torch.long))
    np.testing.assert_allclose(theta.squeeze(-1).numpy(), va, atol=1e-6)
    # both directions of a branch carry the same loading; a batch of two graphs gives the same values
    torch.testing.assert_close(loading[:20], loading[20:])
    batch = next(iter(DataLoader([g, g], batch_size=2)))
    theta2, loading2 = dc_flow_features(batch.x, batch.edge_index, batch.edge_attr, batch.batch)
    torch.testing.assert_close(theta2[14:], theta, atol=1e-6, rtol=0)
    torch.testing.assert_close(loading2[40:], loading, atol=1e-6, rtol=0)


def test_outaged_degree_counts_each_open_branch_at_both_ends():
    from gridtune.nn.model import outaged_degree

    # 4-bus ring 0-1-2-3-0, one row per direction; branch 1-2 is open
    ei = torch.tensor([[0, 1, 2, 3, 1, 2, 3, 0], [1, 2, 3, 0, 0, 1, 2, 3]])
    on = torch.tensor([True, False, True, True, True, False, True, True])
    assert outaged_degree(ei, on, 4).squeeze(-1).tolist() == [0.0, 1.0, 1.0, 0.0]


def test_an_outage_is_visible_to_the_readout_even_on_an_isolated_pair():
    """With `outage_feature` the buses at either end of an open branch know it; the pooled
    representation then differs from the same grid with that branch simply absent."""
    torch.manual_seed(0)
    g = graphs("case14", 1)[0].clone()
    on = BRANCH_FEATURES.index("in_service")
    g.edge_attr[[0, 20], on] = 0.0
    absent = g.clone()
    keep = torch.ones(g.edge_index.shape[1], dtype=torch.bool)
    keep[[0, 20]] = False
    absent.edge_index, absent.edge_attr = g.edge_index[:, keep], g.edge_attr[keep]
    for flag, differs in ((False, False), (True, True)):
        model = build_model(ModelConfig(hidden=16, layers=2, outage_feature=flag, outage_messages=False,
                                        edge_readout=False),
                            "feasibility").eval()
        assert (not torch.allclose(model(g), model(absent))) is differs


def test_edge_readout_sees_branch_loading_directly():
    """A branch's DC loading reaches the edge readout even through a model with no blocks' help:
    raising one energised branch's rating changes the pooled branch states."""
    torch.manual_seed(0)
    g = graphs("case14", 1)[0]
    model = build_model(ModelConfig(hidden=16, layers=1, edge_readout=True, dc_loadability=False), "feasibility").eval()
    assert model.embed_dim == 4 * 16 + 2
    rated = g.clone()
    rated.edge_attr[[3, 23], BRANCH_FEATURES.index("rate_a_pu")] *= 4.0
    z, z_rated = model.embed(g), model.embed(rated)
    edge_part = slice(16, 48)  # [mean h, mean/max branch states, max h, context]
    assert not torch.allclose(z[:, edge_part], z_rated[:, edge_part])



def test_input_clip_bounds_standardised_inputs_far_outside_the_training_range(mixed):
    """A column constant on the training grids (std floored at 0.01) far off on another grid: the
    clipped model answers as it would at the bound, the unclipped one follows the huge value."""
    norm = Normalizer().fit(mixed)
    col = BUS_FEATURES.index("min_pg_pu")
    far, edge = mixed[0].clone(), mixed[0].clone()
    far.x[:, col] = norm.x_mean[col] + 500 * norm.x_std[col]
    edge.x[:, col] = norm.x_mean[col] + 5 * norm.x_std[col]
    outs = {}
    for clip in (None, 5.0):
        torch.manual_seed(0)
        model = build_model(ModelConfig(hidden=16, layers=2, input_clip=clip), "feasibility", norm).eval()
        outs[clip] = (model(far), model(edge))
    torch.testing.assert_close(outs[5.0][0], outs[5.0][1])
    assert not torch.allclose(outs[None][0], outs[None][1])
    with pytest.raises(GridtuneError, match="`input_clip` must be positive"):
        ModelConfig(input_clip=0.0)


def test_head_hidden_zero_is_a_linear_head_whose_logits_come_from_the_embedding(mixed):
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=16, layers=2, head_hidden=0), "feasibility").eval()
    linear = list(model.head.mlp)
    assert len(linear) == 1 and isinstance(linear[0], nn.Linear)
    assert (linear[0].in_features, linear[0].out_features) == (model.embed_dim, 1)
    batch = next(iter(DataLoader(mixed, batch_size=len(mixed))))
    with torch.no_grad():
        model.logit_scale.fill_(2.0)  # a calibrated model: head_logits applies it too
        torch.testing.assert_close(model.head_logits(model.embed(batch)), model(batch))
    with pytest.raises(GridtuneError, match="`head_hidden` must be at least 0"):
        ModelConfig(head_hidden=-1)
