"""Shipped specs on the real grid GNN (`gridtune.nn.model.GridModelNet`): terms train, reports fill."""

from __future__ import annotations

import math

import pytest
import torch

from gridtune.constraints import constraint_report, training_term
from gridtune.core.trainer import make_loader
from gridtune.nn.model import ModelConfig, build_model
from gridtune.nn.normalizer import Normalizer
from gridtune.specs import RESOURCES

SPECS = RESOURCES / "constraints"


@pytest.fixture(scope="module")
def graphs(case9_grid, make_graphs):
    gs = make_graphs(case9_grid, 12, seed=3)
    for g in gs:  # a plausible OPF-like target so the normaliser has statistics
        y = torch.zeros(g.num_nodes, 4)
        y[:, 0] = 1.02
        cap = g.x[:, 5]
        y[:, 2] = 1.02 * g.x[:, 0].sum() * cap / cap.sum()
        g.y_opf = y
        g.y_infeasible = torch.tensor([float(g.load_scale > 1.2)])
        g.y_cost = torch.tensor([1000.0 * float(g.load_scale)])
    return gs


@pytest.mark.parametrize("spec,task", [
    ("monotone_load", "feasibility"), ("monotone_cost", "cost"), ("power_balance", "opf"), ("nodal_balance", "opf"),
    ("bounds", "opf"),
])
def test_shipped_spec_trains_and_reports_on_grid_gnn(graphs, spec, task):
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=16, layers=2, head_hidden=16), task,
                        Normalizer().fit(graphs))
    loader = make_loader(graphs, 6, shuffle=False)
    term = training_term(SPECS / f"{spec}.toml", task)
    batch = next(iter(loader))
    model.train()
    loss = term(model, batch, term.warmup_steps)  # the first step the constraint is in the loss
    loss.backward()
    grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)
    report = constraint_report(model, loader, SPECS / f"{spec}.toml", task)
    for name, r in report.items():
        assert r["n_samples"] == 12, name
        assert 0.0 <= r["violation_rate"] <= 1.0 and math.isfinite(r["max_violation"])


def test_gradient_monotonicity_on_grid_gnn_matches_paired_for_small_eps(graphs, tmp_path):
    from gridtune.constraints.base import ConstraintSet
    from gridtune.constraints.metrics import evaluate_constraints
    from gridtune.constraints.monotonic import Monotonic

    torch.manual_seed(1)
    model = build_model(ModelConfig(hidden=16, layers=2, head_hidden=16), "feasibility",
                        Normalizer().fit(graphs))
    loader = make_loader(graphs, 12, shuffle=False)
    seen = 0.0
    for sense in ("increasing", "decreasing"):  # an untrained net violates one sense or both
        cs = ConstraintSet([Monotonic("paired", eps=1e-3, sense=sense),
                            Monotonic("grad", eps=1e-3, sense=sense, method="gradient")],
                           "feasibility")
        rep = evaluate_constraints(model, loader, cs)
        # first-order agreement of the two estimators on a smooth model
        assert rep["grad"]["mean_violation"] == pytest.approx(rep["paired"]["mean_violation"],
                                                              rel=0.05, abs=1e-7)
        seen += rep["paired"]["mean_violation"]
    assert seen > 1e-6  # the comparison was not between two zeros
