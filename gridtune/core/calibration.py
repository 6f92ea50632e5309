"""Temperature scaling, expected calibration error and reliability diagrams.

Temperature scaling (Guo et al. 2017, "On calibration of modern neural networks"): one scalar
T > 0 divides the logits; it is fitted on validation data by minimising the negative
log-likelihood and leaves the ranking (AUROC, accuracy) unchanged. Platt scaling (Platt 1999)
fits a scale and a bias instead (`fit_platt`). ECE and reliability tables come from
`gridtune.core.metrics`.

Binary models give logits (N,) of the positive class; multi-class models give (N, C).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gridtune.core.metrics import ECE_BINS, expected_calibration_error, reliability_table
from gridtune.errors import GridtuneError

T_MIN, T_MAX = 0.05, 20.0


def _nll(logits: Tensor, labels: Tensor) -> Tensor:
    if logits.dim() == 1:
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits, labels.long())


def fit_temperature(logits: Tensor, labels: Tensor, *, max_iter: int = 200) -> float:
    """The temperature minimising validation NLL of `logits / T` (optimised over log T), clipped
    to [`T_MIN`, `T_MAX`]."""
    logits, labels = logits.detach().double(), labels.detach()
    if logits.shape[0] != labels.shape[0] or logits.shape[0] == 0:
        raise GridtuneError(f"temperature scaling: `{logits.shape[0]}` logits but "
                            f"`{labels.shape[0]}` labels; need the same non-zero number")
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = _nll(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    if not np.isfinite(t):
        raise GridtuneError(f"temperature scaling diverged (T = `{t}`); are the labels constant?")
    # a separable validation split pushes T towards 0 (or infinity): keep it in a sane range
    return float(np.clip(t, T_MIN, T_MAX))


def probabilities(logits: Tensor, temperature: float = 1.0) -> np.ndarray:
    """Calibrated probabilities: (N,) of the positive class, or (N, C)."""
    z = logits.detach().double() / temperature
    return (torch.sigmoid(z) if z.dim() == 1 else torch.softmax(z, dim=1)).numpy()


def calibrate(val_logits: Tensor, val_labels: Tensor, test_logits: Tensor, test_labels: Tensor,
              bins: int = ECE_BINS) -> dict[str, Any]:
    """Fit T on validation data; ECE and reliability tables (`gridtune.core.metrics`) on test
    data before and after."""
    t = fit_temperature(val_logits, val_labels)
    y = test_labels.detach().numpy()
    before, after = probabilities(test_logits), probabilities(test_logits, t)
    return {"temperature": t,
            "ece_before": expected_calibration_error(before, y, bins),
            "ece_after": expected_calibration_error(after, y, bins),
            "reliability_before": reliability_table(before, y, bins),
            "reliability_after": reliability_table(after, y, bins)}


def plot_reliability(report: dict[str, Any], path: str | Path) -> Path:
    """Reliability diagram before / after temperature scaling, written to `path` (PNG, SVG...)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect calibration")
    for key, label in (("reliability_before", f"before (ECE {report['ece_before']:.3f})"),
                       ("reliability_after", f"T = {report['temperature']:.2f} "
                                             f"(ECE {report['ece_after']:.3f})")):
        rows = report[key]
        ax.plot([r["mean_prob"] for r in rows], [r["frac_positive"] for r in rows], marker="o",
                label=label)
    ax.set_xlabel("predicted probability (top-label confidence for several classes)")
    ax.set_ylabel("observed share (accuracy for several classes)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def fit_platt(logits: Tensor, labels: Tensor) -> tuple[float, float] | None:
    """Platt scaling (Platt 1999) of binary logits: `(scale, bias)` minimising the log-loss of
    `sigmoid(scale * z + bias)`, or None when `labels` hold one class or the fit would flip the
    ranking (a negative scale) or is not finite.

    Platt's smoothed targets keep the fit finite when the labels are separable.
    """
    if len(labels) < 2 or labels.min() == labels.max():
        return None
    a = torch.ones(1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    z, t = logits.detach().double(), labels.detach().double()
    n_pos = float(t.sum())
    n_neg = float(t.numel()) - n_pos
    t = torch.where(t > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    opt = torch.optim.LBFGS([a, b], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        with torch.enable_grad():
            loss = F.binary_cross_entropy_with_logits(a * z + b, t)
            loss.backward()
        return loss

    opt.step(closure)
    scale, bias = float(a.detach()), float(b.detach())
    if not (np.isfinite(scale) and np.isfinite(bias)) or scale <= 0:
        return None
    return scale, bias
