"""Physical constraints: declare once, enforce in fine-tuning, verify after (docs/constraints.md).

Public API:
    load_constraint_set(spec, task) -> ConstraintSet
    make_formulation(name, constraint_set, **settings) -> Formulation   (an `extra_loss` hook)
    evaluate_constraints(model, loader, constraint_set) -> {name: {violation_rate, ...}}
    training_term(spec, task, formulation=None, **settings) -> Formulation   (for `finetune`)
    constraint_report(model, loader, spec, task) -> {name: {violation_rate, ...}}  (for `evaluate`)
    register_constraint(kind)   class decorator for user constraints
    DispatchProjection          hard enforcement at inference (cvxpy), see projection.py
"""

from gridtune.constraints.api import constraint_report, training_term
from gridtune.constraints.base import TASKS, Constraint, ConstraintSet
from gridtune.constraints.formulations import (
                                               FORMULATIONS,
                                               AugmentedLagrangian,
                                               Formulation,
                                               Lagrangian,
                                               Penalty,
                                               make_formulation,
)
from gridtune.constraints.metrics import evaluate_constraints
from gridtune.constraints.registry import constraint_kinds, register_constraint, resolve_constraint
from gridtune.constraints.spec import load_constraint_set

__all__ = [
    "TASKS", "FORMULATIONS", "Constraint", "ConstraintSet", "Formulation", "Penalty", "Lagrangian",
    "AugmentedLagrangian", "make_formulation", "evaluate_constraints", "load_constraint_set",
    "register_constraint", "resolve_constraint", "constraint_kinds", "training_term",
    "constraint_report",
]
