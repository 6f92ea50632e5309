"""The two calls the `finetune` and `evaluate` commands make for `--constraints FILE`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

from gridtune.constraints.formulations import Formulation, make_formulation
from gridtune.constraints.metrics import evaluate_constraints
from gridtune.constraints.spec import load_constraint_set

DEFAULT_FORMULATION = "lagrangian"


def training_term(spec: str | Path, task: str, formulation: str | None = None,
                  **settings: Any) -> Formulation:
    """The `extra_loss` hook for `fit` from a spec file.

    Args:
        spec: constraint spec (TOML).
        task: the model's task (`feasibility`, `opf`, `cost`); a constraint that does not apply
            fails here, before any training.
        formulation: `penalty`, `lagrangian` or `augmented-lagrangian`; `None` takes the spec's
            `[formulation] name`, else `lagrangian`.
        settings: formulation settings overriding the spec's (e.g. `dual_lr=0.05`).

    After training, `term.write_history(out_dir)` writes the multiplier trajectories (JSON and
    PNG) and `term.summary()` gives the final multipliers.
    """
    cs = load_constraint_set(spec, task)
    name = formulation or cs.formulation.get("name", DEFAULT_FORMULATION)
    return make_formulation(name, cs, **settings)


def constraint_report(model: nn.Module, loader: Iterable[Any], spec: str | Path, task: str
                      ) -> dict[str, dict[str, float]]:
    """Per constraint of `spec`: violation_rate, mean_violation, max_violation (+ tolerance,
    n_samples) of `model` over `loader`; goes under `"constraints"` in the evaluation JSON."""
    return evaluate_constraints(model, loader, load_constraint_set(spec, task))
