"""DC projection: lands inside the feasible set, leaves feasible points where they are."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gridtune.constraints.projection import (
    DispatchProjection,
    dc_susceptance,
    forward_branches,
    project_predictions,
)
from gridtune.errors import GridtuneError
from gridtune.grids.features import BRANCH_FEATURES, BUS_FEATURES

X = {n: BUS_FEATURES.index(n) for n in BUS_FEATURES}
RATE = BRANCH_FEATURES.index("rate_a_pu")


def dc_flows(graph, pg: np.ndarray) -> np.ndarray:
    """Branch flows of a balanced dispatch by an independent DC power flow (reduced B solve)."""
    x = graph.x.numpy().astype(float)
    ei, attr = forward_branches(graph.edge_index.numpy(), graph.edge_attr.numpy().astype(float))
    b = dc_susceptance(attr)
    shift = attr[:, BRANCH_FEATURES.index("shift_rad")]
    n = x.shape[0]
    inc = np.zeros((len(b), n))
    inc[np.arange(len(b)), ei[0]] = 1
    inc[np.arange(len(b)), ei[1]] = -1
    bbus = inc.T @ (b[:, None] * inc)
    p = pg - x[:, X["pd_pu"]] - x[:, X["gs_pu"]] + inc.T @ (b * shift)
    ref = int(np.argmax(x[:, X["is_ref"]]))
    keep = [i for i in range(n) if i != ref]
    theta = np.zeros(n)
    theta[keep] = np.linalg.solve(bbus[np.ix_(keep, keep)], p[keep])
    return b * (inc @ theta - shift)


def check_feasible(graph, pg: np.ndarray, tol: float = 1e-5) -> None:
    x = graph.x.numpy().astype(float)
    assert np.all(pg >= x[:, X["min_pg_pu"]] - tol) and np.all(pg <= x[:, X["max_pg_pu"]] + tol)
    assert abs(pg.sum() - x[:, X["pd_pu"]].sum() - x[:, X["gs_pu"]].sum()) < tol
    _, attr = forward_branches(graph.edge_index.numpy(), graph.edge_attr.numpy())
    assert np.all(np.abs(dc_flows(graph, pg)) <= attr[:, RATE] + 1e-4)


@pytest.fixture(scope="module")
def tight_case9(case9_grid, make_graphs):
    """case9 at nominal load with ratings cut to 60%: line limits bind."""
    grid = case9_grid.with_ratings(case9_grid.rate_a_mva * 0.6)
    return make_graphs(grid, 3, low=0.9, high=1.0)


def test_projection_lands_inside_the_feasible_set(tight_case9):
    rng = np.random.default_rng(0)
    graph = tight_case9[0]
    proj = DispatchProjection(graph)
    pmax = graph.x[:, X["max_pg_pu"]].numpy()
    for _ in range(3):
        guess = pmax * rng.uniform(0.0, 1.3, pmax.shape)  # out of limits and unbalanced
        res = proj.project(graph, guess)
        assert res.status == "optimal"
        check_feasible(graph, res.pg_pu)
        assert res.distance_pu == pytest.approx(np.linalg.norm(res.pg_pu - guess), rel=1e-6)
        assert res.distance_pu > 0.01
        x = graph.x.numpy().astype(float)
        c2, c1 = x[:, X["cost_c2_per_pu2h"]], x[:, X["cost_c1_per_puh"]]
        change = np.sum(c2 * res.pg_pu**2 + c1 * res.pg_pu) - np.sum(c2 * guess**2 + c1 * guess)
        assert res.cost_change_per_h == pytest.approx(change, rel=1e-6)


def test_line_limits_bind_when_enforced(tight_case9):
    graph = tight_case9[0]
    # all generation from the cheapest-looking (first) generator bus breaks line limits
    gen_buses = np.flatnonzero(graph.x[:, X["n_gen"]].numpy() > 0)
    guess = np.zeros(graph.num_nodes)
    guess[gen_buses[0]] = float(graph.x[:, X["pd_pu"]].sum())
    free = DispatchProjection(graph, line_limits=False).project(graph, guess)
    limited = DispatchProjection(graph).project(graph, guess)
    _, attr = forward_branches(graph.edge_index.numpy(), graph.edge_attr.numpy())
    assert np.any(np.abs(dc_flows(graph, free.pg_pu)) > attr[:, RATE] + 1e-3)
    check_feasible(graph, limited.pg_pu)
    assert limited.distance_pu > free.distance_pu


def test_feasible_points_are_left_unchanged(tight_case9):
    graph = tight_case9[1]
    proj = DispatchProjection(graph)
    pmax = graph.x[:, X["max_pg_pu"]].numpy()
    feasible = proj.project(graph, pmax * 0.5).pg_pu
    again = proj.project(graph, feasible)
    assert again.distance_pu < 1e-5
    np.testing.assert_allclose(again.pg_pu, feasible, atol=1e-5)
    assert abs(again.cost_change_per_h) < 1e-2


def test_one_compiled_problem_serves_other_scenarios_and_outages(tight_case9):
    proj = DispatchProjection(tight_case9[0])
    g = tight_case9[2].clone()
    g.edge_attr = g.edge_attr.clone()
    g.edge_attr[[2, 2 + g.edge_attr.shape[0] // 2], BRANCH_FEATURES.index("in_service")] = 0.0
    res = proj.project(g, g.x[:, X["max_pg_pu"]] * 0.4)
    assert res.status in ("optimal", "infeasible")
    if res.status == "optimal":
        check_feasible(g, res.pg_pu)


def test_infeasible_scenario_is_reported_not_hidden(tight_case9):
    g = tight_case9[0].clone()
    g.x = g.x.clone()
    g.x[:, X["pd_pu"]] *= 10  # more load than capacity
    res = DispatchProjection(g).project(g, g.x[:, X["max_pg_pu"]])
    assert res.status == "infeasible" and np.isnan(res.pg_pu).all()


def test_other_grid_structure_is_refused(tight_case9, case14_grid, make_graphs):
    other = make_graphs(case14_grid, 1)[0]
    with pytest.raises(GridtuneError, match=r"has another bus / branch structure \(`14` buses"):
        DispatchProjection(tight_case9[0]).project(other, torch.zeros(14))


def test_project_predictions_summary(tight_case9):
    preds = [g.x[:, X["max_pg_pu"]] * 0.9 for g in tight_case9]
    results, summary = project_predictions(tight_case9, preds)
    assert len(results) == 3 and summary["n"] == 3 and summary["n_infeasible"] == 0
    assert summary["mean_distance_pu"] == pytest.approx(np.mean([r.distance_pu for r in results]))


def test_project_model_outputs(tight_case9, tiny_net):
    from gridtune.constraints.projection import project_model

    torch.manual_seed(0)
    model = tiny_net("opf")
    results, summary = project_model(model, tight_case9)
    assert summary["n_infeasible"] == 0
    for g, r in zip(tight_case9, results, strict=True):
        check_feasible(g, r.pg_pu)


def test_a_projection_does_not_depend_on_the_ones_before_it(tight_case9):
    """cvxpy re-uses a Parameter problem's solver object (settings, scaling) between solves unless
    told not to; a projection must be the same number whatever was projected before."""
    graph = tight_case9[0]
    pmax = graph.x[:, X["max_pg_pu"]].numpy()
    rng = np.random.default_rng(1)
    guesses = [pmax * rng.uniform(0.0, 1.3, pmax.shape) for _ in range(4)]
    alone = [DispatchProjection(graph).project(graph, g).pg_pu for g in guesses]
    proj = DispatchProjection(graph)
    in_turn = [proj.project(graph, g).pg_pu for g in guesses]
    for a, b in zip(alone, in_turn, strict=True):
        assert np.array_equal(a, b)
