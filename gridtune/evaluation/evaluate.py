"""Evaluate a model on a dataset's test split, beside its baseline.

The dataset is split exactly as pre-training splits it (seeded, stratified by status). The model
is scored on the test split; the baseline is fitted on the training split (feasibility) or read
from the stored DC-OPF (OPF) and scored on the same test graphs. On a dataset the checkpoint was
not trained on (another grid: zero-shot) the same split is used, so model and baseline still
face the same graphs; the model never sees that dataset's training split.

The report is a JSON-ready dict: `model` and `baseline` metric dicts (snake-case metric names,
`None` plus a reason under `undefined` where a metric is undefined), a `verdict` saying whether
the model beats the baseline, and speed figures (model inference against the solver's time per
scenario).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Any

import numpy as np
import torch

from gridtune.core.metrics import classification_metrics, reliability_table, roc_points
from gridtune.evaluation.baselines import aggregate_logistic_baseline, dc_opf_baseline
from gridtune.evaluation.metrics import opf_metrics
from gridtune.files import jsonable
from gridtune.grids.split import split_indices
from gridtune.grids.view import DataView, resolve_data, task_graphs

INFERENCE_BATCH = 256


@torch.no_grad()
def _run(model: Any, graphs: list[Any]) -> tuple[list[torch.Tensor], float]:
    """Model outputs per batch and the wall time of inference alone."""
    from torch_geometric.loader import DataLoader

    model.eval()
    batches = list(DataLoader(graphs, batch_size=INFERENCE_BATCH, shuffle=False))
    model(batches[0])  # warm-up: first calls pay one-off allocation and dispatch costs
    start = time.perf_counter()
    outs = [(model(b), b) for b in batches]
    return outs, time.perf_counter() - start  # type: ignore[return-value]


def _verdict(model_value: float | None, base_value: float | None, metric: str, higher_is_better: bool) -> dict[str, Any]:
    if model_value is None or base_value is None:
        return {"metric": metric, "beats_baseline": None,
                "reason": f"`{metric}` is undefined for the {'model' if model_value is None else 'baseline'}"}
    margin = (model_value - base_value) if higher_is_better else (base_value - model_value)
    return {"metric": metric, "model": model_value, "baseline": base_value, "margin": margin,
            "beats_baseline": bool(margin > 0)}


def evaluate_model(model: Any, data: Any, *, split: tuple[np.ndarray, np.ndarray] | None = None,
                   seed: int = 0) -> dict[str, Any]:
    """Metrics of `model` on the test split of `data`, with the baseline and a verdict.

    Args:
        model: a `GridModelNet` (its `task` decides the metrics).
        data: anything `resolve_data` reads.
        split: (train indices, test indices); default: `split_indices(statuses, seed)`.
        seed: split seed when `split` is not given.
    """
    view = data if isinstance(data, DataView) else resolve_data(data)
    if split is None:
        tr, _, te = split_indices(view.statuses, seed)
        split = (tr, te)
    train = [view.graphs[i] for i in split[0]]
    test_all = [view.graphs[i] for i in split[1]]
    test = task_graphs(test_all, model.task)
    report: dict[str, Any] = {"task": model.task, "data": view.name, "n_test": len(test),
                              "n_test_all": len(test_all)}
    if not test:
        report["model"] = {"undefined": {"all": f"no test graphs with a `{model.task}` target"}}
        return report
    outs, infer_s = _run(model, test)
    report["inference_graphs_per_s"] = len(test) / max(infer_s, 1e-9)
    if view.solve_time_s is not None:
        times = view.solve_time_s[split[1]]
        times = times[np.isfinite(times) & (times > 0)]
        if times.size:
            solver_s = float(times.mean())
            report["solver_s_per_scenario"] = solver_s
            report["speedup_vs_solver"] = solver_s * report["inference_graphs_per_s"]
    if model.task == "feasibility":
        logits = torch.cat([o for o, _ in outs]).double()
        probs = torch.sigmoid(logits).numpy()
        labels = np.array([float(g.y_infeasible) for g in test])
        report["model"] = classification_metrics(probs, labels)
        base = aggregate_logistic_baseline(train, test_all)
        base_probs, base_labels = base.pop("probs", None), base.pop("labels", None)
        report["baseline"] = base
        report["verdict"] = _verdict(report["model"].get("auroc"), base.get("auroc"), "auroc", True)
        report["curves"] = {"roc": roc_points(probs, labels),
                            "reliability": reliability_table(probs, labels),
                            "baseline_roc": None if base_probs is None else roc_points(base_probs, base_labels)}
    elif model.task == "opf":
        preds: list[np.ndarray | None] = []
        for out, batch in outs:
            ptr = batch.ptr.tolist()
            preds += [out[ptr[i]:ptr[i + 1]].double().numpy() for i in range(len(ptr) - 1)]
        report["model"] = opf_metrics(test, preds)
        config = getattr(model, "config", None)
        if getattr(config, "balance_pg", False):
            # The output layer closes the system balance by construction; say so, and report what
            # the head alone would have left, so nobody mistakes the ~0 for learned physics.
            model.config = dataclasses.replace(config, balance_pg=False)
            try:
                raw_outs, _ = _run(model, test)
            finally:
                model.config = config
            raw = []
            for out, batch in raw_outs:
                ptr = batch.ptr.tolist()
                raw += [out[ptr[i]:ptr[i + 1]].double().numpy() for i in range(len(ptr) - 1)]
            raw_report = opf_metrics(test, raw)
            report["model"]["power_balance_mw_before_completion"] = raw_report.get("power_balance_mw")
            report["model"]["balance_completion"] = True
        report["baseline"] = dc_opf_baseline(test)
        report["verdict"] = {
            "power_balance": _verdict(report["model"].get("power_balance_mw"),
                                      report["baseline"].get("power_balance_mw"), "power_balance_mw", False),
            "nodal_balance": _verdict(report["model"].get("nodal_mismatch_mw"),
                                      report["baseline"].get("nodal_mismatch_mw"), "nodal_mismatch_mw", False),
            "pg": _verdict(report["model"].get("mae_pg_mw"), report["baseline"].get("mae_pg_mw"), "mae_pg_mw", False),
            "va": _verdict(report["model"].get("mae_va_degree"), report["baseline"].get("mae_va_degree"),
                           "mae_va_degree", False),
        }
        report["scatter"] = {"true": np.concatenate([g.y_opf.numpy() for g in test]).tolist(),
                             "pred": np.concatenate(preds).tolist()}
    else:
        pred = torch.cat([o for o, _ in outs]).double().numpy()
        y = np.array([float(g.y_cost) for g in test])
        dc = np.array([float(g.dc_cost) for g in test])
        report["model"] = _cost_metrics(pred, y)
        ok = np.isfinite(dc)
        report["baseline"] = {"baseline": "DC-OPF objective", **_cost_metrics(dc[ok], y[ok])}
        report["verdict"] = _verdict(report["model"].get("mape_cost"), report["baseline"].get("mape_cost"),
                                     "mape_cost", False)
    return report


def _cost_metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    if y.size == 0:
        return {"n": 0, "mae_cost": None, "mape_cost": None,
                "undefined": {"mae_cost": "no graphs", "mape_cost": "no graphs"}}
    err = pred - y
    return {"n": int(y.size), "mae_cost": float(np.mean(np.abs(err))),
            "rmse_cost": float(np.sqrt(np.mean(err ** 2))),
            "mape_cost": float(np.mean(np.abs(err) / np.maximum(np.abs(y), 1.0)))}


def to_json(report: dict[str, Any]) -> dict[str, Any]:
    """The report without bulky plot data, NaN / inf turned into null (JSON has neither)."""
    slim = {k: v for k, v in report.items() if k not in ("scatter",)}
    out = jsonable(slim)
    return json.loads(json.dumps(out, allow_nan=False, default=_default))


def _default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _fmt(value: Any, digits: int = 3) -> str:
    return "undefined" if value is None else f"{value:.{digits}f}"


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few human-readable lines: model against baseline, the verdict, speed."""
    m, b = report.get("model", {}), report.get("baseline", {})
    head = f"test split {report.get('n_test', 0)} graphs"
    if report.get("data"):
        head += f" of `{report['data']}`" + (" (zero-shot: another grid than training)" if report.get("zero_shot") else "")
    lines = [head]
    if report["task"] == "feasibility":
        keys = ("auroc", "auprc", "f1", "balanced_accuracy", "ece", "brier")
    elif report["task"] == "opf":
        keys = ("mae_vm_pu", "mae_va_degree", "mae_pg_mw", "mae_qg_mvar", "optimality_gap",
                "power_balance_mw", "power_balance_mw_before_completion", "nodal_mismatch_mw")
    else:
        keys = ("mae_cost", "mape_cost")
    lines.append(f"{'metric':<36}{'model':>12}{'baseline':>12}")
    for k in keys:
        if k in m or k in b:
            lines.append(f"{k:<36}{_fmt(m.get(k), 4):>12}{_fmt(b.get(k), 4):>12}")
    for name, why in {**m.get("undefined", {})}.items():
        lines.append(f"undefined  {name}: {why}")
    verdicts = report.get("verdict", {})
    verdicts = [verdicts] if "metric" in verdicts else list(verdicts.values())
    for v in verdicts:
        if v.get("beats_baseline") is None:
            lines.append(f"verdict    {v['metric']}: cannot compare ({v.get('reason')})")
        else:
            word = "beats" if v["beats_baseline"] else "does NOT beat"
            lines.append(f"verdict    {v['metric']}: model {word} the baseline (margin {v['margin']:+.4f})")
    if "inference_graphs_per_s" in report:
        speed = f"speed      {report['inference_graphs_per_s']:.0f} graphs/s inference"
        if "speedup_vs_solver" in report:
            speed += (f"; solver {report['solver_s_per_scenario']:.3f} s/scenario: "
                      f"{report['speedup_vs_solver']:.0f}x faster")
        lines.append(speed)
    lines += trust_lines(report.get("trust"))
    return lines


def trust_lines(trust: dict[str, Any] | None) -> list[str]:
    """The conformal coverage and the solver fallback of a calibrated checkpoint (the `trust`
    section of an evaluation report), in two or three lines; none when it was not calibrated."""
    if not trust:
        return []
    if "skipped" in trust:
        return [f"trust      not scored: {trust['skipped']}"]
    policy = trust.get("policy", "marginal")
    part = trust.get(policy, {})
    if "skipped" in part:
        return [f"trust      {policy} sets not scored: {part['skipped']}"]
    alpha = trust["alpha"]
    lines = [f"coverage   {_fmt(part.get('coverage'), 4)} at alpha {alpha:g} (target >= {1 - alpha:g}, "
             f"{policy} sets, {trust.get('n_calibration')} calibration scenarios)"]
    fb = part.get("fallback", {})
    if fb:
        line = (f"fallback   model answers {fb['answered_share']:.1%} of {fb['n']} scenarios "
                f"(single-class set and familiar), error among answered {_fmt(fb.get('error_among_answered'), 4)}")
        if fb.get("solver_time_saved_share") is not None:
            line += f"; solver time saved {fb['solver_time_saved_share']:.1%}"
        lines.append(line)
    if trust.get("unfamiliar_share") is not None:
        lines.append(f"familiar   {1 - trust['unfamiliar_share']:.1%} of scenarios within the calibrated "
                     f"familiarity threshold")
    return lines
