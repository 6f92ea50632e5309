"""Monotonicity of a model output along a named input direction.

Physics guarantees some orderings that a data-fitted model need not learn: more load can only make
an OPF harder (the predicted infeasibility probability must not decrease) and can only cost more
(the predicted OPF cost must not decrease). A direction scales bus-feature columns of `batch.x` by
`(1 + eps)`; the constraint compares the output before and after.

Two estimators of the same quantity (Sill 1998, "Monotonic networks"; Liu et al. 2020,
"Certified monotonic neural networks", use the gradient form):
    paired    v = relu(s * (f(x) - f(x')))       with x' the perturbed input
    gradient  v = relu(-s * eps * df/d(eps))      first-order version of the same difference
where s = +1 for `increasing` and -1 for `decreasing`. Both are in the output's units, so one
tolerance serves both.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from gridtune.constraints.base import Constraint
from gridtune.constraints.graph import graph_index, graph_sum
from gridtune.constraints.registry import register_constraint
from gridtune.errors import SpecError, choices_text
from gridtune.grids.features import BUS_FEATURES, OPF_TARGETS

# Named directions: which bus-feature columns grow together. Any single BUS_FEATURES column is
# also a valid direction.
DIRECTIONS: dict[str, tuple[str, ...]] = {
    "load": ("pd_pu", "qd_pu"),          # loads grow at constant power factor
    "active_load": ("pd_pu",),
    "generation_capacity": ("max_pg_pu",),
    "generation_cost": ("cost_c2_per_pu2h", "cost_c1_per_puh"),
}


_PG, _QG = OPF_TARGETS.index("pg_pu"), OPF_TARGETS.index("qg_pu")

# task -> output name -> function(model output, batch) -> (B,) graph-level value
OUTPUTS: dict[str, dict[str, Callable[[Tensor, Any], Tensor]]] = {
    "feasibility": {
        "p_infeasible": lambda out, b: torch.sigmoid(out.reshape(-1)),
        "logit": lambda out, b: out.reshape(-1),
    },
    "cost": {
        "cost_per_h": lambda out, b: out.reshape(-1),
    },
    "opf": {
        "total_pg_pu": lambda out, b: graph_sum(out[:, _PG], b),
        "total_qg_pu": lambda out, b: graph_sum(out[:, _QG], b),
    },
}


def direction_columns(direction: str) -> list[int]:
    """Bus-feature column indices a direction scales; unknown names list the valid ones."""
    if direction in DIRECTIONS:
        return [BUS_FEATURES.index(c) for c in DIRECTIONS[direction]]
    if direction in BUS_FEATURES:
        return [BUS_FEATURES.index(direction)]
    raise SpecError(f"unknown input direction `{direction}`; valid directions: "
                    f"{choices_text(list(DIRECTIONS) + list(BUS_FEATURES))}")


def perturbed(batch: Any, columns: list[int], factor: Tensor) -> Any:
    """A shallow copy of `batch` whose `x[:, columns]` are multiplied by `factor` (per node).

    The original batch is left untouched (the task loss still needs it).
    """
    out = copy.copy(batch)
    x = batch.x
    scale = torch.ones_like(x)
    scale[:, columns] = 0.0
    # (N, F): 1 outside the direction's columns, factor inside
    scale = scale + (1.0 - scale) * factor.reshape(-1, 1)
    out.x = x * scale
    return out


@register_constraint("monotonic")
@dataclasses.dataclass
class Monotonic(Constraint):
    """A graph-level output never decreases (or increases) when inputs grow along a direction.

    Args:
        output: the output checked; per task: feasibility `p_infeasible` | `logit`, cost
            `cost_per_h`, opf `total_pg_pu` | `total_qg_pu`.
        direction: a name in `DIRECTIONS` (`load`, `active_load`, `generation_capacity`,
            `generation_cost`) or one bus-feature column (e.g. `pd_pu`).
        sense: `increasing` (default) or `decreasing`.
        method: `paired` perturbations (default) or input `gradient`.
        eps: relative size of the perturbation (default: 0.05).
        random_eps: draw each graph's eps uniformly in (0, eps] during training, so the model is
            checked at many step sizes; evaluation always uses `eps` (default: True).
    """

    output: str = "p_infeasible"
    direction: str = "load"
    sense: Literal["increasing", "decreasing"] = "increasing"
    method: Literal["paired", "gradient"] = "paired"
    eps: float = 0.05
    random_eps: bool = True

    tasks: ClassVar[tuple[str, ...]] = tuple(OUTPUTS)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.eps <= 1:
            raise SpecError(f"constraint `{self.name}`: `eps` must lie in (0, 1], got `{self.eps}`")
        self._columns = direction_columns(self.direction)
        known = sorted({o for outs in OUTPUTS.values() for o in outs})
        if self.output not in known:
            raise SpecError(f"constraint `{self.name}`: unknown output `{self.output}`; valid "
                            f"outputs: {choices_text(known)}")

    def check_task(self, task: str) -> None:
        super().check_task(task)
        if self.output not in OUTPUTS[task]:
            raise SpecError(f"constraint `{self.name}` (kind `monotonic`) does not apply to task "
                            f"`{task}`: output `{self.output}` is not produced by it; valid "
                            f"outputs for `{task}`: {choices_text(OUTPUTS[task])}")
        self._task = task

    def _value(self, output: Tensor, batch: Any) -> Tensor:
        task = getattr(self, "_task", None)
        if task is None:  # used outside a ConstraintSet: find the task that has this output
            task = next(t for t, outs in OUTPUTS.items() if self.output in outs)
        return OUTPUTS[task][self.output](output, batch)

    def _eps(self, batch: Any, train: bool) -> Tensor:
        idx, n = graph_index(batch, batch.x.shape[0])
        eps = torch.full((n,), self.eps, dtype=batch.x.dtype)
        if train and self.random_eps:
            eps = eps * (1.0 - torch.rand(n, dtype=batch.x.dtype))  # (0, eps]
        return eps

    def violation(self, model: nn.Module, batch: Any, output: Tensor, *, train: bool) -> Tensor:
        sign = 1.0 if self.sense == "increasing" else -1.0
        eps = self._eps(batch, train)  # (B,)
        idx, _ = graph_index(batch, batch.x.shape[0])
        if self.method == "paired":
            f0 = self._value(output, batch)
            f1 = self._value(model(perturbed(batch, self._columns, 1.0 + eps[idx])), batch)
            return torch.relu(sign * (f0 - f1))
        with torch.enable_grad():
            t = torch.zeros_like(eps, requires_grad=True)
            f = self._value(model(perturbed(batch, self._columns, 1.0 + t[idx])), batch)
            (grad,) = torch.autograd.grad(f.sum(), t, create_graph=train, allow_unused=True)
        if grad is None:  # the output ignores the direction's inputs: constant, never violates
            return torch.zeros_like(eps)
        return torch.relu(-sign * eps * grad)
