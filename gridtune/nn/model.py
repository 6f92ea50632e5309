"""`GridModelNet`: encoder + readout + head for one grid task, size-agnostic and a `TransferModel`.

`embed(batch)` is the representation heads and domain adaptation see:
    graph-level tasks (`feasibility`, `cost`): [mean-pool(h), max-pool(h), context]   (B, D)
    node-level task (`opf`):                   [h, mean-pool(h) of its graph, context] (N, D)
with D = 2 * hidden + 2. `context` holds two system ratios per graph, total load P and Q over
total generation capacity (in-service units): dimensionless, so they mean the same on case9 and on
case118, and they are the first-order drivers of OPF feasibility.

`forward(batch)` returns physical quantities:
    feasibility  (B,) logits of P(infeasible), after a Platt calibration (`logit_scale`,
                 `logit_bias` buffers, identity until `calibrate` sets them; Platt 1999)
    opf          (N, 4) per-unit `OPF_TARGETS` (vm_pu, va_rad, pg_pu, qg_pu); generation is zero
                 at buses without an in-service generator
    cost         (B,) $/h
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

from gridtune.errors import GridtuneError
from gridtune.grids.features import BUS_FEATURES, OPF_TARGETS
from gridtune.nn.encoders import GridEncoder, in_service_mask, resolve_conv
from gridtune.nn.heads import TASK_SHAPES, check_task, make_head
from gridtune.nn.normalizer import Normalizer

PD, QD, MAX_PG, N_GEN = (BUS_FEATURES.index(n) for n in ("pd_pu", "qd_pu", "max_pg_pu", "n_gen"))
GEN_TARGETS = [OPF_TARGETS.index("pg_pu"), OPF_TARGETS.index("qg_pu")]
CONTEXT_DIM = 2


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a `GridModelNet` (stored in every checkpoint).

    Attributes:
        conv: message-passing family, one of `gine`, `gatv2`, `transformer` (default: `gine`).
        hidden: node / edge width (default: 64).
        layers: message-passing blocks (default: 4).
        heads: attention heads for `gatv2` / `transformer` (default: 4).
        dropout: dropout inside blocks (default: 0.0).
        head_hidden: hidden width of the task head (default: 64).
        balance_pg: `opf` only: shift predicted generation so that the system active-power
            balance holds under the AC branch model at the predicted voltages (default: True).
    """

    conv: str = "gine"
    hidden: int = 64
    layers: int = 4
    heads: int = 4
    dropout: float = 0.0
    head_hidden: int = 64
    balance_pg: bool = True

    def __post_init__(self) -> None:
        resolve_conv(self.conv)
        for name in ("hidden", "layers", "heads", "head_hidden"):
            if getattr(self, name) < 1:
                raise GridtuneError(f"model setting `{name}` must be at least 1, got `{getattr(self, name)}`")
        if not 0.0 <= self.dropout < 1.0:
            raise GridtuneError(f"model setting `dropout` must lie in [0, 1), got `{self.dropout}`")


class GridModelNet(nn.Module):
    """A grid GNN for one task. See the module docstring for what `embed` and `forward` return.

    Args:
        config: hyper-parameters.
        task: `feasibility`, `opf` or `cost`.
        normalizer: fitted statistics (default: identity until `normalizer.fit` is called).
    """

    def __init__(self, config: ModelConfig, task: str, normalizer: Normalizer | None = None) -> None:
        super().__init__()
        self.config = config
        self.task = check_task(task)
        self.graph_level = TASK_SHAPES[task][0]
        self.normalizer = normalizer if normalizer is not None else Normalizer()
        self.encoder = GridEncoder(config.conv, config.hidden, config.layers, config.heads, config.dropout)
        self.embed_dim = 2 * config.hidden + CONTEXT_DIM
        self.head = make_head(task, self.embed_dim, config.head_hidden)
        self.register_buffer("logit_scale", torch.ones(1))
        self.register_buffer("logit_bias", torch.zeros(1))

    def embed(self, batch: Any) -> Tensor:
        x_raw, ea_raw = batch.x, batch.edge_attr
        index = _batch_vector(batch)
        h = self.encoder(self.normalizer.bus(x_raw), batch.edge_index,
                         self.normalizer.branch(ea_raw), in_service_mask(ea_raw))
        context = system_context(x_raw, index)
        mean = global_mean_pool(h, index)
        if self.graph_level:
            return torch.cat([mean, global_max_pool(h, index), context], dim=-1)  # (B, D)
        return torch.cat([h, mean[index], context[index]], dim=-1)  # (N, D)

    def forward(self, batch: Any) -> Tensor:
        out = self.head(self.embed(batch))
        nz = self.normalizer
        if self.task == "feasibility":
            return out * self.logit_scale + self.logit_bias
        if self.task == "cost":
            return nz.cost_mean + nz.cost_std * out
        out = nz.opf_mean + nz.opf_std * out  # (N, 4) physical per-unit
        has_gen = (batch.x[:, N_GEN] > 0).to(out.dtype).unsqueeze(-1)
        out = torch.cat([out[:, :GEN_TARGETS[0]], out[:, GEN_TARGETS[0]:] * has_gen], dim=-1)
        if self.config.balance_pg:
            out = balance_generation(out, batch, _batch_vector(batch))
        return out


def balance_generation(out: Tensor, batch: Any, index: Tensor) -> Tensor:
    """Close each graph's system active-power balance by shifting predicted generation.

    The residual `sum pg - sum pd - sum gs vm^2 - losses(vm, va)` (AC pi-model branch flows at the
    predicted voltages) is taken off the generators in proportion to their capacity. Losses do not
    depend on pg, so after the shift the system balance holds exactly; nodal balance does not
    (that needs consistent angles). An equality completion in the spirit of DC3 (Donti, Rolnick and
    Kolter 2021), differentiable end to end.

    Shapes: out (N, 4) per-unit OPF_TARGETS, index (N,) -> (N, 4)
    """
    from gridtune.evaluation.metrics import ac_power_balance

    vm, va, pg = (out[:, OPF_TARGETS.index(n)] for n in ("vm_pu", "va_rad", "pg_pu"))
    nodal, _ = ac_power_balance(batch.x, batch.edge_index, batch.edge_attr, vm, va, pg)
    residual = global_add_pool(nodal.to(out.dtype).unsqueeze(-1), index).squeeze(-1)  # (B,)
    cap = batch.x[:, MAX_PG].clamp_min(0.0) * (batch.x[:, N_GEN] > 0)
    share = cap / global_add_pool(cap.unsqueeze(-1), index).squeeze(-1).clamp_min(1e-9)[index]
    pg_col = GEN_TARGETS[0]
    shifted = out[:, pg_col] - residual[index] * share
    return torch.cat([out[:, :pg_col], shifted.unsqueeze(-1), out[:, pg_col + 1:]], dim=-1)


def system_context(x_raw: Tensor, index: Tensor) -> Tensor:
    """Total load P and Q over total P capacity, per graph. Shapes: (N, F_bus), (N,) -> (B, 2)."""
    totals = global_add_pool(x_raw[:, [PD, QD, MAX_PG]], index)  # (B, 3)
    return totals[:, :2] / totals[:, 2:3].clamp_min(1e-6)


def _batch_vector(batch: Any) -> Tensor:
    index = getattr(batch, "batch", None)
    if index is None:  # a single graph, not collated
        index = torch.zeros(batch.x.shape[0], dtype=torch.long, device=batch.x.device)
    return index


def build_model(config: ModelConfig, task: str, normalizer: Normalizer | None = None) -> GridModelNet:
    """Build an untrained model for `task` (seed the RNG first for reproducible weights)."""
    return GridModelNet(config, task, normalizer)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
