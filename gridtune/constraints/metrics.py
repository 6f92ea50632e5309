"""Constraint violations as evaluation metrics over a whole split."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from gridtune.constraints.base import ConstraintSet


def evaluate_constraints(model: nn.Module, loader: Iterable[Any], constraint_set: ConstraintSet
                         ) -> dict[str, dict[str, float]]:
    """Per constraint, over every sample the loader yields (model in eval mode):

        violation_rate  fraction of samples whose violation exceeds the constraint's tolerance
        mean_violation  mean per-sample violation (in the constraint's units)
        max_violation   largest per-sample violation
        tolerance       the tolerance used
        n_samples       samples checked

    Gradient-based constraints (monotonicity by input gradient) compute their gradients here
    without building a graph for the weights; nothing else is differentiated.
    """
    was_training = model.training
    model.eval()
    per: dict[str, list[torch.Tensor]] = {c: [] for c in constraint_set.names}
    try:
        for batch in loader:
            with torch.no_grad():
                # gradient-based constraints re-enable grad locally (torch.enable_grad)
                viol = constraint_set.violations(model, batch, train=False)
            for c, v in viol.items():
                per[c].append(v.detach().reshape(-1).double())
    finally:
        model.train(was_training)
    out: dict[str, dict[str, float]] = {}
    for c in constraint_set:
        v = torch.cat(per[c.name]) if per[c.name] else torch.zeros(0, dtype=torch.float64)
        n = int(v.numel())
        out[c.name] = {
            "violation_rate": float((v > c.tolerance).double().mean()) if n else float("nan"),
            "mean_violation": float(v.mean()) if n else float("nan"),
            "max_violation": float(v.max()) if n else float("nan"),
            "tolerance": float(c.tolerance),
            "n_samples": n,
        }
    return out
