"""Pre-training: dataset -> seeded stratified split -> fitted normaliser -> `fit` -> checkpoint.

`pretrain(data, task=..., out_dir=...)` builds the dataset when given a recipe (via
`gridtune.grids.dataset.open_dataset`), splits it 70 / 15 / 15 stratified by label status, fits
normalisation statistics on the training split, trains with early stopping on the validation
split (`gridtune.finetune.trainer.fit`), calibrates feasibility probabilities on the validation
split (Platt scaling; Platt 1999), evaluates on the test split beside the baseline, and writes a
checkpoint plus `metrics.json` and `history.json` to `out_dir`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from gridtune.errors import DataError, SpecError
from gridtune.grids.features import BUS_FEATURES, SCHEMA_VERSION, STATUSES

SPLIT_FRACTIONS = (0.7, 0.15, 0.15)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with `n` torch intra-op threads (None: unchanged), restoring the setting after."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclasses.dataclass
class DataView:
    """The graphs of one dataset with what training and evaluation need to know about it.

    Attributes:
        graphs: PyG graphs of feature schema v1.
        name: dataset / grid name (for messages and reports).
        content_hash: identifies the labelled data (checkpoints record it).
        statuses: label status per graph (`feasible`, `infeasible`, `unknown`, `error`).
        solve_time_s: solver wall time per scenario, when known (for speed-up figures).
        schema_version: feature schema of the data.
    """

    graphs: list[Data]
    name: str
    content_hash: str
    statuses: np.ndarray
    solve_time_s: np.ndarray | None = None
    schema_version: str = SCHEMA_VERSION


def _hash_graphs(graphs: Sequence[Data]) -> str:
    h = hashlib.sha256()
    for g in graphs:
        for key in ("x", "edge_attr", "y_infeasible", "y_opf"):
            if hasattr(g, key):
                h.update(g[key].numpy().tobytes())
    return h.hexdigest()[:16]


def resolve_data(data: Any, *, samples: int | None = None, workers: int | None = None,
                 backend: str = "local", progress: bool = False) -> DataView:
    """A `DataView` from a recipe / dataset directory / case name, a `GridDataset`, or a list of graphs."""
    if isinstance(data, DataView):
        return data
    if isinstance(data, (str, Path)):
        from gridtune.grids.dataset import open_dataset

        data = open_dataset(data, samples=samples, workers=workers, backend=backend, progress=progress)
        samples = None
    if hasattr(data, "manifest") and hasattr(data, "statuses"):  # a GridDataset
        n = len(data) if samples is None else min(samples, len(data))
        graphs = [data[i] for i in range(n)]
        frame = getattr(data, "frame", None)
        times = frame["solve_time_s"].to_numpy()[:n] if frame is not None and "solve_time_s" in frame else None
        return DataView(graphs, str(data.grid_name), str(data.content_hash), np.asarray(data.statuses)[:n],
                        times, str(data.manifest.get("schema_version", SCHEMA_VERSION)))
    if isinstance(data, Sequence) and len(data) > 0 and isinstance(data[0], Data):
        graphs = list(data if samples is None else data[:samples])
        statuses = np.array([STATUSES[int(g.status)] for g in graphs])
        name = str(getattr(graphs[0], "grid", "graphs"))
        return DataView(graphs, name, _hash_graphs(graphs), statuses)
    raise DataError(f"cannot read data `{type(data).__name__}`: expected a recipe, a dataset "
                    "directory, a case name, a GridDataset or a list of graphs")


def check_schema(view: DataView, meta_schema: str) -> None:
    """Fail with one message naming both schemas when the data and a checkpoint disagree."""
    from gridtune.errors import CheckpointError

    width = view.graphs[0].x.shape[1]
    if str(view.schema_version) != str(meta_schema) or width != len(BUS_FEATURES):
        raise CheckpointError(f"checkpoint expects feature schema `v{meta_schema}` "
                              f"({len(BUS_FEATURES)} bus features) but data `{view.name}` has schema "
                              f"`v{view.schema_version}` ({width} bus features)")


def parse_split(text: str | tuple[float, ...] | list[float]) -> tuple[float, float, float]:
    """Train / validation / test fractions from `"0.7,0.15,0.15"` (or a sequence): three positive
    numbers summing to 1; anything else is a `SpecError` naming what is valid."""
    try:
        parts = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        parts = []
    if len(parts) != 3 or min(parts) <= 0 or abs(sum(parts) - 1.0) > 1e-6:
        raise SpecError(f"split `{text}` is not valid: give three positive fractions train,val,test "
                        f"summing to 1, e.g. `{','.join(f'{f:g}' for f in SPLIT_FRACTIONS)}`")
    return (parts[0], parts[1], parts[2])


def split_indices(statuses: np.ndarray, seed: int = 0,
                  fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split stratified by status: (train, val, test) index arrays, each sorted.

    Every status with at least three graphs puts at least one in each split.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    for status in sorted(set(statuses.tolist())):
        idx = np.flatnonzero(statuses == status)
        idx = idx[rng.permutation(idx.size)]
        n = idx.size
        n_val = int(round(n * fractions[1]))
        n_test = int(round(n * fractions[2]))
        if n >= 3:
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        n_train = n - n_val - n_test
        parts[0] += idx[:n_train].tolist()
        parts[1] += idx[n_train:n_train + n_val].tolist()
        parts[2] += idx[n_train + n_val:].tolist()
    return tuple(np.array(sorted(p), dtype=np.int64) for p in parts)  # type: ignore[return-value]


def unknown_as_infeasible(view: DataView) -> DataView:
    """A copy of `view` whose `unknown` graphs count as infeasible (only when a user asks for it).

    The AC solver failing is not a certificate (DESIGN.md, "Labels"); an operator who wants to
    treat every failed solve as "do not dispatch" can still train for that, explicitly.
    """
    unknown = STATUSES.index("unknown")
    graphs = []
    for g in view.graphs:
        if int(g.status) == unknown:
            g = g.clone()
            g.y_infeasible = torch.ones_like(g.y_infeasible)
        graphs.append(g)
    return dataclasses.replace(view, graphs=graphs)


def task_graphs(graphs: Sequence[Data], task: str) -> list[Data]:
    """The graphs a task learns from / is scored on (others have no target for it)."""
    if task == "feasibility":
        return [g for g in graphs if torch.isfinite(g.y_infeasible).all()]
    if task == "opf":
        return [g for g in graphs if torch.isfinite(g.y_opf).all()]
    return [g for g in graphs if torch.isfinite(g.y_cost).all()]


@torch.no_grad()
def platt_calibrate(model: Any, graphs: Sequence[Data], batch_size: int = 256) -> dict[str, float] | None:
    """Fit `logit_scale` and `logit_bias` of a feasibility model on `graphs` (Platt scaling).

    Returns the fitted values, or None (model unchanged) when `graphs` lack both classes.
    """
    from gridtune.finetune.trainer import make_loader, predict
    from gridtune.nn.tasks import make_task

    graphs = task_graphs(graphs, "feasibility")
    if len(graphs) < 2:
        return None
    model.logit_scale.fill_(1.0)
    model.logit_bias.fill_(0.0)
    logits, y = predict(model, make_loader(graphs, batch_size, shuffle=False), make_task("feasibility"))
    if y.min() == y.max():
        return None
    a = torch.ones(1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    z, t = logits.double(), y.double()
    # Platt's smoothed targets keep the fit finite when the validation split is separable.
    n_pos = float(t.sum())
    n_neg = float(t.numel()) - n_pos
    t = torch.where(t > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    opt = torch.optim.LBFGS([a, b], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        with torch.enable_grad():
            loss = torch.nn.functional.binary_cross_entropy_with_logits(a * z + b, t)
            loss.backward()
        return loss

    opt.step(closure)
    scale, bias = float(a), float(b)
    if not (np.isfinite(scale) and np.isfinite(bias)) or scale <= 0:
        return None  # a calibration that flips the ranking is worse than none
    model.logit_scale.fill_(scale)
    model.logit_bias.fill_(bias)
    return {"logit_scale": scale, "logit_bias": bias}


def pretrain(data: Any, *, task: str, out_dir: str | Path, model: str = "gine", epochs: int = 200,
             seed: int = 0, samples: int | None = None, hidden: int = 64, layers: int = 4,
             lr: float = 1e-3, batch_size: int = 64, patience: int = 20, workers: int | None = None,
             backend: str = "local", progress: bool = False, threads: int | None = 1,
             include_unknown: bool = False, lr_schedule: str | None = None,
             model_options: dict[str, Any] | None = None,
             split: tuple[float, float, float] | str = SPLIT_FRACTIONS) -> dict[str, Any]:
    """Train a model for `task` on `data` and write its checkpoint to `out_dir`.

    Args:
        data: recipe path, dataset directory, case name, `GridDataset` or list of graphs.
        task: `feasibility`, `opf` or `cost`.
        out_dir: checkpoint directory (also gets `metrics.json`, `history.json`).
        model: message-passing family (`gine`, `gatv2`, `transformer`).
        epochs, lr, batch_size, patience, seed: optimisation (see `TrainConfig`).
        lr_schedule: `None` (default) keeps the learning rate constant; `cosine` anneals it to 0
            over `epochs`. On case118 feasibility cosine from 3e-3 ended at a lower training loss
            (0.21 against 0.24 after 30 epochs) but not a better validation AUROC, and on case30
            it trailed a constant 1e-3 at 40 epochs.
        model_options: further `ModelConfig` settings, e.g. `{"edge_readout": True}`.
        split: train / validation / test fractions (default 0.7 / 0.15 / 0.15), stratified by
            status; stored in the checkpoint, so `gridtune evaluate` scores the same test split.
            A larger test share measures ECE more precisely (a few hundred test graphs put the ECE
            of a perfectly calibrated model near 0.05 by sampling noise alone).
        samples: use the first `samples` scenarios only.
        hidden, layers: model size.
        workers, backend: dataset build parallelism.
        include_unknown: feasibility only: count `unknown` scenarios (AC solver failed, nothing
            certified) as infeasible instead of leaving them out (default: False).
        threads: torch intra-op threads while training (default: 1). Graphs of a few hundred
            buses are too small to gain from intra-op parallelism, and on a shared machine extra
            threads measured 40x slower per step (0.93 s against 0.023 s, case14, batch 64).
            `None` keeps torch's setting.

    Returns: the metrics dict written to `metrics.json` (test-split metrics of the model and of the
        baseline, training throughput, wall time, split sizes).
    """
    from gridtune.nn.heads import check_task

    check_task(task)
    split = parse_split(split)
    with torch_threads(threads):
        return _pretrain(data, task=task, out_dir=out_dir, model=model, epochs=epochs, seed=seed,
                         samples=samples, hidden=hidden, layers=layers, lr=lr, batch_size=batch_size,
                         patience=patience, workers=workers, backend=backend, progress=progress,
                         include_unknown=include_unknown, lr_schedule=lr_schedule,
                         model_options=model_options, split=split)


def _pretrain(data: Any, *, task: str, out_dir: str | Path, model: str, epochs: int, seed: int,
              samples: int | None, hidden: int, layers: int, lr: float, batch_size: int,
              patience: int, workers: int | None, backend: str, progress: bool,
              include_unknown: bool, lr_schedule: str | None,
              model_options: dict[str, Any] | None, split: tuple[float, float, float]) -> dict[str, Any]:
    from gridtune.evaluation.evaluate import evaluate_model
    from gridtune.finetune.trainer import TrainConfig, fit, make_loader
    from gridtune.nn.checkpoint import save_checkpoint
    from gridtune.nn.model import ModelConfig, build_model, count_parameters
    from gridtune.nn.normalizer import Normalizer
    from gridtune.nn.tasks import make_task, task_for_model

    model_config = ModelConfig(conv=model, hidden=hidden, layers=layers, **(model_options or {}))
    train_config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, patience=patience, seed=seed,
                               lr_schedule=lr_schedule)
    start = time.perf_counter()
    view = resolve_data(data, samples=samples, workers=workers, backend=backend, progress=progress)
    if include_unknown and task == "feasibility":
        view = unknown_as_infeasible(view)
    tr_idx, va_idx, te_idx = split_indices(view.statuses, seed, split)
    pick = lambda idx: [view.graphs[i] for i in idx]  # noqa: E731
    train, val = task_graphs(pick(tr_idx), task), task_graphs(pick(va_idx), task)
    if len(train) < 2 or len(val) < 1:
        raise DataError(f"data `{view.name}` has too few graphs with a `{task}` target "
                        f"({len(train)} train, {len(val)} validation) to train on")
    torch.manual_seed(seed)
    normalizer = Normalizer().fit(train)
    net = build_model(model_config, task, normalizer)
    options: dict[str, Any] = {}
    if task == "feasibility":
        y = np.array([float(g.y_infeasible) for g in train])
        n_pos = int(y.sum())
        # weigh the rarer class up so that both drive the loss; calibration undoes the bias after
        options["pos_weight"] = float((y.size - n_pos) / n_pos) if 0 < n_pos < y.size else 1.0
    fit_task = task_for_model(net, **options) if task != "feasibility" else make_task(task, **options)
    result = fit(net, make_loader(train, batch_size, shuffle=True, seed=seed),
                 make_loader(val, batch_size, shuffle=False), fit_task, train_config, progress=progress)
    calibration = platt_calibrate(net, val) if task == "feasibility" else None
    test_metrics = evaluate_model(net, view, split=(tr_idx, te_idx))
    graphs_seen = len(train) * result.epochs_run
    metrics = {
        "task": task,
        "include_unknown": bool(include_unknown and task == "feasibility"),
        "data": view.name,
        "data_hash": view.content_hash,
        "model": dataclasses.asdict(model_config),
        "train": dataclasses.asdict(train_config),
        "split": {"seed": seed, "fractions": list(split), "train": int(tr_idx.size), "val": int(va_idx.size), "test": int(te_idx.size),
                  "train_used": len(train), "val_used": len(val)},
        "trainable_params": count_parameters(net, trainable_only=True),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_val": result.best_val,
        "train_wall_time_s": result.wall_time_s,
        "train_graphs_per_s": graphs_seen / max(result.wall_time_s, 1e-9),
        "calibration": calibration,
        "test": test_metrics,
        "wall_time_s": time.perf_counter() - start,
        "torch_threads": torch.get_num_threads(),
    }
    out = Path(out_dir)
    save_checkpoint(net, out, {"data_hash": view.content_hash, "data": view.name, "split_seed": seed,
                               "split_fractions": list(split), "include_unknown": metrics["include_unknown"], "metrics": metrics})
    (out / "metrics.json").write_text(json.dumps(_clean(metrics), indent=2) + "\n")
    (out / "history.json").write_text(json.dumps(_clean(result.history), indent=1) + "\n")
    return metrics


def _clean(obj: Any) -> Any:
    from gridtune.nn.checkpoint import _jsonable

    return _jsonable(obj)
