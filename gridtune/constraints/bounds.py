"""Operating limits on the OPF head: generator P / Q limits and bus voltage limits.

Limits come from the graph's raw bus features (`min_pg_pu` ... `max_vm_pu`), summed over the
in-service generators of each bus, so an outaged unit's limits are already gone. A bus without
an in-service generator has limits 0 and 0: any predicted generation there is a violation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from gridtune.constraints.base import Constraint
from gridtune.constraints.graph import graph_reduce
from gridtune.constraints.registry import register_constraint
from gridtune.grids.features import BUS_FEATURES, OPF_TARGETS

_X = {n: BUS_FEATURES.index(n) for n in ("min_pg_pu", "max_pg_pu", "min_qg_pu", "max_qg_pu",
                                         "min_vm_pu", "max_vm_pu")}
_T = {n: OPF_TARGETS.index(n) for n in OPF_TARGETS}


def outside(value: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """Distance of `value` outside [low, high], elementwise (0 inside)."""
    return torch.relu(low - value) + torch.relu(value - high)


@register_constraint("generator_limits")
@dataclasses.dataclass
class GeneratorLimits(Constraint):
    """Predicted bus generation within the generators' P and Q limits.

    Per-graph violation: `reduce` (max, default, or mean) over buses of the P excursion plus the
    Q excursion, per-unit. `include_q = false` checks active power only.
    """

    reduce: Literal["mean", "max"] = "max"
    include_q: bool = True

    tasks: ClassVar[tuple[str, ...]] = ("opf",)

    def violation(self, model: nn.Module, batch: Any, output: Tensor, *, train: bool) -> Tensor:
        x = batch.x.to(output.dtype)
        v = outside(output[:, _T["pg_pu"]], x[:, _X["min_pg_pu"]], x[:, _X["max_pg_pu"]])
        if self.include_q:
            v = v + outside(output[:, _T["qg_pu"]], x[:, _X["min_qg_pu"]], x[:, _X["max_qg_pu"]])
        return graph_reduce(v, batch, self.reduce)


@register_constraint("voltage_limits")
@dataclasses.dataclass
class VoltageLimits(Constraint):
    """Predicted voltage magnitudes within [min_vm_pu, max_vm_pu] at every bus.

    Per-graph violation: `reduce` (max, default, or mean) over buses of the excursion in p.u.
    """

    reduce: Literal["mean", "max"] = "max"

    tasks: ClassVar[tuple[str, ...]] = ("opf",)

    def violation(self, model: nn.Module, batch: Any, output: Tensor, *, train: bool) -> Tensor:
        x = batch.x.to(output.dtype)
        v = outside(output[:, _T["vm_pu"]], x[:, _X["min_vm_pu"]], x[:, _X["max_vm_pu"]])
        return graph_reduce(v, batch, self.reduce)
