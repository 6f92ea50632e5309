"""Study spec -> the list of cells to run.

A cell is one fine-tuning run: (source, target, strategy, labels, seed, constraint, formulation).
Cells without a constraint have constraint ``"none"`` and formulation ``"none"``.

Transfer gain compares a cell with training from scratch at the same target, labels, seed,
constraint and formulation. Scratch does not depend on the source or the strategy, so only one
cell per such group (the first in spec order, `with_scratch=True`) also trains the scratch
baseline; the others borrow it when the results table is made (`store.results_frame`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

from gridtune.studies.spec import StudySpec, constraint_label, grid_label

NONE = "none"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One fine-tuning run of a study.

    Attributes:
        source, target: grid labels (case name or recipe stem).
        strategy: fine-tuning strategy name.
        labels: number of labelled target scenarios.
        seed: fine-tuning seed (label draw, initialisation, shuffling).
        constraint: constraint set label, or ``"none"``.
        formulation: constraint formulation, or ``"none"``.
        constraint_path: path of the constraint spec (None when unconstrained).
        with_scratch: whether this cell also trains the scratch baseline of its group.
    """

    source: str
    target: str
    strategy: str
    labels: int
    seed: int
    constraint: str = NONE
    formulation: str = NONE
    constraint_path: str | None = None
    with_scratch: bool = False

    @property
    def cell_id(self) -> str:
        """A readable, filesystem-safe, unique id."""
        parts = [self.source, self.target, self.strategy, f"n{self.labels}", f"s{self.seed}",
                 self.constraint, self.formulation]
        return "__".join(_safe(p) for p in parts)

    @property
    def scratch_group(self) -> tuple[str, int, int, str, str]:
        return (self.target, self.labels, self.seed, self.constraint, self.formulation)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "-", text)


def expand(spec: StudySpec) -> list[Cell]:
    """Every cell of a study, in a stable order (source, target, constraint, labels, seed, strategy)."""
    constraint_options: list[tuple[str, str, str | None]] = []
    if spec.unconstrained:
        constraint_options.append((NONE, NONE, None))
    for ref in spec.constraints:
        for form in spec.formulations:
            constraint_options.append((constraint_label(ref), form, str(spec.constraint_path(ref))))
    cells: list[Cell] = []
    seen_groups: set[tuple[str, int, int, str, str]] = set()
    for source_ref in spec.sources:
        source = grid_label(source_ref)
        for target_ref in spec.targets:
            target = grid_label(target_ref)
            if spec.pairs == "cross" and source == target:
                continue
            for constraint, form, cpath in constraint_options:
                for labels in spec.labels:
                    for seed in spec.seeds:
                        for strategy in spec.strategies:
                            group = (target, labels, seed, constraint, form)
                            carrier = group not in seen_groups
                            seen_groups.add(group)
                            cells.append(Cell(source, target, strategy, labels, seed, constraint,
                                              form, cpath, with_scratch=carrier))
    return cells


def fingerprint(spec: StudySpec, cell: Cell, dataset_hashes: dict[str, str]) -> str:
    """Hash of everything that decides a cell's result.

    A finished cell whose stored fingerprint differs (spec settings changed, a dataset was
    rebuilt with other content, the constraint file was edited) is stale and runs again.
    """
    payload: dict[str, Any] = {
        "cell": {k: v for k, v in cell.to_dict().items() if k != "constraint_path"},
        "task": spec.task,
        "unlabeled": spec.unlabeled,
        "data": dataclasses.asdict(spec.data),
        "pretrain": dataclasses.asdict(spec.pretrain),
        "finetune": dataclasses.asdict(spec.finetune),
        "source_data": dataset_hashes.get(cell.source),
        "target_data": dataset_hashes.get(cell.target),
    }
    if cell.constraint_path is not None:
        with open(cell.constraint_path, "rb") as fh:
            payload["constraint_sha256"] = hashlib.sha256(fh.read()).hexdigest()
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
