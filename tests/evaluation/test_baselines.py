import numpy as np
import pytest
import torch
from synthetic import graphs

from gridtune.evaluation.baselines import (
    aggregate_logistic_baseline,
    dc_opf_baseline,
    dc_opf_predictions,
    system_aggregates,
)
from gridtune.grids.physics import ac_power_balance


def test_system_aggregates_by_hand():
    g = graphs("case9", 1, seed=0)[0]
    agg = system_aggregates([g])[0]
    assert agg[0] == pytest.approx(float(g.x[:, 0].sum()), rel=1e-6)
    assert agg[2] == pytest.approx(float(g.x[:, 5].sum()), rel=1e-6)
    n_out = int((g.edge_attr[:9, 7] == 0).sum())
    assert agg[3] == 9 - n_out


def test_logistic_baseline_fits_on_train_and_scores_test():
    train = graphs("case14", 60, seed=1, scale=(0.6, 1.6))
    test = graphs("case14", 30, seed=2, scale=(0.6, 1.6))
    report = aggregate_logistic_baseline(train, test)
    assert report["n"] == 30
    assert report["auroc"] > 0.8  # total load says a lot; the outage-dependent part it cannot see
    assert report["auroc"] < 1.0 or report["n_positive"] in (0, 30)
    assert len(report["probs"]) == 30


def test_logistic_baseline_undefined_on_one_class_training_data():
    train = graphs("case9", 10, scale=(0.5, 0.6))  # all feasible
    test = graphs("case9", 10, seed=3)
    report = aggregate_logistic_baseline(train, test)
    assert report["auroc"] is None
    assert "a classifier needs both classes" in report["undefined"]["auroc"]


def test_dc_baseline_residual_equals_ac_losses_at_the_dc_point():
    gs = [g for g in graphs("case14", 10) if torch.isfinite(g.y_opf).all()][:3]
    preds = dc_opf_predictions(gs)
    assert np.isnan(preds[0][:, 0]).all() and np.isnan(preds[0][:, 3]).all()
    report = dc_opf_baseline(gs)
    assert report["mae_vm_pu"] is None and "DC-OPF gives no `vm`" in report["undefined"]["mae_vm_pu"]
    expected = []
    for g, p in zip(gs, preds, strict=True):
        nodal, _ = ac_power_balance(g.x, g.edge_index, g.edge_attr, torch.ones(14),
                                    torch.tensor(p[:, 1]), torch.tensor(p[:, 2]))
        expected.append(abs(float(nodal.sum())) * 100)
    assert report["power_balance_mw"] == pytest.approx(np.mean(expected))
