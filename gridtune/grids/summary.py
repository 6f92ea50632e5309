"""Dataset figures: counts per status, load-scale range, solve times, and how hard the data are.

Hardness is measured by the baseline every model must beat: a logistic regression on system
totals (total load P and Q, in-service generation capacity, branches in service). On a dataset
where that baseline reaches AUROC ~1, total load alone decides feasibility and the data say
nothing about topology or transfer (docs/design.md). Shipped recipes aim at <= 0.90.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from gridtune.grids.labels import STATUSES
from gridtune.grids.model import GridModel

BASELINE_FOLDS = 5
# what `summarize` reads of each scenario: these columns and its system totals
SUMMARY_COLUMNS = ("scenario_id", "status", "certificate", "load_scale", "solve_time_s")
TOTALS = ("total_pd_mw", "total_qd_mvar", "in_service_max_pg_mw", "branches_in_service")


def system_totals(df: pd.DataFrame, grid: GridModel) -> np.ndarray:
    """(n, 4): total P (MW), total Q (Mvar), in-service Pmax (MW), branches in service."""
    pmax = grid.max_p_mw * grid.gen_in_service
    out = np.zeros((len(df), 4))
    for i, row in enumerate(df.itertuples(index=False)):
        out[i, 0] = float(np.sum(row.pd_mw))
        out[i, 1] = float(np.sum(row.qd_mvar))
        out[i, 2] = float(pmax.sum() - pmax[list(row.gen_outages)].sum())
        out[i, 3] = float(grid.branch_in_service.sum() - len(row.outages))
    return out


def summary_rows(df: pd.DataFrame, grid: GridModel) -> pd.DataFrame:
    """The part of scenario rows `summarize` reads: `SUMMARY_COLUMNS` plus the `TOTALS` in place
    of the per-bus arrays (a few numbers a scenario: a build keeps these while it joins)."""
    out = df[list(SUMMARY_COLUMNS)].reset_index(drop=True)
    out[list(TOTALS)] = system_totals(df, grid) if len(df) else np.zeros((0, len(TOTALS)))
    return out


def totals_classifier() -> Any:
    """The baseline classifier on system totals: standardised logistic regression (scikit-learn).

    One definition for the dataset summary here and for `gridtune.evaluation.baselines`.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def baseline_auroc(df: pd.DataFrame, grid: GridModel, seed: int = 0) -> dict[str, Any]:
    """Cross-validated AUROC of logistic regression on system totals (infeasible = positive)."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    known = df[df["status"].isin(["feasible", "infeasible"])]
    y = (known["status"] == "infeasible").to_numpy().astype(int)
    counts = np.bincount(y, minlength=2)
    if counts.min() < BASELINE_FOLDS:
        return {"auroc": None, "reason": f"needs at least {BASELINE_FOLDS} scenarios of each "
                f"class, has {int(counts[0])} feasible and {int(counts[1])} infeasible"}
    X = known[list(TOTALS)].to_numpy() if set(TOTALS) <= set(known.columns) else \
        system_totals(known, grid)
    model = totals_classifier()
    folds = StratifiedKFold(n_splits=BASELINE_FOLDS, shuffle=True, random_state=seed)
    prob = cross_val_predict(model, X, y, cv=folds, method="predict_proba")[:, 1]
    return {"auroc": float(roc_auc_score(y, prob)), "model": "logistic regression on system totals",
            "features": ["total_pd_mw", "total_qd_mvar", "in_service_max_pg_mw",
                         "branches_in_service"], "folds": BASELINE_FOLDS}


def summarize(df: pd.DataFrame, grid: GridModel | None = None) -> dict[str, Any]:
    """Counts, shares, load-scale range, solve times and (with `grid`) the baseline AUROC of
    scenario rows, or of their `summary_rows`."""
    n = len(df)
    counts = {s: int((df["status"] == s).sum()) if n else 0 for s in STATUSES}
    times = df["solve_time_s"].to_numpy(dtype=float) if n else np.zeros(0)
    out: dict[str, Any] = {
        "samples": n,
        "counts": counts,
        "unknown_share": counts["unknown"] / n if n else None,
        "feasible_share": counts["feasible"] / n if n else None,
        "certificates": df["certificate"].value_counts().to_dict() if n else {},
        "load_scale_range": [float(df["load_scale"].min()), float(df["load_scale"].max())] if n else None,
        "solve_time_s": {
            "total": float(times.sum()), "mean": float(times.mean()) if n else None,
            "median": float(np.median(times)) if n else None,
            "p95": float(np.percentile(times, 95)) if n else None,
        },
    }
    if grid is not None and n:
        out["baseline"] = baseline_auroc(df, grid)
    return out
