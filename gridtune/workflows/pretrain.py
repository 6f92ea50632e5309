"""Pre-training: dataset -> seeded stratified split -> fitted normaliser -> `fit` -> checkpoint.

    result = pretrain("case14", "runs/case14", task="feasibility", train=TrainConfig(epochs=60))

The dataset is built when given a recipe (`gridtune.grids.dataset.open_dataset`) and split by
`gridtune.grids.split.split_indices`; normalisation statistics are fitted on the training split;
the model trains with early stopping on the validation split (`gridtune.core.trainer.fit`);
feasibility probabilities are Platt-calibrated on the validation split (Platt 1999); the test
split is scored beside the baseline (`gridtune.evaluation.evaluate.evaluate_model`). The
checkpoint, `metrics.json` (a `PretrainResult`) and `history.json` go to `out_dir`.

Training writes its state to `out_dir/fit_state.pt` after every epoch; a pre-training killed
part way and run again with the same data and configuration continues after the last finished
epoch and ends with the same model (`gridtune.core.resume`). The file goes once the checkpoint
is written.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gridtune.core.resume import FitResume
from gridtune.core.trainer import fit, make_loader, torch_threads
from gridtune.errors import DataError
from gridtune.evaluation.evaluate import evaluate_model
from gridtune.files import json_digest, write_json
from gridtune.grids.split import split_indices
from gridtune.grids.view import (
    DataView,
    is_source_list,
    pool_views,
    resolve_data,
    task_graphs,
    unknown_as_infeasible,
)
from gridtune.nn.calibration import platt_calibrate
from gridtune.nn.checkpoint import load_checkpoint, save_checkpoint, seal_checkpoint
from gridtune.nn.loadability import fresh_state
from gridtune.nn.model import build_model, count_parameters, fill_cuts
from gridtune.nn.normalizer import Normalizer
from gridtune.nn.tasks import make_task, task_for_model
from gridtune.workflows.configs import PretrainConfig, with_fields
from gridtune.workflows.results import PretrainResult

FIT_STATE = "fit_state.pt"


def class_balance(graphs: list[Any]) -> dict[str, float]:
    """Feasibility task options for `graphs`: `pos_weight` weighs the rarer class up so that both
    drive the loss (calibration undoes the bias afterwards)."""
    y = np.array([float(g.y_infeasible) for g in graphs])
    n_pos = int(y.sum())
    return {"pos_weight": float((y.size - n_pos) / n_pos) if 0 < n_pos < y.size else 1.0}


def self_supervise(net: Any, train_graphs: list[Any], sources: list[Any], config: PretrainConfig
                   ) -> dict[str, Any]:
    """Masked-feature reconstruction (`gridtune.core.ssl.pre_adapt`) on the training split's
    graphs (labels unused, every status) and `config.unlabeled` fresh draws of each source's
    recipe (no OPF solve); returns what the result records."""
    from gridtune.core.ssl import pre_adapt

    seed = config.train.seed
    graphs = list(train_graphs)
    drawn = 0
    if config.unlabeled > 0:
        from gridtune.grids.dataset import open_dataset

        for source in sources:
            # the same scenarios the supervised part reads: never build or label more to draw from
            dataset = open_dataset(source, samples=config.samples) if isinstance(source, (str, Path)) else source
            if not hasattr(dataset, "unlabeled"):
                raise DataError(f"unlabeled = `{config.unlabeled}` needs sources with a recipe to draw "
                                f"from (a recipe, case name or dataset directory), not "
                                f"`{type(dataset).__name__}`")
            extra = dataset.unlabeled(config.unlabeled, seed)
            graphs += extra
            drawn += len(extra)
    batch = config.train.batch_size
    result = pre_adapt(net, make_loader(graphs, batch, shuffle=True, seed=seed),
                       epochs=config.self_supervised_epochs, lr=config.train.lr, seed=seed)
    return {"epochs": config.self_supervised_epochs, "graphs": len(graphs), "drawn": drawn,
            "loss": result.history, "wall_time_s": result.wall_time_s}


def pretrain(data: Any, out_dir: str | Path, config: PretrainConfig | None = None, *,
             workers: int | None = None, backend: str = "local", threads: int | None = 1,
             progress: bool = False, **fields: Any) -> PretrainResult:
    """Train a model on `data` and write its checkpoint to `out_dir`.

    Args:
        data: recipe path, dataset directory, case name, `GridDataset` or list of graphs; or a
            list of such sources (multi-source pre-training: one model across several grids,
            topologies and load regimes; each grid split by its own statuses, the result
            reports the test split of each grid under `per_source`).
        out_dir: checkpoint directory (also gets `metrics.json`, `history.json`).
        config: what to train (`PretrainConfig`); `fields` override or supply its fields, e.g.
            `task="opf"`, `model=ModelConfig(hidden=32)`, `train=TrainConfig(epochs=60)`.
        workers, backend: dataset build parallelism (`gridtune.parallel`).
        threads: torch intra-op threads while training (default: 1, see
            `gridtune.core.trainer.torch_threads`); `None` keeps torch's setting.
        progress: show progress bars.
    """
    config = with_fields(PretrainConfig, config, fields)
    with torch_threads(threads):
        return _pretrain(data, Path(out_dir), config, workers=workers, backend=backend,
                         progress=progress)


def _pretrain(data: Any, out: Path, config: PretrainConfig, *, workers: int | None, backend: str,
              progress: bool) -> PretrainResult:
    task, seed = config.task, config.train.seed
    start = time.perf_counter()
    fresh_state()  # numbers independent of what this process solved before
    include_unknown = config.include_unknown and task == "feasibility"

    def read(source: Any) -> DataView:
        v = resolve_data(source, samples=config.samples, workers=workers, backend=backend,
                         progress=progress)
        return unknown_as_infeasible(v) if include_unknown else v

    pooled = None
    if is_source_list(data):
        pooled = pool_views([read(source) for source in data])
        view = pooled.view
        tr_idx, va_idx, te_idx = pooled.split(seed, config.split)
    else:
        view = read(data)
        tr_idx, va_idx, te_idx = split_indices(view.statuses, seed, config.split)
    train = task_graphs([view.graphs[i] for i in tr_idx], task)
    val = task_graphs([view.graphs[i] for i in va_idx], task)
    if len(train) < 2 or len(val) < 1:
        raise DataError(f"data `{view.name}` has too few graphs with a `{task}` target "
                        f"({len(train)} train, {len(val)} validation) to train on")
    torch.manual_seed(seed)
    net = build_model(config.model, task, Normalizer().fit(train))
    ssl_report = None
    if config.self_supervised_epochs > 0:
        sources = list(data) if is_source_list(data) else [data]
        ssl_report = self_supervise(net, [view.graphs[i] for i in tr_idx], sources, config)
    fit_task = make_task(task, **class_balance(train)) if task == "feasibility" else task_for_model(net)
    batch = config.train.batch_size
    resume = FitResume(out / FIT_STATE, _run_key(config, view.content_hash, tr_idx, va_idx))
    fitted = fit(net, make_loader(train, batch, shuffle=True, seed=seed),
                 make_loader(val, batch, shuffle=False), fit_task, config.train, progress=progress,
                 resume=resume)
    fill_cuts(net, [view.graphs[i] for i in tr_idx])  # with `loadability_cuts`: before calibrating
    calibration = platt_calibrate(net, val) if task == "feasibility" else None
    test_report = evaluate_model(net, view, split=(tr_idx, te_idx))
    per_source = None
    if pooled is not None:
        per_source = {}
        for v in pooled.sources:
            s_tr, _, s_te = split_indices(v.statuses, seed, config.split)
            per_source[v.name] = evaluate_model(net, v, split=(s_tr, s_te))
    result = PretrainResult(
        checkpoint=str(out), task=task, data=view.name, data_hash=view.content_hash,
        model=dataclasses.asdict(config.model), train=dataclasses.asdict(config.train),
        split={"seed": seed, "fractions": list(config.split), "train": int(tr_idx.size),
               "val": int(va_idx.size), "test": int(te_idx.size), "train_used": len(train),
               "val_used": len(val)},
        include_unknown=include_unknown,
        trainable_parameters=count_parameters(net, trainable_only=True),
        epochs_run=fitted.epochs_run, best_epoch=fitted.best_epoch, best_val=fitted.best_val,
        train_wall_time_s=fitted.wall_time_s,
        train_graphs_per_s=len(train) * fitted.epochs_run / max(fitted.wall_time_s, 1e-9),
        calibration=calibration, test=test_report, per_source=per_source, self_supervised=ssl_report,
        wall_time_s=time.perf_counter() - start, torch_threads=torch.get_num_threads())
    save_checkpoint(net, out, {"data_hash": view.content_hash, "data": view.name, "split_seed": seed,
                               "split_fractions": list(config.split),
                               "include_unknown": include_unknown, "metrics": result.to_dict()})
    result.save(out)
    write_json(out / "history.json", fitted.history, indent=1)
    seal_checkpoint(out, [result.FILE, "history.json"])
    (out / FIT_STATE).unlink(missing_ok=True)
    return result


def _run_key(config: PretrainConfig, data_hash: str, train_idx: np.ndarray, val_idx: np.ndarray
             ) -> str:
    """What a saved training state must match to be resumed: the configuration, the data and
    the split (`gridtune.core.resume`)."""
    return json_digest({"config": dataclasses.asdict(config), "data": data_hash,
                        "train": train_idx.tolist(), "val": val_idx.tolist()})


def leave_one_out(sources: list[Any], out_dir: str | Path, config: PretrainConfig | None = None, *,
                  workers: int | None = None, backend: str = "local", threads: int | None = 1,
                  progress: bool = False, **fields: Any) -> dict[str, Any]:
    """Leave-one-grid-out evaluation of multi-source pre-training: for each grid, pre-train on
    all the others (`out_dir/without-<grid>`) and score that model zero-shot on the held-out
    grid's test split (the split a later fine-tuning on that grid would be scored on).

    Returns (and writes to `out_dir/leave_one_out.json`) `{grid: {checkpoint, zero_shot,
    baseline, n_test}}`, where `zero_shot` and `baseline` are metric dicts.
    """
    config = with_fields(PretrainConfig, config, fields)
    if not is_source_list(sources) or len(sources) < 2:
        raise DataError("leave-one-grid-out needs at least two data sources, got "
                        f"`{sources if not isinstance(sources, (list, tuple)) else len(sources)}`")
    out = Path(out_dir)
    seed = config.train.seed
    with torch_threads(threads):
        views = [resolve_data(s, samples=config.samples, workers=workers, backend=backend,
                              progress=progress) for s in sources]
        pool_views(views)  # duplicate names and mixed schemas fail before any training
        summary: dict[str, Any] = {}
        for i, held in enumerate(views):
            rest = views[:i] + views[i + 1:]
            ckpt = out / f"without-{held.name}"
            _pretrain(rest, ckpt, config, workers=workers, backend=backend, progress=progress)
            model, _ = load_checkpoint(ckpt)
            tr, _, te = split_indices(held.statuses, seed, config.split)
            report = evaluate_model(model, held, split=(tr, te))
            summary[held.name] = {"checkpoint": str(ckpt), "trained_on": [v.name for v in rest],
                                  "n_test": report.get("n_test"), "zero_shot": report.get("model"),
                                  "baseline": report.get("baseline")}
    write_json(out / "leave_one_out.json", summary)
    return summary
