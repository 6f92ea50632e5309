"""Evaluate a checkpoint on a dataset: the checkpoint's own split, its baseline, its constraints.

    report = evaluate_checkpoint("runs/c14-c30", "case30", out_dir="runs/eval")

The dataset is split exactly as the checkpoint's training split it (seed and fractions stored in
the checkpoint); on a dataset the checkpoint was not trained on (zero-shot) the same split rule
applies, so model and baseline face the same test graphs. The report is
`gridtune.evaluation.evaluate.evaluate_model`'s, plus provenance and optional constraint metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gridtune.core.trainer import make_loader, torch_threads
from gridtune.errors import CheckpointError
from gridtune.evaluation.evaluate import evaluate_model, to_json
from gridtune.files import reseal, write_json
from gridtune.grids.split import SPLIT_FRACTIONS, split_indices
from gridtune.grids.view import (
    DataView,
    check_schema,
    resolve_data,
    task_graphs,
    unknown_as_infeasible,
)
from gridtune.nn.checkpoint import load_checkpoint
from gridtune.nn.loadability import fresh_state


def _check_task_data(task: str, view: DataView) -> None:
    if task_graphs(view.graphs, task):
        return
    needs = {"feasibility": "feasible / certified-infeasible labels",
             "opf": "AC-OPF solutions (recipe `[labels] solutions = true`)",
             "cost": "AC-OPF objectives"}[task]
    counts = {s: int((view.statuses == s).sum()) for s in sorted(set(view.statuses.tolist()))}
    raise CheckpointError(f"checkpoint task `{task}` needs {needs}, but data `{view.name}` has none "
                          f"(statuses: {counts})")


def evaluate_checkpoint(checkpoint: str | Path, data: Any, *, out_dir: str | Path | None = None,
                        samples: int | None = None, plots: bool = True, threads: int | None = 1,
                        constraints: str | Path | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on `data` (recipe, dataset directory, GridDataset or graphs).

    Writes `metrics.json` and plots (ROC curve and reliability diagram for feasibility, predicted
    against true scatter plots for OPF) to `out_dir` when given. With `constraints` (a constraint
    spec file), the report gains `constraints`: per constraint `violation_rate`,
    `mean_violation`, `max_violation` on the same test split. Returns the report.
    """
    fresh_state()  # numbers independent of what this process solved before
    model, meta = load_checkpoint(checkpoint)
    constraint_set = None
    if constraints is not None:  # a set that does not fit the task fails before any data is built
        from gridtune.constraints.api import load_constraint_set

        constraint_set = load_constraint_set(constraints, meta["task"])
    view = resolve_data(data, samples=samples)
    check_schema(view, str(meta["schema_version"]))
    if meta.get("include_unknown"):
        view = unknown_as_infeasible(view)  # score what the model was trained to predict
    _check_task_data(meta["task"], view)
    seed = int(meta.get("split_seed", 0))
    fractions = tuple(meta.get("split_fractions", SPLIT_FRACTIONS))  # the split it was trained on
    tr, _, te = split_indices(view.statuses, seed, fractions)
    with torch_threads(threads):
        report = evaluate_model(model, view, split=(tr, te))
        if meta["task"] == "feasibility":  # conformal coverage and the solver fallback, if calibrated
            from gridtune.workflows.trust import trust_section

            report.update(trust_section(model, checkpoint, view, te, out_dir if plots else None))
        if constraint_set is not None:
            from gridtune.constraints.metrics import evaluate_constraints

            test = task_graphs([view.graphs[i] for i in te], meta["task"])
            report["constraints"] = evaluate_constraints(
                model, make_loader(test, 64, shuffle=False), constraint_set)
    report.update({
        "checkpoint": str(checkpoint),
        "data": view.name,
        "data_hash": view.content_hash,
        "trained_on": meta.get("data"),
        "same_data_as_training": view.content_hash == meta.get("data_hash"),
        "zero_shot": view.name != meta.get("data"),
        "unknown_counted_as_infeasible": bool(meta.get("include_unknown")),
    })
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if plots:
            from gridtune.evaluation.plots import write_plots

            report["plots"] = [str(p) for p in write_plots(report, out)]
            report["plots"] += [report["trust"]["plot"]] if "plot" in report.get("trust", {}) else []
        write_json(out / "metrics.json", to_json(report))
        reseal(out, ["metrics.json", *(Path(p).name for p in report.get("plots", []))])
    return report
