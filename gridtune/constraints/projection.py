"""Hard enforcement at inference: project a predicted dispatch onto the DC-feasible set.

Given the OPF head's predicted active generation per bus, find the closest dispatch (Euclidean,
per-unit) that respects generator limits, DC power balance at every bus and DC branch limits
(Stott, Jardim and Alsac 2009, "DC power flow revisited"; branch model as MATPOWER's `makeBdc`):

    minimise    ||pg - pg_hat||^2
    subject to  min_pg <= pg <= max_pg                               (per bus)
                f = b * (theta_f - theta_t - shift),  b = in_service / (x * tap)
                pg - pd - gs = A^T f                                  (nodal DC balance)
                -rate_a <= f <= rate_a,   theta_ref = 0

The problem is written once per grid structure (bus count and branch list) in cvxpy with
Parameters for everything a scenario changes (loads, limits, susceptances so outages are b = 0,
ratings, the reference bus), so re-solving a new prediction is a parameter update (DPP).
Each result reports how far the dispatch moved and the cost change, costing each bus with the
capacity-weighted mean cost polynomial of its generators (`cost_c2_per_pu2h`, `cost_c1_per_puh`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from gridtune.errors import GridtuneError
from gridtune.grids.features import BRANCH_FEATURES, BUS_FEATURES

_X = {n: BUS_FEATURES.index(n) for n in ("pd_pu", "gs_pu", "min_pg_pu", "max_pg_pu", "is_ref",
                                         "cost_c2_per_pu2h", "cost_c1_per_puh")}
_E = {n: BRANCH_FEATURES.index(n) for n in ("x_pu", "tap_ratio", "shift_rad", "rate_a_pu",
                                            "in_service", "is_reverse")}


@dataclasses.dataclass
class ProjectionResult:
    """Outcome of projecting one prediction.

    Attributes:
        status: cvxpy status (`optimal` or e.g. `infeasible`: no DC-feasible dispatch exists).
        pg_pu: projected generation per bus (N,); NaN when not optimal.
        distance_pu: Euclidean distance moved, ||pg - pg_hat||_2.
        max_move_pu: largest move at one bus.
        cost_before_per_h, cost_after_per_h, cost_change_per_h: generation cost in $/h.
        solve_time_s: solver wall time.
    """

    status: str
    pg_pu: np.ndarray
    distance_pu: float
    max_move_pu: float
    cost_before_per_h: float
    cost_after_per_h: float
    cost_change_per_h: float
    solve_time_s: float


def _to_numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=float)


def bus_cost_per_h(x: np.ndarray, pg_pu: np.ndarray) -> float:
    """Generation cost of a per-bus dispatch, $/h (bus-level aggregate polynomials)."""
    return float(np.sum(x[:, _X["cost_c2_per_pu2h"]] * pg_pu**2 + x[:, _X["cost_c1_per_puh"]] * pg_pu))


def forward_branches(edge_index: np.ndarray, edge_attr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(from/to (2, E), attributes (E, F)) of the forward rows (`is_reverse == 0`)."""
    keep = edge_attr[:, _E["is_reverse"]] < 0.5
    return edge_index[:, keep], edge_attr[keep]


def dc_susceptance(attr: np.ndarray) -> np.ndarray:
    """b = in_service / (x * tap) per branch (0 for outaged branches)."""
    return attr[:, _E["in_service"]] / (attr[:, _E["x_pu"]] * attr[:, _E["tap_ratio"]])


class DispatchProjection:
    """DC projection of a predicted dispatch, built once for a grid structure.

    Args:
        graph: any graph of the grid (defines bus count and branch list); scenarios with other
            loads, outages or limits on the same branch list reuse the compiled problem.
        line_limits: enforce DC branch limits (default: True).
        solver: cvxpy solver name (default: `CLARABEL`).
    """

    def __init__(self, graph: Any, *, line_limits: bool = True, solver: str = "CLARABEL") -> None:
        import cvxpy as cp

        ei, _ = forward_branches(_to_numpy(graph.edge_index).astype(int), _to_numpy(graph.edge_attr))
        self.n_bus = int(graph.x.shape[0])
        self.edges = ei
        self.line_limits = line_limits
        self.solver = solver
        n, e = self.n_bus, ei.shape[1]
        inc = np.zeros((e, n))  # branch-bus incidence A: +1 at from, -1 at to
        inc[np.arange(e), ei[0]] = 1.0
        inc[np.arange(e), ei[1]] = -1.0
        self.p_hat = cp.Parameter(n, name="pg_hat_pu")
        self.p_min = cp.Parameter(n, name="min_pg_pu")
        self.p_max = cp.Parameter(n, name="max_pg_pu")
        self.net_load = cp.Parameter(n, name="pd_plus_gs_pu")
        self.b = cp.Parameter(e, name="b_pu")
        self.b_shift = cp.Parameter(e, name="b_times_shift_pu")
        self.rate = cp.Parameter(e, nonneg=True, name="rate_a_pu")
        self.ref = cp.Parameter(n, nonneg=True, name="is_ref")
        self.pg = cp.Variable(n, name="pg_pu")
        theta = cp.Variable(n, name="va_rad")
        flow = cp.multiply(self.b, inc @ theta) - self.b_shift  # (E,)
        cons = [self.pg >= self.p_min, self.pg <= self.p_max,
                self.pg - self.net_load == inc.T @ flow,
                self.ref @ theta == 0]
        if line_limits:
            cons += [flow <= self.rate, flow >= -self.rate]
        self.flow = flow
        self.problem = cp.Problem(cp.Minimize(cp.sum_squares(self.pg - self.p_hat)), cons)
        if not self.problem.is_dcp(dpp=True):  # pragma: no cover - guards future edits
            raise GridtuneError("dispatch projection is not DPP; it would recompile per solve")

    def _check(self, graph: Any) -> tuple[np.ndarray, np.ndarray]:
        x = _to_numpy(graph.x)
        ei, attr = forward_branches(_to_numpy(graph.edge_index).astype(int), _to_numpy(graph.edge_attr))
        if x.shape[0] != self.n_bus or ei.shape != self.edges.shape or np.any(ei != self.edges):
            raise GridtuneError(f"graph `{getattr(graph, 'grid', '?')}` has another bus / branch "
                                f"structure (`{x.shape[0]}` buses, `{ei.shape[1]}` branches) than "
                                f"the projection was built for (`{self.n_bus}`, "
                                f"`{self.edges.shape[1]}`); build one per grid")
        return x, attr

    def set_scenario(self, graph: Any) -> None:
        """Load a scenario's loads, limits, outages and ratings into the Parameters."""
        x, attr = self._check(graph)
        self.p_min.value = x[:, _X["min_pg_pu"]]
        self.p_max.value = x[:, _X["max_pg_pu"]]
        self.net_load.value = x[:, _X["pd_pu"]] + x[:, _X["gs_pu"]]
        b = dc_susceptance(attr)
        self.b.value = b
        self.b_shift.value = b * attr[:, _E["shift_rad"]]
        self.rate.value = attr[:, _E["rate_a_pu"]]
        ref = x[:, _X["is_ref"]]
        self.ref.value = ref if ref.sum() > 0 else np.eye(self.n_bus)[0]

    def project(self, graph: Any, pg_pu: Any) -> ProjectionResult:
        """Project the predicted generation `pg_pu` (N,) of scenario `graph`."""
        import cvxpy as cp

        self.set_scenario(graph)
        p_hat = _to_numpy(pg_pu).reshape(-1)
        self.p_hat.value = p_hat
        start = time.perf_counter()
        try:
            # warm_start=False: cvxpy would otherwise re-use the previous solve's solver object, so
            # a projection's last digits would depend on the scenarios projected before it
            self.problem.solve(solver=self.solver, warm_start=False)
        except cp.error.SolverError as exc:
            status = f"solver_error: {exc}"
        else:
            status = str(self.problem.status)
        elapsed = time.perf_counter() - start
        x = _to_numpy(graph.x)
        before = bus_cost_per_h(x, p_hat)
        if status != cp.OPTIMAL or self.pg.value is None:
            nan = math.nan
            return ProjectionResult(status, np.full(self.n_bus, nan), nan, nan, before, nan, nan,
                                    elapsed)
        pg = np.asarray(self.pg.value, dtype=float)
        after = bus_cost_per_h(x, pg)
        move = pg - p_hat
        return ProjectionResult(status, pg, float(np.linalg.norm(move)), float(np.abs(move).max()),
                                before, after, after - before, elapsed)


def project_predictions(graphs: Sequence[Any], pg_pu: Sequence[Any], *, line_limits: bool = True
                        ) -> tuple[list[ProjectionResult], dict[str, float]]:
    """Project one prediction per graph; one compiled problem per grid structure.

    Returns the per-graph results and a summary: `n`, `n_infeasible`, `mean_distance_pu`,
    `max_distance_pu`, `mean_cost_change_per_h`, `mean_solve_time_s` (over optimal solves).
    """
    cache: dict[tuple[int, bytes], DispatchProjection] = {}
    results: list[ProjectionResult] = []
    for g, p in zip(graphs, pg_pu, strict=True):
        ei, _ = forward_branches(_to_numpy(g.edge_index).astype(int), _to_numpy(g.edge_attr))
        key = (int(g.x.shape[0]), ei.tobytes())
        if key not in cache:
            cache[key] = DispatchProjection(g, line_limits=line_limits)
        results.append(cache[key].project(g, p))
    ok = [r for r in results if r.status == "optimal"]
    summary = {
        "n": float(len(results)),
        "n_infeasible": float(len(results) - len(ok)),
        "mean_distance_pu": float(np.mean([r.distance_pu for r in ok])) if ok else math.nan,
        "max_distance_pu": float(np.max([r.distance_pu for r in ok])) if ok else math.nan,
        "mean_cost_change_per_h": float(np.mean([r.cost_change_per_h for r in ok])) if ok else math.nan,
        "mean_solve_time_s": float(np.mean([r.solve_time_s for r in ok])) if ok else math.nan,
    }
    return results, summary


def project_model(model: Any, graphs: Sequence[Any], *, line_limits: bool = True
                  ) -> tuple[list[ProjectionResult], dict[str, float]]:
    """Run an OPF model on each graph and project its predicted `pg_pu` (see `project_predictions`).

    The model must return (N, 4) in `OPF_TARGETS` order (the `opf` head).
    """
    import torch

    from gridtune.grids.features import OPF_TARGETS

    pg_col = OPF_TARGETS.index("pg_pu")
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.no_grad():
            preds = [model(g)[:, pg_col] for g in graphs]
    finally:
        model.train(was_training)
    return project_predictions(graphs, preds, line_limits=line_limits)
