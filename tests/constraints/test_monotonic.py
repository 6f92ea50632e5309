"""Monotonicity violations checked by hand on a tiny linear model."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_geometric.loader import DataLoader

from gridtune.constraints import ConstraintSet
from gridtune.constraints.monotonic import Monotonic
from gridtune.errors import SpecError
from gridtune.grids.features import BUS_FEATURES

PD, QD = BUS_FEATURES.index("pd_pu"), BUS_FEATURES.index("qd_pu")


class LinearCost(nn.Module):
    """cost = a * (sum of pd_pu) + c * (sum of qd_pu) per graph: (B,)."""

    def __init__(self, a: float, c: float = 0.0) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))
        self.c = c

    def forward(self, batch):
        per_node = self.a * batch.x[:, PD] + self.c * batch.x[:, QD]
        return torch.zeros(batch.num_graphs).index_add(0, batch.batch, per_node)


def _batch(graphs):
    return next(iter(DataLoader(graphs, batch_size=len(graphs))))


@pytest.mark.parametrize("method", ["paired", "gradient"])
def test_violation_by_hand_on_a_decreasing_linear_model(case9_graphs, method):
    batch = _batch(case9_graphs[:3])
    model = LinearCost(a=-2.0)
    con = Monotonic("mono", output="cost_per_h", direction="load", method=method, eps=0.05)
    ConstraintSet([con], "cost")
    x_before = batch.x.clone()
    v = con.violation(model, batch, model(batch), train=False)
    # f(x) - f(x (1 + eps)) = -2 S - (-2 (1.05) S) = 0.1 S with S = total pd per graph; the
    # gradient form eps * df/deps gives the same number for a linear model.
    total_pd = torch.zeros(3).index_add(0, batch.batch, batch.x[:, PD])
    torch.testing.assert_close(v, 0.1 * total_pd, rtol=1e-5, atol=1e-6)
    assert torch.equal(batch.x, x_before)  # the original batch is never modified


@pytest.mark.parametrize("method", ["paired", "gradient"])
def test_increasing_model_has_no_violation_and_sense_flips_it(case9_graphs, method):
    batch = _batch(case9_graphs[:4])
    up = LinearCost(a=3.0)
    inc = Monotonic("inc", output="cost_per_h", method=method)
    dec = Monotonic("dec", output="cost_per_h", method=method, sense="decreasing")
    assert torch.all(inc.violation(up, batch, up(batch), train=False) == 0)
    assert torch.all(dec.violation(up, batch, up(batch), train=False) > 0)


def test_direction_selects_columns(case9_graphs):
    # the model depends on Q only: `active_load` (pd only) sees nothing, `load` sees Q shrink it
    batch = _batch(case9_graphs[:2])
    model = LinearCost(a=0.0, c=-1.0)
    only_p = Monotonic("p", output="cost_per_h", direction="active_load")
    both = Monotonic("pq", output="cost_per_h", direction="load")
    assert torch.all(only_p.violation(model, batch, model(batch), train=False) == 0)
    assert torch.all(both.violation(model, batch, model(batch), train=False) > 0)


def test_paired_violation_is_differentiable_towards_monotone(case9_graphs):
    batch = _batch(case9_graphs[:2])
    model = LinearCost(a=-1.0)
    con = Monotonic("m", output="cost_per_h", random_eps=False)
    con.violation(model, batch, model(batch), train=True).sum().backward()
    assert model.a.grad < 0  # gradient descent raises a, towards an increasing model


def test_gradient_method_trains_through_the_input_gradient(case9_graphs):
    batch = _batch(case9_graphs[:2])
    model = LinearCost(a=-1.0)
    con = Monotonic("m", output="cost_per_h", method="gradient", random_eps=False)
    con.violation(model, batch, model(batch), train=True).sum().backward()
    assert model.a.grad is not None and model.a.grad < 0


def test_probability_output_uses_sigmoid_of_logits(case9_graphs, tiny_net):
    torch.manual_seed(0)
    batch = _batch(case9_graphs[:5])
    model = tiny_net("feasibility")
    con = Monotonic("m", output="p_infeasible", random_eps=False)
    ConstraintSet([con], "feasibility")
    x1 = batch.clone()
    x1.x = x1.x.clone()
    x1.x[:, [PD, QD]] *= 1.05
    expected = torch.relu(torch.sigmoid(model(batch)) - torch.sigmoid(model(x1)))
    got = con.violation(model, batch, model(batch), train=False)
    torch.testing.assert_close(got, expected)


def test_unknown_output_direction_and_task_mismatch():
    with pytest.raises(SpecError, match=r"unknown output `probability`; valid outputs: .*"
                                        r"`p_infeasible`"):
        Monotonic("m", output="probability")
    with pytest.raises(SpecError, match=r"unknown input direction `loads`; valid directions: "
                                        r"`active_load`.*`load`"):
        Monotonic("m", direction="loads")
    with pytest.raises(SpecError, match=r"constraint `m` \(kind `monotonic`\) does not apply to "
                                        r"task `opf`: output `p_infeasible` is not produced by "
                                        r"it; valid outputs for `opf`: `total_pg_pu`"):
        ConstraintSet([Monotonic("m")], "opf")
    with pytest.raises(SpecError, match=r"`eps` must lie in \(0, 1\], got `0.0`"):
        Monotonic("m", eps=0.0)
