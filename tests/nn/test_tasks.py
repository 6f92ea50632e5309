import math

import pytest
import torch
from torch_geometric.data import Batch, Data

from gridtune.errors import GridtuneError
from gridtune.nn.tasks import make_task


def _batch(y_inf, y_opf=None, y_cost=None):
    gs = []
    for i, y in enumerate(y_inf):
        d = Data(x=torch.zeros(2, 1), y_infeasible=torch.tensor([y]))
        if y_opf is not None:
            d.y_opf = y_opf[i]
        if y_cost is not None:
            d.y_cost = torch.tensor([y_cost[i]])
        gs.append(d)
    return Batch.from_data_list(gs)


def test_feasibility_loss_skips_unlabelled_graphs_and_weights_positives():
    batch = _batch([1.0, 0.0, math.nan])
    logits = torch.tensor([0.0, 2.0, 100.0])
    task = make_task("feasibility")
    # BCE by hand: -log(0.5) for the infeasible, -log(1 - sigmoid(2)) for the feasible; NaN dropped
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert float(task.loss(logits, batch)) == pytest.approx(expected, rel=1e-6)
    weighted = make_task("feasibility", pos_weight=3.0)
    assert float(weighted.loss(logits, batch)) == pytest.approx((3 * math.log(2) + math.log(1 + math.exp(2))) / 2, rel=1e-6)
    assert float(task.loss(logits[2:], _batch([math.nan]))) == 0.0


def test_feasibility_metrics_and_score():
    task = make_task("feasibility")
    m = task.metrics(torch.tensor([-2.0, -1.0, 1.0, 3.0, 0.0]), torch.tensor([0.0, 1.0, 0.0, 1.0, math.nan]))
    assert m["auroc"] == pytest.approx(0.75)
    assert task.val_score(m) == m["auroc"]
    one = task.metrics(torch.tensor([-2.0, -1.0]), torch.tensor([0.0, 0.0]))
    assert math.isnan(one["auroc"]) and task.val_score(one) == -one["log_loss"]


def test_opf_loss_is_standardised_over_feasible_graphs():
    y = [torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 0.1, 0.0, 0.0]]), torch.full((2, 4), math.nan)]
    batch = _batch([0.0, math.nan], y_opf=y)
    out = torch.cat([y[0] + torch.tensor([0.03, 0.0, 0.0, 0.0]), torch.zeros(2, 4)])
    task = make_task("opf", target_std=(0.03, 0.2, 1.0, 0.5))
    # error of one std on vm at both feasible buses, zero elsewhere: mean of z^2 = 2 / 8
    assert float(task.loss(out, batch)) == pytest.approx(0.25, rel=1e-5)
    m = task.metrics(out, batch.y_opf)
    assert m["mae_vm_pu"] == pytest.approx(0.03, rel=1e-5) and m["mae_pg_pu"] == 0.0


def test_cost_loss_is_relative_without_scale():
    batch = _batch([0.0, 0.0], y_cost=[100.0, 1000.0])
    task = make_task("cost")
    assert float(task.loss(torch.tensor([110.0, 1100.0]), batch)) == pytest.approx(0.01, rel=1e-5)


def test_unknown_task_and_bad_options():
    with pytest.raises(GridtuneError, match=r"unknown task `cosst`; valid: `cost`, `feasibility`, `opf`"):
        make_task("cosst")
    with pytest.raises(GridtuneError, match=r"`pos_weight` must be positive, got `0.0`"):
        make_task("feasibility", pos_weight=0.0)
