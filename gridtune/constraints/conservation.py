"""Conservation of power for the OPF head: system balance and nodal (Kirchhoff) balance.

Both read the raw per-unit features of the graph (`gridtune.grids.features`) and the prediction
`(vm_pu, va_rad, pg_pu, qg_pu)` per bus from the OPF head. Nodal balance is the residual of the
branch pi-model (`gridtune.grids.physics.nodal_mismatch`): the injection the predicted state
implies at each bus must equal predicted generation minus load.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from gridtune.constraints.base import Constraint
from gridtune.constraints.graph import graph_reduce, graph_sum
from gridtune.constraints.registry import register_constraint
from gridtune.errors import SpecError
from gridtune.grids.features import BUS_FEATURES, OPF_TARGETS
from gridtune.grids.physics import nodal_mismatch

_X = {n: BUS_FEATURES.index(n) for n in ("pd_pu", "gs_pu")}
_VM, _PG = OPF_TARGETS.index("vm_pu"), OPF_TARGETS.index("pg_pu")


@register_constraint("nodal_balance")
@dataclasses.dataclass
class NodalBalance(Constraint):
    """Kirchhoff balance at every bus of the predicted OPF state (AC power-flow equations).

    Per-graph violation: `reduce` (mean, default, or max) over buses of |dP| + |dQ| (per-unit).
    An exact AC power-flow solution gives zero.
    """

    reduce: Literal["mean", "max"] = "mean"

    tasks: ClassVar[tuple[str, ...]] = ("opf",)

    def violation(self, model: nn.Module, batch: Any, output: Tensor, *, train: bool) -> Tensor:
        dp, dq = nodal_mismatch(batch.x, batch.edge_index, batch.edge_attr, output)
        return graph_reduce(dp.abs() + dq.abs(), batch, self.reduce)


@register_constraint("system_balance")
@dataclasses.dataclass
class SystemBalance(Constraint):
    """Total generation covers total load plus non-negative, bounded losses.

    loss_pu = sum(pg) - sum(pd) - sum(gs * vm^2) per graph (shunt consumption at the predicted
    voltage). In `ac` mode the violation is the distance of loss_pu from
    [min_loss_fraction, max_loss_fraction] * total load; in `dc` mode (lossless DC model) it is
    |loss_pu|: exact balance.

    Args:
        mode: `ac` (default) or `dc`.
        min_loss_fraction: lower bound on losses as a fraction of total load (default: 0).
        max_loss_fraction: upper bound (default: 0.05; transmission losses in the IEEE cases stay
            near 1 to 3% of load at the OPF).
    """

    mode: Literal["ac", "dc"] = "ac"
    min_loss_fraction: float = 0.0
    max_loss_fraction: float = 0.05

    tasks: ClassVar[tuple[str, ...]] = ("opf",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.min_loss_fraction <= self.max_loss_fraction:
            raise SpecError(f"constraint `{self.name}`: need 0 <= min_loss_fraction <= "
                            f"max_loss_fraction, got `{self.min_loss_fraction}` and "
                            f"`{self.max_loss_fraction}`")

    def violation(self, model: nn.Module, batch: Any, output: Tensor, *, train: bool) -> Tensor:
        x = batch.x.to(output.dtype)
        vm = output[:, _VM]
        gen = graph_sum(output[:, _PG], batch)
        load = graph_sum(x[:, _X["pd_pu"]] + x[:, _X["gs_pu"]] * vm * vm, batch)
        loss = gen - load
        if self.mode == "dc":
            return loss.abs()
        lo = self.min_loss_fraction * load
        hi = self.max_loss_fraction * load
        return torch.relu(lo - loss) + torch.relu(loss - hi)
