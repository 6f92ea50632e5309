import math
import warnings

import numpy as np
import pytest
import torch

from gridtune.core.metrics import classification_metrics, expected_calibration_error
from gridtune.evaluation.metrics import dispatch_cost, opf_metrics
from gridtune.grids.physics import ac_power_balance


def test_classification_metrics_match_hand_computed_values():
    probs = np.array([0.1, 0.4, 0.35, 0.8])
    labels = np.array([0, 0, 1, 1])
    m = classification_metrics(probs, labels)
    # pairs (pos, neg): (0.35 > 0.1), (0.35 < 0.4), (0.8 > both): 3 of 4
    assert m["auroc"] == pytest.approx(0.75)
    assert m["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    # threshold 0.5: predicted positive only 0.8 -> TP 1, FN 1, FP 0, TN 2
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    # AP: ranks 0.8 (pos, P=1), 0.4 (neg), 0.35 (pos, P=2/3) -> (1 + 2/3) / 2
    assert m["auprc"] == pytest.approx(5 / 6)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.6, 0.35, 0.8])))


def test_ece_by_hand():
    probs = np.array([0.05, 0.05, 0.95, 0.95, 0.5])
    labels = np.array([0, 1, 1, 1, 1])
    # 15 bins: {0.05, 0.05} acc 0.5 conf 0.05; {0.95, 0.95} acc 1 conf 0.95; {0.5} acc 1 conf 0.5
    expected = 2 / 5 * 0.45 + 2 / 5 * 0.05 + 1 / 5 * 0.5
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([1, 0])) == 0.0


def test_one_class_metrics_are_undefined_with_a_reason_not_nan():
    m = classification_metrics(np.array([0.2, 0.3, np.nan]), np.array([0.0, 0.0, np.nan])[:2].tolist() + [np.nan])
    assert m["auroc"] is None and m["auprc"] is None
    assert "only one class (`feasible`) among the 2 labelled graphs" in m["undefined"]["auroc"]
    assert m["brier"] == pytest.approx((0.04 + 0.09) / 2)
    assert m["f1"] is None  # nothing positive, nothing predicted positive
    assert not any(isinstance(v, float) and math.isnan(v) for v in m.values())
    empty = classification_metrics(np.array([0.5]), np.array([np.nan]))
    assert empty["n"] == 0 and empty["ece"] is None


def test_ac_power_balance_is_zero_at_an_ac_opf_solution():
    """A real pandapower AC-OPF of case9: our branch model must close the balance it found."""
    import pandapower as pp
    import pandapower.networks as pn

    from gridtune.grids.features import to_graph
    from gridtune.grids.model import grid_from_net
    from gridtune.grids.scenarios import Scenario

    net = pn.case9()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grid = grid_from_net(net, "case9")
        pp.runopp(net, verbose=False)
    assert net.OPF_converged
    g = to_graph(grid, Scenario(0, 1.0, grid.pd_mw, grid.qd_mvar))
    pos = {b: i for i, b in enumerate(grid.bus_ids)}
    pg = np.zeros(grid.n_bus)
    for table, res in ((net.gen, net.res_gen), (net.ext_grid, net.res_ext_grid)):
        for bus, p in zip(table.bus, res.p_mw, strict=True):
            pg[pos[bus]] += p
    vm = torch.tensor(net.res_bus.vm_pu.loc[grid.bus_ids].to_numpy())
    va = torch.tensor(np.deg2rad(net.res_bus.va_degree.loc[grid.bus_ids].to_numpy()))
    nodal, losses = ac_power_balance(g.x, g.edge_index, g.edge_attr, vm, va, torch.tensor(pg / 100))
    assert float(nodal.abs().max()) * 100 < 1e-3  # MW
    assert float(losses.sum()) * 100 == pytest.approx(net.res_line.pl_mw.sum(), abs=1e-4)
    # flat voltages with the same dispatch leave the losses unserved: the residual sees that
    flat, _ = ac_power_balance(g.x, g.edge_index, g.edge_attr, torch.ones(9), torch.zeros(9), torch.tensor(pg / 100))
    assert float(flat.sum()) * 100 == pytest.approx(net.res_line.pl_mw.sum(), rel=1e-6)


def test_opf_metrics_units_and_gap():
    from synthetic import graphs

    g = next(g for g in graphs("case14", 10) if torch.isfinite(g.y_opf).all())
    y = g.y_opf.double().numpy()
    exact = opf_metrics([g], [y.copy()])
    assert exact["mae_pg_mw"] == 0.0 and exact["optimality_gap"] == pytest.approx(0.0, abs=1e-6)
    shifted = y.copy()
    shifted[:, 1] += math.radians(30.0)  # another reference angle: the same operating point
    assert opf_metrics([g], [shifted])["mae_va_degree"] == pytest.approx(0.0, abs=1e-5)
    off = y.copy()
    ref = g.x[:, 12].numpy() > 0.5
    off[~ref, 1] += math.radians(1.0)  # one degree at every bus but the reference
    gen = g.x[:, 15].numpy() > 0
    off[gen, 2] += 0.01  # 1 MW more at every generator bus
    m = opf_metrics([g], [off])
    assert m["mae_va_degree"] == pytest.approx(13 / 14, rel=1e-5)
    assert m["mae_pg_mw"] == pytest.approx(gen.sum() / 14)
    expected_gap = (dispatch_cost(g.x.numpy(), off[:, 2]) - dispatch_cost(g.x.numpy(), y[:, 2])) / float(g.y_cost)
    assert m["optimality_gap"] == pytest.approx(expected_gap, rel=1e-5) and expected_gap > 0
