"""Typed results of the grid workflows, written as JSON with one vocabulary (docs/results.md).

A reader of one result file never needs a second file to interpret it: each result carries the
config that produced it, its metrics, its baseline and, for fine-tuning, the transfer verdict's
fields (`transfer_gain`, `negative_transfer` with `negative_transfer_reason` when it is null).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, Self

from gridtune.errors import DataError
from gridtune.files import write_json


class _Result:
    """JSON in and out of a result directory; `FILE` names the file."""

    FILE: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / self.FILE
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read the result file (or the directory holding one); keys this version does not know
        are ignored."""
        p = Path(path)
        if p.is_dir():
            p = p / cls.FILE
        try:
            raw = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read {cls.__name__} `{p}`: {exc}") from None
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in raw.items() if k in names})


@dataclasses.dataclass
class PretrainResult(_Result):
    """What `pretrain` measured; written to `<checkpoint>/metrics.json`.

    `test` is the evaluation report of the test split (model beside its baseline, see
    `gridtune.evaluation.evaluate.evaluate_model`); after multi-source pre-training `test` is the
    pooled test split and `per_source` holds each grid's own report.
    """

    checkpoint: str
    task: str
    data: str
    data_hash: str
    model: dict[str, Any]
    train: dict[str, Any]
    split: dict[str, Any]
    include_unknown: bool
    trainable_parameters: int
    epochs_run: int
    best_epoch: int
    best_val: float | None
    train_wall_time_s: float
    train_graphs_per_s: float
    calibration: dict[str, float] | None
    test: dict[str, Any]
    wall_time_s: float
    torch_threads: int
    per_source: dict[str, dict[str, Any]] | None = None
    self_supervised: dict[str, Any] | None = None

    FILE: ClassVar[str] = "metrics.json"



@dataclasses.dataclass
class FinetuneResult(_Result):
    """What `finetune` measured on the target's test split; written to `<out_dir>/finetune.json`.

    `transfer_gain` is `{metric, value, higher_is_better_metric}`: the strategy's metric minus
    scratch's (sign-flipped for errors, so positive always means transfer helped). One run
    cannot say whether transfer hurt: `negative_transfer` is null with the reason; a verdict over
    several seeds (`gridtune.workflows.transfer.verdict`, `gridtune finetune --seed 0 1 2 ...`,
    studies) sets it from a bootstrap interval. `reliability` (feasibility) is the reliability
    table of the calibrated model on the test split; `violations` maps each of
    `TransferConfig.report_constraints` to its violation report on the test split. `trust` (with
    `TransferConfig.conformal_alpha`) holds the conformal coverage and the solver fallback on
    the test split (`trust_summary`). `zero_shot` holds the source checkpoint's metrics on the
    same test split before any training on the target (null for `scratch`).
    """

    checkpoint: str
    source: str | None
    target: str
    target_hash: str
    task: str
    strategy: str
    strategy_config: dict[str, Any]
    labels: int
    seed: int
    n_train: int
    n_val: int
    n_test: int
    unlabeled: int
    unlabeled_used: int
    normalizer: str
    split: list[float]
    pre_adapt: dict[str, Any] | None
    train: dict[str, Any]
    metrics: dict[str, Any]
    trainable_parameters: int
    auxiliary_parameters: int
    epochs_run: int
    best_epoch: int
    best_val: float | None
    train_wall_time_s: float
    label_solver_time_s: float | None
    scratch: dict[str, Any] | None = None
    transfer_gain: dict[str, Any] | None = None
    negative_transfer: bool | None = None
    negative_transfer_reason: str | None = None
    calibration: dict[str, Any] | None = None
    decision_curve: dict[str, Any] | None = None
    constraints: dict[str, Any] | None = None
    reliability: list[dict[str, float]] | None = None
    violations: dict[str, dict[str, Any]] | None = None
    trust: dict[str, Any] | None = None
    zero_shot: dict[str, Any] | None = None
    wall_time_s: float = 0.0

    FILE: ClassVar[str] = "finetune.json"
