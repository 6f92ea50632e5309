"""`Constraint`: a law a model's outputs must respect, as a per-sample violation (zero when met).

One declaration serves three uses (docs/constraints.md): a training term under any
formulation (`gridtune.constraints.formulations`), an evaluation metric (violation rate, mean and
max violation beyond `tolerance`, `gridtune.constraints.metrics`) and a line in reports.

A constraint never runs the model on the unperturbed batch itself: the `ConstraintSet` runs it
once and hands the output to every constraint, so three constraints cost one forward pass (plus
whatever perturbed passes a constraint needs, e.g. monotonicity).

Task names follow `gridtune.nn.tasks`: `feasibility` (logits (B,) of P(infeasible)), `opf`
(per-bus (N, 4) in `OPF_TARGETS` order, per-unit on the system base), `cost` (graph-level $/h).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from gridtune.errors import SpecError, TrainingError, choices_text
from gridtune.grids.labels import TASKS


@dataclasses.dataclass
class Constraint:
    """Base class of every constraint (built-in or user-defined).

    Subclasses are dataclasses: their fields are the keys a spec may set. They set the class
    attributes `kind` (the name a spec uses, given by `@register_constraint`) and `tasks` (the
    tasks whose output they understand), and implement `violation`.

    Args:
        name: label used in logs, metrics and reports (unique within a set).
        tolerance: a sample counts as violating when its violation exceeds this (default: 0).
        weight: the constraint's fixed weight under `penalty`; under `lagrangian` it scales the
            constraint's dual step, under `augmented-lagrangian` its penalty (default: 1).
    """

    name: str
    tolerance: float = 0.0
    weight: float = 1.0

    kind: ClassVar[str] = ""
    tasks: ClassVar[tuple[str, ...]] = TASKS

    def __post_init__(self) -> None:
        for key in ("tolerance", "weight"):
            value = getattr(self, key)
            if not math.isfinite(value) or value < 0:
                raise SpecError(f"constraint `{self.name}`: `{key}` must be a finite number >= 0, "
                                f"got `{value}`")

    def check_task(self, task: str) -> None:
        """Raise `SpecError` when this constraint cannot act on `task`'s output."""
        if task not in self.tasks:
            raise SpecError(f"constraint `{self.name}` (kind `{self.kind}`) does not apply to task "
                            f"`{task}`; it applies to {choices_text(self.tasks)}")

    def violation(self, model: nn.Module, batch: Any, output: Tensor, *, train: bool) -> Tensor:
        """Per-sample violation, >= 0, zero when the constraint holds.

        Args:
            model: the model (constraints that perturb inputs call it again).
            batch: what the loader yields.
            output: `model(batch)`, already computed.
            train: True inside training (build a graph for backward); False for evaluation.

        Shapes:
            returns (S,): one value per sample (graph, image, toy point).
        """
        raise NotImplementedError


class ConstraintSet:
    """The constraints of one spec, checked against one task.

    Args:
        constraints: the constraints (names must be unique).
        task: the task whose output they act on.
        formulation: formulation settings read from the spec's `[formulation]` table
            (name and keyword arguments for `make_formulation`), possibly empty.
        source: where the set came from (spec path), for messages.
    """

    def __init__(self, constraints: list[Constraint], task: str, *,
                 formulation: dict[str, Any] | None = None, source: str = "<code>") -> None:
        if task not in TASKS:
            raise SpecError(f"unknown task `{task}`; valid tasks: {choices_text(TASKS)}")
        if not constraints:
            raise SpecError(f"{source}: no constraints declared (add a [[constraint]] table)")
        seen: set[str] = set()
        for c in constraints:
            if c.name in seen:
                raise SpecError(f"{source}: constraint name `{c.name}` is used twice")
            seen.add(c.name)
            c.check_task(task)
        self.constraints = list(constraints)
        self.task = task
        self.formulation = dict(formulation or {})
        self.source = source

    def __iter__(self) -> Iterator[Constraint]:
        return iter(self.constraints)

    def __len__(self) -> int:
        return len(self.constraints)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.constraints]

    def violations(self, model: nn.Module, batch: Any, *, train: bool,
                   step: int | None = None) -> dict[str, Tensor]:
        """Each constraint's per-sample violation on one batch (one forward pass shared).

        A non-finite violation raises `TrainingError` naming the constraint (and the step).
        """
        output = model(batch)
        out: dict[str, Tensor] = {}
        for c in self.constraints:
            v = c.violation(model, batch, output, train=train)
            if not torch.isfinite(v).all():
                bad = v[~torch.isfinite(v)][0].item()
                where = f" at step {step}" if step is not None else ""
                raise TrainingError(f"constraint `{c.name}`: violation became `{bad}`{where}; "
                                    "lower the learning rate or the constraint weight / dual "
                                    "step size; the last good weights are kept")
            out[c.name] = v
        return out
