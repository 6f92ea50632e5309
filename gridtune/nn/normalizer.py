"""Standardisation statistics fitted on training graphs and carried inside the model.

Inputs follow feature schema v1 (`gridtune.grids.features`) in per-unit; the network sees them
standardised with statistics from the *training* split only, stored as buffers so that they travel
in the checkpoint (safetensors) and a model built on one grid runs unchanged on another.

Indicator columns (bus type one-hot, `is_transformer`, `in_service`, `is_reverse`) are left as
0/1: standardising them would tie their meaning to one grid's mix of bus types.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from gridtune.errors import DataError
from gridtune.grids.features import BRANCH_FEATURES, BUS_FEATURES, OPF_TARGETS

BUS_INDICATORS = ("is_ref", "is_pv", "is_pq")
BRANCH_INDICATORS = ("is_transformer", "in_service", "is_reverse")
PD, QD, MAX_PG = (BUS_FEATURES.index(n) for n in ("pd_pu", "qd_pu", "max_pg_pu"))
CONTEXT_DIM = 2


def system_context(x_raw: Tensor, index: Tensor) -> Tensor:
    """Total load P and Q over total P capacity, per graph: dimensionless, so comparable across grids.

    Shapes: x_raw (N, F_bus) unstandardised, index (N,) graph of each bus -> (B, 2)
    """
    from torch_geometric.nn import global_add_pool

    totals = global_add_pool(x_raw[:, [PD, QD, MAX_PG]], index)  # (B, 3)
    return totals[:, :2] / totals[:, 2:3].clamp_min(1e-6)


# A feature that is constant on the training grid (e.g. no shunts) keeps unit scale instead of
# exploding when another grid has non-zero values.
MIN_STD = 1e-2


def _mean_std(values: Tensor, indicators: Sequence[int]) -> tuple[Tensor, Tensor]:
    mean = values.mean(dim=0)
    std = values.std(dim=0, unbiased=False).clamp_min(MIN_STD)
    for i in indicators:
        mean[i], std[i] = 0.0, 1.0
    return mean, std


class Normalizer(nn.Module):
    """Per-column mean / std of bus features, branch features and the regression targets.

    Buffers (all float32):
        x_mean, x_std      (len(BUS_FEATURES),)
        edge_mean, edge_std (len(BRANCH_FEATURES),)
        opf_mean, opf_std  (len(OPF_TARGETS),)   over feasible graphs' buses
        cost_mean, cost_std (1,)                 AC-OPF objective, $/h
        context_mean, context_std (CONTEXT_DIM,) system ratios (`system_context`) per graph
    """

    def __init__(self) -> None:
        super().__init__()
        nb, ne, nt = len(BUS_FEATURES), len(BRANCH_FEATURES), len(OPF_TARGETS)
        self.register_buffer("x_mean", torch.zeros(nb))
        self.register_buffer("x_std", torch.ones(nb))
        self.register_buffer("edge_mean", torch.zeros(ne))
        self.register_buffer("edge_std", torch.ones(ne))
        self.register_buffer("opf_mean", torch.zeros(nt))
        self.register_buffer("opf_std", torch.ones(nt))
        self.register_buffer("cost_mean", torch.zeros(1))
        self.register_buffer("cost_std", torch.ones(1))
        self.register_buffer("context_mean", torch.zeros(CONTEXT_DIM))
        self.register_buffer("context_std", torch.ones(CONTEXT_DIM))

    @torch.no_grad()
    def fit(self, graphs: Sequence[Data]) -> Normalizer:
        """Fit every statistic on `graphs` (the training split). Returns self."""
        if len(graphs) == 0:
            raise DataError("cannot fit normalisation statistics on an empty training split")
        x = torch.cat([g.x for g in graphs])
        e = torch.cat([g.edge_attr for g in graphs])
        m, s = _mean_std(x, [BUS_FEATURES.index(n) for n in BUS_INDICATORS])
        self.x_mean.copy_(m)
        self.x_std.copy_(s)
        m, s = _mean_std(e, [BRANCH_FEATURES.index(n) for n in BRANCH_INDICATORS])
        self.edge_mean.copy_(m)
        self.edge_std.copy_(s)
        y = [g.y_opf for g in graphs if hasattr(g, "y_opf") and torch.isfinite(g.y_opf).all()]
        if y:
            m, s = _mean_std(torch.cat(y), [])
            self.opf_mean.copy_(m)
            self.opf_std.copy_(s)
        # Scenarios near a feasibility boundary differ by a few percent of total load: without
        # standardising the system ratios that signal is too small for the head to pick up quickly
        # (measured: validation AUROC 0.80 after 120 epochs on case14 without, see git log).
        ctx = torch.cat([system_context(g.x, torch.zeros(g.x.shape[0], dtype=torch.long)) for g in graphs])
        self.context_mean.copy_(ctx.mean(dim=0))
        self.context_std.copy_(ctx.std(dim=0, unbiased=False).clamp_min(1e-3))
        costs = [g.y_cost for g in graphs if hasattr(g, "y_cost")]
        c = torch.cat(costs) if costs else torch.empty(0)
        c = c[torch.isfinite(c)]
        if c.numel() > 0:
            self.cost_mean.fill_(float(c.mean()))
            # floor of 1 $/h: a single graph (or identical costs) must not give a zero scale
            self.cost_std.fill_(max(float(c.std(unbiased=False)), 1.0))
        return self

    def bus(self, x: Tensor) -> Tensor:
        """Standardise bus features. Shapes: (N, F_bus) -> (N, F_bus)."""
        return (x - self.x_mean) / self.x_std

    def branch(self, edge_attr: Tensor) -> Tensor:
        """Standardise branch features. Shapes: (E, F_branch) -> (E, F_branch)."""
        return (edge_attr - self.edge_mean) / self.edge_std

    def context(self, ctx: Tensor) -> Tensor:
        """Standardise system ratios. Shapes: (B, CONTEXT_DIM) -> (B, CONTEXT_DIM)."""
        return (ctx - self.context_mean) / self.context_std

    def to_dict(self) -> dict[str, list[float]]:
        """Statistics as plain lists (written into the checkpoint's JSON config, for people)."""
        return {name: buf.tolist() for name, buf in self.named_buffers()}
