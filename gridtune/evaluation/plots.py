"""Evaluation plots (matplotlib, Agg backend: no display needed).

Feasibility: ROC curve of model and baseline; reliability diagram (DeGroot and Fienberg 1983)
with bin counts. OPF: predicted against AC-OPF values per target, in physical units.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from gridtune.grids.features import OPF_TARGETS

_UNITS = {"vm_pu": ("vm", "p.u.", 1.0), "va_rad": ("va", "degree", 180.0 / math.pi),
          "pg_pu": ("pg", "p.u.", 1.0), "qg_pu": ("qg", "p.u.", 1.0)}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_plot(report: dict[str, Any], path: Path) -> Path | None:
    """ROC curves of model and baseline; None when the test split has one class."""
    roc = report["curves"]["roc"]
    if roc is None:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    auroc = report["model"].get("auroc")
    ax.plot(roc["fpr"], roc["tpr"], label=f"model (AUROC {auroc:.3f})")
    base = report["curves"].get("baseline_roc")
    if base is not None:
        ax.plot(base["fpr"], base["tpr"], ls="--", label=f"aggregate baseline (AUROC {report['baseline']['auroc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate (infeasible caught)",
           title=f"ROC, {report.get('data', '')}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def reliability_plot(report: dict[str, Any], path: Path) -> Path | None:
    """Reliability diagram: observed infeasible share against mean predicted probability per bin."""
    rows = report["curves"]["reliability"]
    if not rows:
        return None
    plt = _pyplot()
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(4.5, 5.5), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    mids = [(r["lower"] + r["upper"]) / 2 for r in rows]
    width = rows[0]["upper"] - rows[0]["lower"]
    ax.bar(mids, [r["frac_positive"] for r in rows], width=width * 0.9, alpha=0.6, label="observed")
    ax.plot([r["mean_prob"] for r in rows], [r["frac_positive"] for r in rows], "o-", ms=3, label="per bin")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ece = report["model"].get("ece")
    ax.set(ylabel="share infeasible", title=f"reliability (ECE {ece:.3f})" if ece is not None else "reliability")
    ax.legend(fontsize=8)
    ax2.bar(mids, [r["count"] for r in rows], width=width * 0.9)
    ax2.set(xlabel="predicted P(infeasible)", ylabel="graphs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def opf_scatter_plot(report: dict[str, Any], path: Path) -> Path | None:
    """Predicted against AC-OPF value for each target (buses of all test graphs)."""
    scatter = report.get("scatter")
    if not scatter or not scatter["true"]:
        return None
    true, pred = np.asarray(scatter["true"]), np.asarray(scatter["pred"])
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(OPF_TARGETS), figsize=(3.2 * len(OPF_TARGETS), 3.2))
    for k, (ax, name) in enumerate(zip(axes, OPF_TARGETS, strict=True)):
        label, unit, scale = _UNITS[name]
        t, p = true[:, k] * scale, pred[:, k] * scale
        ax.scatter(t, p, s=3, alpha=0.4)
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        ax.set(xlabel=f"AC-OPF {label} ({unit})", ylabel=f"predicted {label} ({unit})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Every plot that applies to the report's task; returns the files written."""
    out_dir = Path(out_dir)
    made: list[Path | None] = []
    if report["task"] == "feasibility" and "curves" in report:
        made += [roc_plot(report, out_dir / "roc.png"), reliability_plot(report, out_dir / "reliability.png")]
    elif report["task"] == "opf":
        made.append(opf_scatter_plot(report, out_dir / "opf_scatter.png"))
    return [p for p in made if p is not None]
