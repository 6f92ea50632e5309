"""Grid + scenario + label -> `torch_geometric.data.Data`, with one per-unit schema for every grid.

The schema is what lets a model built on one grid run unchanged on another: the same columns, in
the same order, in per-unit on the grid's system base. Values are raw (not standardised): models
carry their own normalisation statistics (fitted on training data, stored in the checkpoint).

Graph fields (N buses, E branches, every branch appears twice, once per direction):
    x            (N, len(BUS_FEATURES))     float32  bus features
    edge_index   (2, 2E)                    int64    rows [from; to]; first E are forward
    edge_attr    (2E, len(BRANCH_FEATURES)) float32  branch features (outaged: in_service = 0)
    y_infeasible (1,)  float32  1 certified infeasible, 0 feasible, NaN otherwise
    status       (1,)  int64    index into STATUSES
    y_opf        (N, len(OPF_TARGETS)) float32  AC-OPF solution per bus, NaN unless feasible
    y_cost       (1,)  float32  AC-OPF objective ($/h), NaN unless feasible
    dc_opf       (N, len(DC_TARGETS))  float32  DC-OPF solution per bus (baseline), NaN if none
    dc_cost      (1,)  float32  DC-OPF objective ($/h), NaN if none
    load_scale   (1,)  float32  the scenario's global load scale
    nominal_load_pu (N, 2) float32  the grid's own base-case load per bus (pd, qd), per unit: what
                 a scenario's load is a multiple of (models may compare the two; not in `x`, so
                 schema v1 is unchanged)
    scenario_id  (1,)  int64
    base_mva     (1,)  float32
    grid         str            grid name
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from gridtune.errors import DataError
from gridtune.grids.labels import STATUSES
from gridtune.grids.model import PQ, PV, REF, GridModel
from gridtune.grids.schema import SCHEMA_VERSION

BUS_FEATURES = (
    "pd_pu", "qd_pu",                      # load at the bus
    "gs_pu", "bs_pu",                      # shunt conductance / susceptance (at 1 p.u. voltage)
    "min_pg_pu", "max_pg_pu",              # sums over in-service generators at the bus
    "min_qg_pu", "max_qg_pu",
    "cost_c2_per_pu2h", "cost_c1_per_puh",  # capacity-weighted mean cost at the bus, per p.u.
    "min_vm_pu", "max_vm_pu",
    "is_ref", "is_pv", "is_pq",            # bus type one-hot
    "n_gen",                               # in-service generators at the bus
)

BRANCH_FEATURES = (
    "r_pu", "x_pu", "b_pu",                # series impedance, total line charging
    "rate_a_pu",                           # long-term rating; unlimited -> RATE_UNLIMITED_PU
    "tap_ratio", "shift_rad",              # off-nominal ratio (1 for lines), phase shift
    "is_transformer", "in_service",
    "is_reverse",                          # 0: from->to row, 1: to->from row
)

OPF_TARGETS = ("vm_pu", "va_rad", "pg_pu", "qg_pu")  # per bus; generation summed at the bus
DC_TARGETS = ("va_rad", "pg_pu")

RATE_UNLIMITED_PU = 100.0  # 10 GVA on a 100 MVA base: no real branch comes near it


def bus_feature_index(name: str) -> int:
    return BUS_FEATURES.index(name)


def branch_feature_index(name: str) -> int:
    return BRANCH_FEATURES.index(name)


def bus_features(grid: GridModel, pd_mw: np.ndarray, qd_mvar: np.ndarray,
                 gen_out: tuple[int, ...] = (), cost_scale: np.ndarray | None = None) -> np.ndarray:
    """Bus feature matrix (N, len(BUS_FEATURES)) for one scenario."""
    base = grid.base_mva
    n = grid.n_bus
    x = np.zeros((n, len(BUS_FEATURES)))
    x[:, 0] = pd_mw / base
    x[:, 1] = qd_mvar / base
    x[:, 2] = grid.gs_mw / base
    x[:, 3] = grid.bs_mvar / base
    on = grid.gen_in_service.copy()
    on[list(gen_out)] = False
    gb = grid.gen_bus[on]
    cost = grid.gen_cost()[on]
    if cost_scale is not None:
        cost = cost * np.asarray(cost_scale)[on][:, None]
    pmax = grid.max_p_mw[on]
    np.add.at(x[:, 4], gb, grid.min_p_mw[on] / base)
    np.add.at(x[:, 5], gb, pmax / base)
    np.add.at(x[:, 6], gb, grid.min_q_mvar[on] / base)
    np.add.at(x[:, 7], gb, grid.max_q_mvar[on] / base)
    weight = np.maximum(pmax, 1e-3)
    wsum = np.zeros(n)
    np.add.at(wsum, gb, weight)
    c2 = np.zeros(n)
    c1 = np.zeros(n)
    np.add.at(c2, gb, weight * cost[:, 0] * base**2)  # $/h per (p.u.)^2
    np.add.at(c1, gb, weight * cost[:, 1] * base)     # $/h per p.u.
    has = wsum > 0
    x[has, 8] = c2[has] / wsum[has]
    x[has, 9] = c1[has] / wsum[has]
    x[:, 10] = grid.min_vm_pu
    x[:, 11] = grid.max_vm_pu
    bt = grid.bus_type
    x[:, 12] = bt == REF
    x[:, 13] = bt == PV
    x[:, 14] = bt == PQ
    np.add.at(x[:, 15], gb, 1.0)
    return x


def branch_features(grid: GridModel, branch_out: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(edge_index (2, 2E), edge_attr (2E, len(BRANCH_FEATURES))) for one topology."""
    e = grid.n_branch
    f, t = grid.f_bus, grid.t_bus
    rate = grid.rate_a_mva / grid.base_mva
    rate = np.where(rate <= 0, RATE_UNLIMITED_PU, np.minimum(rate, RATE_UNLIMITED_PU))
    in_service = grid.branch_in_service.astype(float)
    in_service[list(branch_out)] = 0.0
    attr = np.column_stack([
        grid.r_pu, grid.x_pu, grid.b_pu, rate, grid.tap_ratio,
        np.deg2rad(grid.shift_degree), grid.is_transformer.astype(float), in_service,
        np.zeros(e),
    ])
    rev = attr.copy()
    rev[:, -1] = 1.0
    edge_index = np.concatenate([np.stack([f, t]), np.stack([t, f])], axis=1)
    return edge_index, np.concatenate([attr, rev], axis=0)


def _per_bus(n: int, gen_bus: np.ndarray, values: np.ndarray | None) -> np.ndarray:
    out = np.zeros(n)
    if values is None:
        return np.full(n, np.nan)
    np.add.at(out, gen_bus, np.nan_to_num(values))
    return out


def to_graph(grid: GridModel, scenario: Any, label: Any | None = None) -> Data:
    """Build the graph of one scenario (and its labels, when given).

    Args:
        grid: the grid's static data.
        scenario: object with `scenario_id`, `load_scale`, `pd_mw`, `qd_mvar`, `branch_out`,
            `gen_out`, `cost_scale` (see `gridtune.grids.scenarios.Scenario`).
        label: object with `status`, `objective`, `vm_pu`, `va_degree`, `pg_mw`, `qg_mvar`,
            `dc_objective`, `dc_pg_mw`, `dc_va_degree` (see `gridtune.grids.labels.Label`); `None` for
            unlabelled scenarios (domain adaptation uses those freely).

    Many scenarios of one grid: `GraphBuilder(grid)` gives the same graphs faster.
    """
    return GraphBuilder(grid)(scenario, label)


class GraphBuilder:
    """`to_graph` for many scenarios of one grid: the parts a scenario shares with others (the
    branch features of its topology; the bus features of its generator set and cost scaling,
    all but the load columns) are computed once and reused.

        build = GraphBuilder(grid)
        graphs = [build(scenario, label) for scenario, label in rows]
    """

    def __init__(self, grid: GridModel) -> None:
        self.grid = grid
        self._branches: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
        self._buses: dict[tuple[int, ...], np.ndarray] = {}
        self._nominal = np.column_stack([grid.pd_mw, grid.qd_mvar]) / grid.base_mva

    def _bus_template(self, gen_out: tuple[int, ...], cost_scale: Any) -> np.ndarray:
        """The bus features without load; kept per generator set when costs are not scaled
        (scaled costs are drawn per scenario: nothing to share)."""
        n = self.grid.n_bus
        if cost_scale is not None:
            return bus_features(self.grid, np.zeros(n), np.zeros(n), gen_out, cost_scale)
        x = self._buses.get(gen_out)
        if x is None:
            x = self._buses[gen_out] = bus_features(self.grid, np.zeros(n), np.zeros(n), gen_out)
        return x.copy()

    def _branch_features(self, branch_out: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        hit = self._branches.get(branch_out)
        if hit is None:
            hit = self._branches[branch_out] = branch_features(self.grid, branch_out)
        return hit

    def __call__(self, scenario: Any, label: Any | None = None) -> Data:
        grid = self.grid
        n, base = grid.n_bus, grid.base_mva
        x = self._bus_template(tuple(scenario.gen_out), getattr(scenario, "cost_scale", None))
        x[:, 0] = np.asarray(scenario.pd_mw, dtype=float) / base
        x[:, 1] = np.asarray(scenario.qd_mvar, dtype=float) / base
        edge_index, edge_attr = self._branch_features(tuple(scenario.branch_out))
        y_opf = np.full((n, len(OPF_TARGETS)), np.nan)
        dc = np.full((n, len(DC_TARGETS)), np.nan)
        y_infeasible, status, y_cost, dc_cost = math.nan, STATUSES.index("unknown"), math.nan, math.nan
        if label is not None:
            status = STATUSES.index(label.status)
            if label.status == "feasible":
                y_infeasible = 0.0
                if label.vm_pu is not None:
                    y_opf[:, 0] = label.vm_pu
                    y_opf[:, 1] = np.deg2rad(label.va_degree)
                    y_opf[:, 2] = _per_bus(n, grid.gen_bus, label.pg_mw) / base
                    y_opf[:, 3] = _per_bus(n, grid.gen_bus, label.qg_mvar) / base
                y_cost = label.objective if label.objective is not None else math.nan
            elif label.status == "infeasible":
                y_infeasible = 1.0
            if getattr(label, "dc_pg_mw", None) is not None:
                dc[:, 0] = np.deg2rad(label.dc_va_degree)
                dc[:, 1] = _per_bus(n, grid.gen_bus, label.dc_pg_mw) / base
                dc_cost = label.dc_objective
        if not np.all(np.isfinite(x)) or not np.all(np.isfinite(edge_attr)):
            raise DataError(f"grid `{grid.name}` scenario {scenario.scenario_id}: non-finite features")
        return Data(
            x=torch.tensor(x, dtype=torch.float32),
            edge_index=torch.tensor(edge_index, dtype=torch.long),
            edge_attr=torch.tensor(edge_attr, dtype=torch.float32),
            y_infeasible=torch.tensor([y_infeasible], dtype=torch.float32),
            status=torch.tensor([status], dtype=torch.long),
            y_opf=torch.tensor(y_opf, dtype=torch.float32),
            y_cost=torch.tensor([y_cost], dtype=torch.float32),
            dc_opf=torch.tensor(dc, dtype=torch.float32),
            dc_cost=torch.tensor([dc_cost], dtype=torch.float32),
            load_scale=torch.tensor([scenario.load_scale], dtype=torch.float32),
            nominal_load_pu=torch.tensor(self._nominal, dtype=torch.float32),
            scenario_id=torch.tensor([scenario.scenario_id], dtype=torch.long),
            base_mva=torch.tensor([base], dtype=torch.float32),
            grid=grid.name,
        )


def check_graph(data: Data) -> None:
    """Validate one graph against the schema (shapes, dtypes, finite inputs)."""
    problems = []
    if data.x.dtype != torch.float32 or data.x.shape[1] != len(BUS_FEATURES):
        problems.append(f"x has shape {tuple(data.x.shape)} / dtype {data.x.dtype}")
    if data.edge_attr.shape[1] != len(BRANCH_FEATURES):
        problems.append(f"edge_attr has shape {tuple(data.edge_attr.shape)}")
    if data.edge_index.dtype != torch.long or data.edge_index.max() >= data.num_nodes:
        problems.append("edge_index out of range or not int64")
    if not torch.isfinite(data.x).all() or not torch.isfinite(data.edge_attr).all():
        problems.append("non-finite input features")
    if problems:
        raise DataError(f"graph does not match feature schema v{SCHEMA_VERSION}: " + "; ".join(problems))
