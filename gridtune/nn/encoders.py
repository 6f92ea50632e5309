"""Size-agnostic message-passing encoders over the bus-branch graph.

The encoder maps standardised bus and branch features (schema v1) to one vector per bus. It never
depends on the number of buses, so one set of weights runs on every grid. Layout, as the
fine-tuning strategies expect (see `gridtune.core.protocol`):

    encoder.input       bus features -> hidden (MLP of `nn.Linear`)
    encoder.edge_input  branch features -> hidden (one `nn.Linear`)
    encoder.blocks      ModuleList of residual blocks, `block(h, edge_index, edge_attr) -> h`

Outaged branches (`in_service == 0`) are dropped from `edge_index` before the blocks: an open
breaker carries no power, so it must carry no message either (unless `outage_messages`). Their
features are still known to the data, but the topology the network reasons over is the energised
one. An optional edge readout (`edge_summary`, a non-block encoder part) pools a state per branch
row, outaged rows included, for the graph representation.

Message-passing families (by name in `ModelConfig.conv`):
    gine         GINEConv, Hu et al. 2020, "Strategies for Pre-training Graph Neural Networks"
    gatv2        GATv2Conv, Brody et al. 2022, "How Attentive are Graph Attention Networks?"
    transformer  TransformerConv, Shi et al. 2021, "Masked Label Prediction" (UniMP)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv, GINEConv, TransformerConv

from gridtune.errors import GridtuneError, choices_text
from gridtune.grids.features import BRANCH_FEATURES, BUS_FEATURES

IN_SERVICE_COL = BRANCH_FEATURES.index("in_service")


def mlp(dims: list[int], *, final_activation: bool = False) -> nn.Sequential:
    """A plain MLP of `nn.Linear` + SiLU (LoRA and adapters target `nn.Linear`)."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2 or final_activation:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


def _gine(hidden: int, heads: int) -> nn.Module:
    return GINEConv(mlp([hidden, hidden, hidden]), train_eps=True)


def _gatv2(hidden: int, heads: int) -> nn.Module:
    if hidden % heads:
        raise GridtuneError(f"hidden size `{hidden}` must be divisible by heads `{heads}` for `gatv2`")
    return GATv2Conv(hidden, hidden // heads, heads=heads, edge_dim=hidden, add_self_loops=True)


def _transformer(hidden: int, heads: int) -> nn.Module:
    if hidden % heads:
        raise GridtuneError(f"hidden size `{hidden}` must be divisible by heads `{heads}` for `transformer`")
    return TransformerConv(hidden, hidden // heads, heads=heads, edge_dim=hidden, beta=True)


CONVS: dict[str, Callable[[int, int], nn.Module]] = {
    "gine": _gine,
    "gatv2": _gatv2,
    "transformer": _transformer,
}


def resolve_conv(name: str) -> Callable[[int, int], nn.Module]:
    """Message-passing family by name; an unknown name lists the valid ones."""
    if name not in CONVS:
        raise GridtuneError(f"unknown model `{name}`; valid: {choices_text(CONVS)}")
    return CONVS[name]


class MessageBlock(nn.Module):
    """One residual message-passing block: `h + dropout(SiLU(LayerNorm(conv(h, edges))))`.

    LayerNorm (per bus, not per batch) keeps the block independent of batch composition and of the
    grid's size, which BatchNorm would not.

    Args:
        conv: message-passing family (see `CONVS`).
        hidden: width of node and edge representations.
        heads: attention heads (`gatv2`, `transformer`).
        dropout: dropout on the block's update (default: 0.0).

    Shapes:
        h (N, hidden), edge_index (2, E), edge_attr (E, hidden) -> (N, hidden)
    """

    def __init__(self, conv: str, hidden: int, heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = resolve_conv(conv)(hidden, heads)
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        update = self.conv(h, edge_index, edge_attr)
        return h + self.dropout(nn.functional.silu(self.norm(update)))


class GridEncoder(nn.Module):
    """Input projections + residual message-passing blocks.

    Args:
        conv: message-passing family name (default: `gine`).
        hidden: width (default: 64).
        layers: number of blocks (default: 4).
        heads: attention heads for attention families (default: 4).
        dropout: dropout inside blocks (default: 0.0).
        extra_bus, extra_branch: derived input columns appended to the schema's (default: 0).
        outage_messages: outaged branches carry messages too (default: False).
        edge_readout: build the branch-state MLP that `edge_summary` pools (default: False).

    Shapes:
        x (N, len(BUS_FEATURES) + extra_bus) standardised, edge_index (2, E), edge_attr (E, len(BRANCH_FEATURES))
        standardised, in_service (E,) bool -> (N, hidden)
    """

    def __init__(self, conv: str = "gine", hidden: int = 64, layers: int = 4, heads: int = 4,
                 dropout: float = 0.0, extra_bus: int = 0, extra_branch: int = 0,
                 outage_messages: bool = False, edge_readout: bool = False) -> None:
        super().__init__()
        resolve_conv(conv)
        self.input = mlp([len(BUS_FEATURES) + extra_bus, hidden, hidden], final_activation=True)
        self.edge_input = nn.Linear(len(BRANCH_FEATURES) + extra_branch, hidden)
        self.blocks = nn.ModuleList(MessageBlock(conv, hidden, heads, dropout) for _ in range(layers))
        self.hidden = hidden
        self.outage_messages = outage_messages
        # (h_src + h_dst, |h_src - h_dst|, e) -> one state per branch row, pooled by `edge_summary`
        self.edge_readout = mlp([3 * hidden, hidden, hidden], final_activation=True) if edge_readout else None

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, in_service: Tensor) -> Tensor:
        if not self.outage_messages:
            edge_index = edge_index[:, in_service]   # outaged branches carry no messages
            edge_attr = edge_attr[in_service]
        e = self.edge_input(edge_attr)
        h = self.input(x)
        for block in self.blocks:
            h = block(h, edge_index, e)
        return h

    def edge_summary(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor, edge_graph: Tensor,
                     n_graphs: int) -> Tensor:
        """Mean- and max-pooled branch states per graph (every branch row, outaged ones included).

        A line limit or an outage is a property of a branch, not of a bus: pooling bus states
        only sees it through the buses at either end. Shapes: h (N, hidden), edge_index (2, E),
        edge_attr (E, F_branch) standardised, edge_graph (E,) -> (B, 2 * hidden)
        """
        from torch_geometric.nn import global_max_pool, global_mean_pool

        if self.edge_readout is None:
            raise GridtuneError("this encoder was built without an edge readout (`edge_readout=False`)")
        src, dst = h[edge_index[0]], h[edge_index[1]]
        z = self.edge_readout(torch.cat([src + dst, (src - dst).abs(), self.edge_input(edge_attr)], dim=-1))
        return torch.cat([global_mean_pool(z, edge_graph, n_graphs), global_max_pool(z, edge_graph, n_graphs)],
                         dim=-1)


def in_service_mask(edge_attr_raw: Tensor) -> Tensor:
    """Bool mask of energised branch rows from *raw* (unstandardised) branch features. Shapes: (E,)."""
    return edge_attr_raw[:, IN_SERVICE_COL] > 0.5

