"""Baselines reported beside every model, so that a GNN has to earn its place.

Feasibility: logistic regression (scikit-learn) on four system aggregates per scenario, total load
P and Q, total in-service generation capacity, number of branches in service; fitted on the
training split, scored on the test split. docs/results.md measures it at AUROC 0.85 on boundary-sampled
case30 data.

OPF: the DC-OPF solution stored in each graph (`dc_opf`: va, pg per bus), scored like a model: it
has no voltage magnitudes (taken as 1 p.u. for the AC power balance) and no reactive power.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch_geometric.data import Data

from gridtune.core.metrics import Report, classification_metrics
from gridtune.evaluation.metrics import opf_metrics
from gridtune.grids.features import BRANCH_FEATURES, BUS_FEATURES, OPF_TARGETS

AGGREGATES = ("total_pd_pu", "total_qd_pu", "total_max_pg_pu", "branches_in_service")


def system_aggregates(graphs: Sequence[Data]) -> np.ndarray:
    """(B, 4) system aggregates, columns `AGGREGATES`."""
    pd_, qd, pmax = (BUS_FEATURES.index(n) for n in ("pd_pu", "qd_pu", "max_pg_pu"))
    on, rev = BRANCH_FEATURES.index("in_service"), BRANCH_FEATURES.index("is_reverse")
    rows = []
    for g in graphs:
        x, e = g.x.double(), g.edge_attr
        rows.append([float(x[:, pd_].sum()), float(x[:, qd].sum()), float(x[:, pmax].sum()),
                     float(((e[:, on] > 0.5) & (e[:, rev] < 0.5)).sum())])
    return np.array(rows, dtype=float).reshape(-1, len(AGGREGATES))


def _labels(graphs: Sequence[Data]) -> np.ndarray:
    return np.array([float(g.y_infeasible) for g in graphs], dtype=float)


def aggregate_logistic_baseline(train: Sequence[Data], test: Sequence[Data]) -> Report:
    """Fit the aggregate logistic regression on `train`, return its classification metrics on `test`.

    Graphs without a feasibility label are dropped from both. When the training split has a single
    class the baseline is undefined and the report says why.
    """
    from gridtune.grids.summary import totals_classifier

    y_tr, y_te = _labels(train), _labels(test)
    keep_tr, keep_te = np.isfinite(y_tr), np.isfinite(y_te)
    x_tr = system_aggregates([g for g, k in zip(train, keep_tr, strict=True) if k])
    x_te = system_aggregates([g for g, k in zip(test, keep_te, strict=True) if k])
    y_tr, y_te = y_tr[keep_tr], y_te[keep_te]
    name = {"baseline": "logistic regression on " + ", ".join(AGGREGATES)}
    if y_tr.size == 0 or y_tr.min() == y_tr.max():
        report = classification_metrics(np.full(y_te.size, np.nan), np.full(y_te.size, np.nan))
        reason = (f"the training split has {y_tr.size} labelled graphs, "
                  f"{int(y_tr.sum()) if y_tr.size else 0} infeasible: a classifier needs both classes")
        report["undefined"] = {k: reason for k in report.get("undefined", {})}
        report["n"] = int(y_te.size)
        return {**name, **report}
    clf = totals_classifier()
    clf.fit(x_tr, y_tr.astype(int))
    probs = clf.predict_proba(x_te)[:, 1] if y_te.size else np.empty(0)
    return {**name, **classification_metrics(probs, y_te), "probs": probs, "labels": y_te}


def dc_opf_predictions(graphs: Sequence[Data]) -> list[np.ndarray | None]:
    """Per graph an (N, 4) `OPF_TARGETS` array from the stored DC-OPF (vm, qg NaN), or None."""
    va, pg = OPF_TARGETS.index("va_rad"), OPF_TARGETS.index("pg_pu")
    out: list[np.ndarray | None] = []
    for g in graphs:
        dc = g.dc_opf.numpy()
        if not np.isfinite(dc).all():
            out.append(None)
            continue
        pred = np.full((dc.shape[0], len(OPF_TARGETS)), np.nan)
        pred[:, va], pred[:, pg] = dc[:, 0], dc[:, 1]
        out.append(pred)
    return out


def dc_opf_baseline(test: Sequence[Data]) -> dict[str, Any]:
    """OPF metrics of the stored DC-OPF solutions on `test` (same keys as a model's)."""
    report = opf_metrics(list(test), dc_opf_predictions(test), which="DC-OPF")
    return {"baseline": "DC-OPF solution (vm = 1 p.u., no reactive power)", **report}
