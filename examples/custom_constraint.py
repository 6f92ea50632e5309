"""User constraint: predicted branch loading never exceeds the rating. Spec: line_loading.toml."""

import dataclasses
from typing import ClassVar

import torch

from gridtune.constraints import Constraint, register_constraint
from gridtune.constraints.graph import graph_reduce
from gridtune.grids.features import BRANCH_FEATURES
from gridtune.grids.physics import branch_flows


@register_constraint("line_loading")
@dataclasses.dataclass
class LineLoading(Constraint):
    """Per graph: worst apparent-power excess over rate_a (p.u.) at either end of a branch."""

    margin: float = 1.0  # fraction of the rating allowed
    tasks: ClassVar[tuple[str, ...]] = ("opf",)

    def violation(self, model, batch, output, *, train):
        s_from, s_to, rows = branch_flows(output[:, 0], output[:, 1], batch.edge_index, batch.edge_attr)
        rate = batch.edge_attr[rows, BRANCH_FEATURES.index("rate_a_pu")] * self.margin
        excess = torch.relu(torch.maximum(s_from.abs(), s_to.abs()) - rate)  # (K,) per branch
        bus = batch.edge_index[0, rows]  # a branch belongs to the graph of its from bus
        return graph_reduce(torch.zeros_like(output[:, 0]).index_add(0, bus, excess), batch, "max")
