"""Decision curve analysis (Vickers & Elkin 2006, "Decision curve analysis: a novel method for
evaluating prediction models").

For an operator the "treatment" is acting on a predicted infeasibility (running the full OPF,
re-dispatching, or refusing the operating point). At a threshold probability p_t, acting when
P(infeasible) >= p_t has net benefit TP/n - FP/n * p_t / (1 - p_t): the threshold says how many
false alarms one missed infeasibility is worth. Compared with acting always (treat-all) and never
(treat-none, net benefit 0), the curve shows for which thresholds the predictor is worth trusting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gridtune.errors import GridtuneError


def net_benefit(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray | None = None
                ) -> dict[str, list[float]]:
    """Net benefit of the model, treat-all and treat-none at each threshold in (0, 1).

    Args:
        probs: (N,) predicted probability of the positive class (infeasible).
        labels: (N,) 1 positive, 0 negative.
        thresholds: default 0.01, 0.02, ..., 0.99.
    """
    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels).astype(bool)
    if p.shape != y.shape or p.ndim != 1 or len(p) == 0:
        raise GridtuneError(f"decision curve: probabilities `{p.shape}` and labels `{y.shape}` "
                            "must be equal-length, non-empty 1-D arrays")
    t = np.arange(1, 100) / 100 if thresholds is None else np.asarray(thresholds, dtype=float)
    if np.any((t <= 0) | (t >= 1)):
        raise GridtuneError(f"decision curve: thresholds must lie in (0, 1), got `{t.min()}`..`{t.max()}`")
    n = len(p)
    odds = t / (1 - t)
    act = p[None, :] >= t[:, None]  # (T, N)
    tp = (act & y[None, :]).sum(1) / n
    fp = (act & ~y[None, :]).sum(1) / n
    prev = y.mean()
    return {"threshold": t.tolist(),
            "model": (tp - fp * odds).tolist(),
            "treat_all": (prev - (1 - prev) * odds).tolist(),
            "treat_none": [0.0] * len(t)}


def useful_thresholds(curve: dict[str, list[float]], margin: float = 0.0) -> list[float]:
    """Thresholds where the model beats both treat-all and treat-none by more than `margin`."""
    return [t for t, m, a, z in zip(curve["threshold"], curve["model"], curve["treat_all"],
                                    curve["treat_none"], strict=True) if m > max(a, z) + margin]


def plot_decision_curve(curves: dict[str, dict[str, list[float]]] | dict[str, Any],
                        path: str | Path, title: str = "") -> Path:
    """Plot one or several models' curves (name -> `net_benefit` output) with treat-all/none."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "threshold" in curves:
        curves = {"model": curves}
    fig, ax = plt.subplots(figsize=(5.5, 4))
    first = next(iter(curves.values()))
    for name, c in curves.items():
        ax.plot(c["threshold"], c["model"], label=name)
    ax.plot(first["threshold"], first["treat_all"], color="grey", ls="--", label="treat all (always run OPF)")
    ax.plot(first["threshold"], first["treat_none"], color="black", lw=1, label="treat none (trust all)")
    top = max(max(c["model"]) for c in curves.values())
    ax.set_ylim(min(-0.05, -0.1 * abs(top)), max(top, max(first["treat_all"])) * 1.1 + 1e-3)
    ax.set_xlabel("threshold probability of infeasibility")
    ax.set_ylabel("net benefit")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
