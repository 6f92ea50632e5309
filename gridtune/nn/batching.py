"""Batches for inference: the model's inputs only, joined by concatenation.

PyG's `Batch.from_data_list` handles every attribute of every graph (targets, solutions, ids,
strings), one graph at a time, which on case118 costs about as much as a small model's forward
pass (`benchmarks/bench_inference.py`). A model's forward reads five things: bus and branch
features, the branch index, the graph of each bus and `nominal_load_pu`. `collate_inputs` builds a
`Batch` of those alone: one concatenation per attribute, and the branch index offset by a single
vectorised add.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch_geometric.data import Batch

MODEL_INPUTS = ("x", "edge_index", "edge_attr", "nominal_load_pu")


def collate_inputs(graphs: Sequence[Any], keys: Sequence[str] = MODEL_INPUTS) -> Batch:
    """One `Batch` of `graphs` holding `keys` (those the first graph has), `batch` and `ptr`.

    Per-bus and per-branch attributes are concatenated along their first dimension; `edge_index`
    is offset by each graph's first bus. The result equals `Batch.from_data_list` on those
    attributes. Shapes: x (N, F_bus), edge_index (2, 2E), edge_attr (2E, F_branch), batch (N,),
    ptr (B + 1,)
    """
    if len(graphs) == 0:
        raise ValueError("cannot collate an empty list of graphs")
    counts = torch.tensor([g.num_nodes for g in graphs])
    ptr = torch.zeros(len(graphs) + 1, dtype=torch.long)
    torch.cumsum(counts, 0, out=ptr[1:])
    out: dict[str, Any] = {}
    first = graphs[0]
    for key in keys:
        if getattr(first, key, None) is None:
            continue
        parts = [getattr(g, key) for g in graphs]
        if key == "edge_index":
            e_counts = torch.tensor([p.shape[1] for p in parts])
            out[key] = torch.cat(parts, dim=1) + torch.repeat_interleave(ptr[:-1], e_counts)
        else:
            out[key] = torch.cat(parts, dim=0)
    out["batch"] = torch.repeat_interleave(torch.arange(len(graphs)), counts)
    out["ptr"] = ptr
    return Batch(**out)


def input_batches(graphs: Sequence[Any], batch_size: int, keys: Sequence[str] = MODEL_INPUTS) -> Iterator[Batch]:
    """`collate_inputs` over consecutive slices of `batch_size` graphs, in order."""
    for start in range(0, len(graphs), batch_size):
        yield collate_inputs(graphs[start:start + batch_size], keys)
