"""Per-graph reductions of node values for batched PyG graphs (a single `Data` is one graph)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor
from torch_geometric.utils import scatter

Reduce = Literal["mean", "max", "sum"]


def graph_index(batch: Any, n_rows: int) -> tuple[Tensor, int]:
    """(graph id of each node row (N,), number of graphs B)."""
    idx = getattr(batch, "batch", None)
    if idx is None:
        return torch.zeros(n_rows, dtype=torch.long), 1
    n = getattr(batch, "num_graphs", None)
    return idx, int(n) if n is not None else int(idx.max()) + 1


def graph_sum(values: Tensor, batch: Any) -> Tensor:
    """Sum node values (N,) per graph -> (B,)."""
    return graph_reduce(values, batch, "sum")


def graph_reduce(values: Tensor, batch: Any, how: Reduce) -> Tensor:
    """Reduce node values (N,) per graph with `how` -> (B,)."""
    idx, n = graph_index(batch, values.shape[0])
    return scatter(values, idx, dim=0, dim_size=n, reduce=how)
