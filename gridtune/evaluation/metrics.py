"""Metrics for feasibility classifiers and OPF predictors, with undefined values made explicit.

A metric that cannot be computed (AUROC on a one-class test set, F1 with no positive predictions
and no positives) is reported as `None` with a reason under `"undefined"`, never as NaN.

Classification (positive class = certified infeasible):
    auroc, auprc (average precision), f1 and balanced_accuracy at threshold 0.5, ece (expected
    calibration error, 15 equal-width bins; Guo et al. 2017, "On Calibration of Modern Neural
    Networks"), brier (Brier 1950), log_loss.
OPF (physical units): MAE / RMSE of vm (p.u.), va (degrees, relative to the reference bus), pg
    (MW), qg (Mvar); optimality gap
    of the predicted dispatch's cost; the AC system power-balance residual in MW at the predicted
    operating point (MATPOWER pi-model branch equations; Zimmerman et al. 2011).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gridtune.grids.features import BRANCH_FEATURES, BUS_FEATURES

ECE_BINS = 15
Report = dict[str, Any]  # metric name -> float | None, plus "undefined": {name: reason}


def _undefined(report: Report, name: str, reason: str) -> None:
    report[name] = None
    report.setdefault("undefined", {})[name] = reason


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of P(positive): sum over equal-width bins of |mean label - mean prob| x bin share.

    Bins are [0, 1/bins), ..., [(bins-1)/bins, 1]; a probability of exactly 1 falls in the last.
    """
    probs = np.asarray(probs, dtype=float)
    labels = np.asarray(labels, dtype=float)
    idx = np.minimum((probs * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(labels[sel].mean() - probs[sel].mean())
    return float(ece)


def reliability_table(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per non-empty bin: `lower`, `upper`, `count`, `mean_prob`, `frac_positive` (reliability diagram)."""
    idx = np.minimum((np.asarray(probs) * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        sel = idx == b
        if sel.any():
            rows.append({"lower": b / bins, "upper": (b + 1) / bins, "count": int(sel.sum()),
                         "mean_prob": float(np.mean(probs[sel])), "frac_positive": float(np.mean(labels[sel]))})
    return rows


def classification_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> Report:
    """Metrics of predicted P(infeasible) `probs` against 0/1 `labels` (NaN labels are dropped).

    Returns a dict with `n`, `n_positive`, `auroc`, `auprc`, `f1`, `balanced_accuracy`, `ece`,
    `brier`, `log_loss`, `accuracy`; undefined ones are `None` with a reason in `undefined`.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    probs = np.asarray(probs, dtype=float).ravel()
    labels = np.asarray(labels, dtype=float).ravel()
    keep = np.isfinite(labels)
    probs, labels = probs[keep], labels[keep]
    report: Report = {"n": int(labels.size), "n_positive": int(labels.sum())}
    if labels.size == 0:
        for name in ("auroc", "auprc", "f1", "balanced_accuracy", "ece", "brier", "log_loss", "accuracy"):
            _undefined(report, name, "no labelled (feasible / infeasible) graphs")
        return report
    y = labels.astype(bool)
    pred = probs >= threshold
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    report["brier"] = float(np.mean((probs - labels) ** 2))
    report["log_loss"] = float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
    report["ece"] = expected_calibration_error(probs, labels)
    report["accuracy"] = float(np.mean(pred == y))
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        only = "infeasible" if n_neg == 0 else "feasible"
        reason = f"only one class (`{only}`) among the {labels.size} labelled graphs"
        for name in ("auroc", "auprc", "balanced_accuracy"):
            _undefined(report, name, reason)
    else:
        report["auroc"] = float(roc_auc_score(y, probs))
        report["auprc"] = float(average_precision_score(y, probs))
        tpr = float(np.mean(pred[y]))
        tnr = float(np.mean(~pred[~y]))
        report["balanced_accuracy"] = (tpr + tnr) / 2
    tp = int(np.sum(pred & y))
    denom = 2 * tp + int(np.sum(pred & ~y)) + int(np.sum(~pred & y))
    if denom == 0:
        _undefined(report, "f1", "no infeasible graphs and none predicted infeasible")
    else:
        report["f1"] = 2 * tp / denom
    return report


def roc_points(probs: np.ndarray, labels: np.ndarray) -> dict[str, list[float]] | None:
    """ROC curve (`fpr`, `tpr`, `thresholds`) or None when only one class is present."""
    from sklearn.metrics import roc_curve

    keep = np.isfinite(labels)
    y = labels[keep].astype(bool)
    if y.all() or not y.any():
        return None
    fpr, tpr, thr = roc_curve(y, probs[keep])
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": np.nan_to_num(thr, posinf=1.0).tolist()}


# ---- OPF ---------------------------------------------------------------------------------------

_X = {n: i for i, n in enumerate(BUS_FEATURES)}
_E = {n: i for i, n in enumerate(BRANCH_FEATURES)}


def ac_power_balance(x: Tensor, edge_index: Tensor, edge_attr: Tensor, vm_pu: Tensor, va_rad: Tensor,
                     pg_pu: Tensor) -> tuple[Tensor, Tensor]:
    """Active-power balance of an operating point under the AC branch model.

    Nodal residual, per bus, in p.u.: `pg - pd - gs * vm^2 - sum of P flowing out on energised
    branches`, with branch flows from the MATPOWER pi model (series admittance 1/(r + jx), total
    charging b split between ends, complex tap `tap_ratio * exp(j shift_rad)` at the from end).

    Args:
        x: raw bus features (N, F_bus); edge_index (2, 2E) and raw edge_attr (2E, F_branch) of
            schema v1 (only forward, in-service rows are used).
        vm_pu, va_rad, pg_pu: operating point per bus (N,).

    Returns:
        (nodal residual (N,) p.u., branch active losses (E_on,) p.u.), float64.
    """
    d = torch.float64
    fwd = (edge_attr[:, _E["is_reverse"]] < 0.5) & (edge_attr[:, _E["in_service"]] > 0.5)
    ea = edge_attr[fwd].to(d)
    f, t = edge_index[0, fwd], edge_index[1, fwd]
    v = torch.polar(vm_pu.to(d), va_rad.to(d))  # (N,) complex
    ys = 1.0 / torch.complex(ea[:, _E["r_pu"]], ea[:, _E["x_pu"]])
    bc = torch.complex(torch.zeros_like(ea[:, 0]), ea[:, _E["b_pu"]] / 2)
    tap = torch.polar(ea[:, _E["tap_ratio"]], ea[:, _E["shift_rad"]])
    vf, vt = v[f], v[t]
    i_f = (ys + bc) / (tap.abs() ** 2) * vf - ys / tap.conj() * vt
    i_t = -ys / tap * vf + (ys + bc) * vt
    p_f = (vf * i_f.conj()).real
    p_t = (vt * i_t.conj()).real
    out = torch.zeros_like(vm_pu, dtype=d)
    out.index_add_(0, f, p_f)
    out.index_add_(0, t, p_t)
    xd = x.to(d)
    nodal = pg_pu.to(d) - xd[:, _X["pd_pu"]] - xd[:, _X["gs_pu"]] * vm_pu.to(d) ** 2 - out
    return nodal, p_f + p_t


def _rmse(err: np.ndarray) -> float:
    return float(np.sqrt(np.mean(err ** 2)))


OPF_UNITS = (("vm", "pu"), ("va", "degree"), ("pg", "mw"), ("qg", "mvar"))


def opf_metrics(graphs: list[Any], predictions: list[np.ndarray | None], *, which: str = "model") -> Report:
    """OPF metrics over the feasible graphs (those with a finite `y_opf`).

    Args:
        graphs: PyG graphs of schema v1 (raw features, with `y_opf`, `y_cost`, `base_mva`).
        predictions: per graph an (N, 4) array of `OPF_TARGETS` in per-unit (vm, va_rad, pg, qg);
            columns may be NaN where the predictor has no value (the DC-OPF has no vm / qg: vm is
            then taken as 1 p.u. for the power balance). `None` skips a graph (no prediction).
        which: name used in reasons for undefined metrics.

    Returns: `n`, `mae_<t>_<unit>` / `rmse_<t>_<unit>` for vm (pu), va (degree), pg (mw), qg (mvar),
        `optimality_gap` (mean of (C(pred) - C(true)) / true cost, signed), `abs_optimality_gap`,
        `power_balance_mw` (mean |system residual|), `nodal_mismatch_mw` (mean |nodal residual|).
    """
    errs: list[list[np.ndarray]] = [[] for _ in OPF_UNITS]
    gaps, balance, nodal = [], [], []
    for g, pred in zip(graphs, predictions, strict=True):
        y = g.y_opf.numpy()
        if pred is None or not np.isfinite(y).all():
            continue
        base = float(g.base_mva)
        scale = (1.0, 180.0 / math.pi, base, base)
        ref = np.flatnonzero(g.x[:, _X["is_ref"]].numpy() > 0.5)
        r = int(ref[0]) if ref.size else 0
        for k in range(4):
            if np.isfinite(pred[:, k]).all():
                err = pred[:, k] - y[:, k]
                if k == 1:
                    # angles relative to the reference bus: only differences are physical, and
                    # solvers place the reference at different absolute angles (pandapower's
                    # case118 AC-OPF at 30 degrees, the DC-OPF at 0)
                    err = err - err[r]
                errs[k].append(err * scale[k])
        if not np.isfinite(pred[:, [1, 2]]).all():
            continue
        vm = np.where(np.isfinite(pred[:, 0]), pred[:, 0], 1.0)
        res, _ = ac_power_balance(g.x, g.edge_index, g.edge_attr, torch.as_tensor(vm),
                                  torch.as_tensor(pred[:, 1]), torch.as_tensor(pred[:, 2]))
        balance.append(abs(float(res.sum())) * base)
        nodal.append(float(res.abs().mean()) * base)
        cost = float(g.y_cost)
        if math.isfinite(cost) and cost != 0:
            gaps.append((dispatch_cost(g.x.numpy(), pred[:, 2]) - dispatch_cost(g.x.numpy(), y[:, 2])) / cost)
    report: Report = {"n": max([len(balance)] + [len(e) for e in errs])}
    for (t, unit), e in zip(OPF_UNITS, errs, strict=True):
        if e:
            flat = np.concatenate(e)
            report[f"mae_{t}_{unit}"] = float(np.mean(np.abs(flat)))
            report[f"rmse_{t}_{unit}"] = _rmse(flat)
        else:
            reason = (f"the {which} gives no `{t}`" if any(np.isfinite(g.y_opf.numpy()).all() for g in graphs)
                      else "no feasible graphs with an AC-OPF solution")
            _undefined(report, f"mae_{t}_{unit}", reason)
            _undefined(report, f"rmse_{t}_{unit}", reason)
    for name, vals in (("power_balance_mw", balance), ("nodal_mismatch_mw", nodal)):
        if vals:
            report[name] = float(np.mean(vals))
        else:
            _undefined(report, name, f"no operating point from the {which} on feasible graphs")
    if gaps:
        report["optimality_gap"] = float(np.mean(gaps))
        report["abs_optimality_gap"] = float(np.mean(np.abs(gaps)))
    else:
        for name in ("optimality_gap", "abs_optimality_gap"):
            _undefined(report, name, "no feasible graphs with a finite AC-OPF cost")
    return report


def dispatch_cost(x: np.ndarray, pg_pu: np.ndarray) -> float:
    """Cost ($/h, without constant terms) of a per-bus dispatch with the bus cost features.

    Constant cost terms are not in the schema; they cancel in the optimality gap, which compares
    two dispatches of the same scenario.
    """
    c2 = x[:, _X["cost_c2_per_pu2h"]]
    c1 = x[:, _X["cost_c1_per_puh"]]
    return float(np.sum(c2 * pg_pu ** 2 + c1 * pg_pu))
