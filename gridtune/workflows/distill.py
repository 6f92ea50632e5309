"""Distillation: a lean feasibility model learns a trained one's probabilities, on fresh scenarios.

    result = distill("runs/feas", "case118", "runs/fast", unlabeled=6000)

The teacher is any feasibility checkpoint (typically the default model, whose DC loadability LP
makes it accurate and slow); the student is a model of another configuration (default: the
`fast` preset, `gridtune.nn.model.MODEL_PRESETS`). Knowledge distillation (Hinton, Vinyals and
Dean 2015, "Distilling the knowledge in a neural network"): the student's target on a training
graph is `label_weight` x its label + (1 - label_weight) x the teacher's calibrated probability;
on a graph without a label (an `unknown` training scenario, or one of `unlabeled` fresh draws of
the dataset's recipe, which cost no OPF solve) the teacher's probability alone. Early stopping
and Platt calibration use the validation split's real labels; the test split is the teacher's
own (its split seed and fractions, read from its checkpoint), scored as `gridtune evaluate`
scores it, so the student is never trained or tuned on a scenario either model is judged on.
The student's checkpoint loads with `gridtune.load_model` like any other.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch_geometric.data import Data

from gridtune.core.trainer import TrainConfig, fit, make_loader, torch_threads
from gridtune.errors import DataError, SpecError
from gridtune.evaluation.evaluate import evaluate_model
from gridtune.files import write_json
from gridtune.grids.split import SPLIT_FRACTIONS, split_indices
from gridtune.grids.view import resolve_data, task_graphs
from gridtune.nn.batching import MODEL_INPUTS, input_batches
from gridtune.nn.calibration import platt_calibrate
from gridtune.nn.checkpoint import load_checkpoint, save_checkpoint, seal_checkpoint
from gridtune.nn.loadability import fresh_state
from gridtune.nn.model import ModelConfig, build_model, count_parameters, fill_cuts, model_preset
from gridtune.nn.normalizer import Normalizer
from gridtune.nn.tasks import make_task
from gridtune.workflows.configs import with_fields
from gridtune.workflows.results import _Result

TEACHER_BATCH = 256


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """What `distill` trains and how.

    Attributes:
        model: the student's hyper-parameters (default: the `fast` preset).
        train: optimisation of the student (`TrainConfig`; its `seed` seeds the weights, batch
            order and draws, not the split, which is the teacher's).
        unlabeled: fresh scenarios drawn from the dataset's recipe and labelled by the teacher
            alone, no OPF solve (default: 0).
        label_weight: weight of the real label in a labelled graph's target, the rest being the
            teacher's probability (default: 0.5).
        samples: use the first `samples` scenarios of the data only (default: all).
    """

    model: ModelConfig = dataclasses.field(default_factory=lambda: model_preset("fast"))
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    unlabeled: int = 0
    label_weight: float = 0.5
    samples: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.unlabeled, int) or self.unlabeled < 0:
            raise SpecError(f"unlabeled must be a non-negative integer, got `{self.unlabeled}`")
        if not (isinstance(self.label_weight, (int, float)) and 0.0 <= self.label_weight <= 1.0):
            raise SpecError(f"label_weight must lie in [0, 1], got `{self.label_weight}`")
        if self.samples is not None and (not isinstance(self.samples, int) or self.samples < 1):
            raise SpecError(f"samples must be a positive integer, got `{self.samples}`")
        if not isinstance(self.model, ModelConfig) or not isinstance(self.train, TrainConfig):
            raise SpecError("DistillConfig.model must be a ModelConfig and .train a TrainConfig, "
                            f"got `{type(self.model).__name__}` and `{type(self.train).__name__}`")


@dataclasses.dataclass
class DistillResult(_Result):
    """What `distill` measured; written to `<checkpoint>/metrics.json`.

    `test` is the student's evaluation report (as `PretrainResult.test`); `teacher_test` the
    teacher's metrics on the same test graphs; `graphs` counts the training set by kind
    (`labelled`, `unlabelled_split`: training-split scenarios without a label, `drawn`).
    """

    checkpoint: str
    teacher: str
    task: str
    data: str
    data_hash: str
    model: dict[str, Any]
    train: dict[str, Any]
    split: dict[str, Any]
    unlabeled: int
    label_weight: float
    graphs: dict[str, int]
    trainable_parameters: int
    epochs_run: int
    best_epoch: int
    best_val: float | None
    train_wall_time_s: float
    teacher_wall_time_s: float
    calibration: dict[str, float] | None
    test: dict[str, Any]
    teacher_test: dict[str, Any]
    wall_time_s: float
    torch_threads: int

    FILE: ClassVar[str] = "metrics.json"


@torch.no_grad()
def teacher_probabilities(teacher: Any, graphs: list[Any]) -> np.ndarray:
    """P(infeasible) of each graph by `teacher` (its calibrated output), in order. (len(graphs),)"""
    teacher.eval()
    out = [torch.sigmoid(teacher(b).double()) for b in input_batches(graphs, TEACHER_BATCH)]
    return torch.cat(out).numpy() if out else np.zeros(0)


def distill(teacher: str | Path, data: Any, out_dir: str | Path, config: DistillConfig | None = None, *,
            workers: int | None = None, backend: str = "local", threads: int | None = 1,
            progress: bool = False, **fields: Any) -> DistillResult:
    """Train a student on `teacher`'s probabilities over `data` and write its checkpoint to `out_dir`.

    Args:
        teacher: a feasibility checkpoint directory.
        data: recipe path, dataset directory or case name (the teacher's data: its split is reused).
        out_dir: the student's checkpoint directory (also gets `metrics.json`, `history.json`).
        config: what to train (`DistillConfig`); `fields` override or supply its fields.
        workers, backend: dataset build parallelism (`gridtune.parallel`).
        threads: torch threads while training (default: 1); `None` keeps torch's setting.
        progress: show progress bars.
    """
    config = with_fields(DistillConfig, config, fields)
    with torch_threads(threads):
        return _distill(Path(teacher), data, Path(out_dir), config, workers=workers, backend=backend,
                        progress=progress)


def _distill(teacher_dir: Path, data: Any, out: Path, config: DistillConfig, *, workers: int | None,
             backend: str, progress: bool) -> DistillResult:
    from gridtune.grids.dataset import open_dataset

    start = time.perf_counter()
    fresh_state()  # numbers independent of what this process solved before
    teacher, meta = load_checkpoint(teacher_dir)
    if teacher.task != "feasibility":
        raise SpecError(f"distillation needs a feasibility teacher; `{teacher_dir}` is a `{teacher.task}` model")
    dataset = open_dataset(data, samples=config.samples, workers=workers, backend=backend, progress=progress) \
        if isinstance(data, (str, Path)) else data
    view = resolve_data(dataset, samples=config.samples)
    if meta.get("data_hash") not in (None, view.content_hash):
        raise DataError(f"teacher `{teacher_dir}` was trained on data `{meta.get('data_hash')}`, not on "
                        f"`{view.name}` (`{view.content_hash}`): its test split would not be held out; "
                        "give the teacher's data (and --samples)")
    split_seed = int(meta.get("split_seed", 0))
    fractions = tuple(meta.get("split_fractions") or SPLIT_FRACTIONS)
    tr, va, te = split_indices(view.statuses, split_seed, fractions)
    train_split = [view.graphs[i] for i in tr]
    val = task_graphs([view.graphs[i] for i in va], "feasibility")
    drawn: list[Any] = []
    if config.unlabeled > 0:
        if not hasattr(dataset, "unlabeled"):
            raise DataError(f"unlabeled = `{config.unlabeled}` needs data with a recipe to draw from "
                            f"(a recipe, case name or dataset directory), not `{type(dataset).__name__}`")
        drawn = dataset.unlabeled(config.unlabeled, config.train.seed)

    t0 = time.perf_counter()
    pool = train_split + drawn
    p_teacher = teacher_probabilities(teacher, pool)
    teacher_s = time.perf_counter() - t0
    train, n_labelled = [], 0
    w = config.label_weight
    for g, p in zip(pool, p_teacher, strict=True):
        y = float(g.y_infeasible) if hasattr(g, "y_infeasible") else math.nan
        labelled = math.isfinite(y)
        n_labelled += labelled
        # the model's inputs and the soft target only: drawn graphs carry no solution attributes
        h = Data(**{k: getattr(g, k) for k in MODEL_INPUTS if getattr(g, k, None) is not None})
        h.y_infeasible = torch.tensor([w * y + (1.0 - w) * p if labelled else p], dtype=torch.float32)
        train.append(h)
    if len(train) < 2 or len(val) < 1:
        raise DataError(f"data `{view.name}` has too few graphs ({len(train)} train, {len(val)} validation) "
                        "to distil on")

    torch.manual_seed(config.train.seed)
    student = build_model(config.model, "feasibility", Normalizer().fit(task_graphs(train_split, "feasibility")
                                                                         or train))
    batch = config.train.batch_size
    fitted = fit(student, make_loader(train, batch, shuffle=True, seed=config.train.seed),
                 make_loader(val, batch, shuffle=False), make_task("feasibility"), config.train,
                 progress=progress)
    fill_cuts(student, train_split)  # with `loadability_cuts`: before calibrating
    calibration = platt_calibrate(student, val)
    test_report = evaluate_model(student, view, split=(tr, te))
    teacher_report = evaluate_model(teacher, view, split=(tr, te))
    result = DistillResult(
        checkpoint=str(out), teacher=str(teacher_dir), task="feasibility", data=view.name,
        data_hash=view.content_hash, model=dataclasses.asdict(config.model),
        train=dataclasses.asdict(config.train),
        split={"seed": split_seed, "fractions": list(fractions), "train": int(tr.size), "val": int(va.size),
               "test": int(te.size), "val_used": len(val)},
        unlabeled=config.unlabeled, label_weight=config.label_weight,
        graphs={"labelled": n_labelled, "unlabelled_split": len(train_split) - n_labelled, "drawn": len(drawn)},
        trainable_parameters=count_parameters(student, trainable_only=True),
        epochs_run=fitted.epochs_run, best_epoch=fitted.best_epoch, best_val=fitted.best_val,
        train_wall_time_s=fitted.wall_time_s, teacher_wall_time_s=teacher_s, calibration=calibration,
        test=test_report, teacher_test=teacher_report.get("model", {}),
        wall_time_s=time.perf_counter() - start, torch_threads=torch.get_num_threads())
    save_checkpoint(student, out, {"data_hash": view.content_hash, "data": view.name, "split_seed": split_seed,
                                   "split_fractions": list(fractions), "include_unknown": False,
                                   "distilled_from": {"teacher": str(teacher_dir),
                                                      "teacher_data_hash": meta.get("data_hash")},
                                   "metrics": result.to_dict()})
    result.save(out)
    write_json(out / "history.json", fitted.history, indent=1)
    seal_checkpoint(out, [result.FILE, "history.json"])
    return result
