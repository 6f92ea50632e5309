"""A tiny TransferModel over the graph schema and small real graphs of case9 for constraint tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from gridtune.grids.features import BUS_FEATURES, to_graph
from gridtune.grids.scenarios import Scenario


class MeanBlock(nn.Module):
    """h + tanh(W [h, mean of neighbours' h])."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(2 * dim, dim)

    def forward(self, h: Tensor, edge_index: Tensor) -> Tensor:
        agg = scatter(h[edge_index[0]], edge_index[1], dim=0, dim_size=h.shape[0], reduce="mean")
        return h + torch.tanh(self.lin(torch.cat([h, agg], dim=1)))


class TinyNet(nn.Module):
    """A few-line TransferModel: graph-level (B,) for feasibility / cost, (N, 4) for opf."""

    def __init__(self, task: str, hidden: int = 16, layers: int = 2) -> None:
        super().__init__()
        self.task = task
        self.inp = nn.Linear(len(BUS_FEATURES), hidden)
        self.encoder = nn.Module()
        self.encoder.blocks = nn.ModuleList([MeanBlock(hidden) for _ in range(layers)])
        self.embed_dim = hidden
        self.head = nn.Linear(hidden, 4 if task == "opf" else 1)

    def embed(self, batch) -> Tensor:
        h = torch.tanh(self.inp(batch.x * 10.0))
        for block in self.encoder.blocks:
            h = block(h, batch.edge_index)
        if self.task == "opf":
            return h
        idx = batch.batch if getattr(batch, "batch", None) is not None else torch.zeros(
            h.shape[0], dtype=torch.long)
        return scatter(h, idx, dim=0, reduce="mean")

    def forward(self, batch) -> Tensor:
        out = self.head(self.embed(batch))
        return out if self.task == "opf" else out.reshape(-1)


def case_graphs(grid, n: int, seed: int = 0, low: float = 0.6, high: float = 1.6) -> list:
    """`n` unlabelled graphs of `grid` with a uniform load scale in [low, high]."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        s = float(rng.uniform(low, high))
        out.append(to_graph(grid, Scenario(i, s, grid.pd_mw * s, grid.qd_mvar * s)))
    return out


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Two torch threads on a shared 2-core machine made a tiny step 150x slower (1.1 s vs 7 ms)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_net():
    return TinyNet


@pytest.fixture(scope="session")
def case9_graphs(case9_grid):
    return case_graphs(case9_grid, 24)


@pytest.fixture(scope="session")
def make_graphs():
    return case_graphs
