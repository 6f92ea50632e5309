"""Metrics of probabilistic classifiers, with undefined values made explicit; modality-agnostic.

A metric that cannot be computed (AUROC on a one-class test set, F1 with no positive predictions
and no positives) is reported as `None` with a reason under `"undefined"`, never as NaN.

Binary (positive class = e.g. certified infeasible): auroc, auprc (average precision), f1 and
balanced_accuracy at threshold 0.5, ece, brier (Brier 1950), log_loss, accuracy.

Calibration (the only home of ECE and reliability tables): equal-width bins, 15 by default
(Guo et al. 2017, "On Calibration of Modern Neural Networks"). For a binary model (`probs` of
shape (N,)) the bins hold P(positive) against the share of positives; for a multi-class model
(`probs` of shape (N, C)) they hold the top-label confidence against accuracy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ECE_BINS = 15
Report = dict[str, Any]  # metric name -> float | None, plus "undefined": {name: reason}


def undefined(report: Report, name: str, reason: str) -> None:
    report[name] = None
    report.setdefault("undefined", {})[name] = reason


def _scores_and_outcomes(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(score, outcome) pairs that calibration compares: P(positive) and the 0/1 label for a
    binary model; top-label confidence and whether the top label is right for a multi-class one."""
    probs = np.asarray(probs, dtype=float)
    labels = np.asarray(labels, dtype=float)
    if probs.ndim == 1:
        return probs, labels
    return probs.max(axis=1), (probs.argmax(axis=1) == labels.astype(int)).astype(float)


def reliability_table(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per non-empty bin: `lower`, `upper`, `count`, `mean_prob` (mean score in the bin) and
    `frac_positive` (share of positive outcomes). Bins are [0, 1/bins), ..., [(bins-1)/bins, 1];
    a score of exactly 1 falls in the last."""
    scores, outcomes = _scores_and_outcomes(probs, labels)
    idx = np.minimum((scores * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        sel = idx == b
        if sel.any():
            rows.append({"lower": b / bins, "upper": (b + 1) / bins, "count": int(sel.sum()),
                         "mean_prob": float(np.mean(scores[sel])),
                         "frac_positive": float(np.mean(outcomes[sel]))})
    return rows


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: sum over the bins of `reliability_table` of |share positive - mean score| x bin share."""
    rows = reliability_table(probs, labels, bins)
    n = sum(r["count"] for r in rows)
    return float(sum(r["count"] / n * abs(r["frac_positive"] - r["mean_prob"]) for r in rows)) if n else 0.0


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
            undefined(report, name, "no labelled (feasible / infeasible) graphs")
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
            undefined(report, name, reason)
    else:
        report["auroc"] = float(roc_auc_score(y, probs))
        report["auprc"] = float(average_precision_score(y, probs))
        tpr = float(np.mean(pred[y]))
        tnr = float(np.mean(~pred[~y]))
        report["balanced_accuracy"] = (tpr + tnr) / 2
    tp = int(np.sum(pred & y))
    denom = 2 * tp + int(np.sum(pred & ~y)) + int(np.sum(~pred & y))
    if denom == 0:
        undefined(report, "f1", "no infeasible graphs and none predicted infeasible")
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
