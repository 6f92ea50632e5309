"""Temperature scaling, expected calibration error and reliability diagrams.

Temperature scaling (Guo et al. 2017, "On calibration of modern neural networks"): one scalar
T > 0 divides the logits; it is fitted on validation data by minimising the negative
log-likelihood and leaves the ranking (AUROC, accuracy) unchanged. ECE uses the top-label
confidence in equal-width bins, as in Guo et al.

Binary models give logits (N,) of the positive class; multi-class models give (N, C).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

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


def _top_label(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if probs.ndim == 1:
        pred = (probs >= 0.5).astype(int)
        conf = np.where(pred == 1, probs, 1 - probs)
    else:
        pred = probs.argmax(axis=1)
        conf = probs.max(axis=1)
    return conf, (pred == labels.astype(int)).astype(float)


def reliability_diagram(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> dict[str, list]:
    """Per equal-width confidence bin: `bin_lower`, `bin_upper`, mean `confidence`, `accuracy`,
    `count` (empty bins have NaN confidence / accuracy)."""
    conf, correct = _top_label(np.asarray(probs), np.asarray(labels))
    # top-label confidence is at least 1/C; bins still span [0, 1] so diagrams compare
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    out: dict[str, list] = {"bin_lower": edges[:-1].tolist(), "bin_upper": edges[1:].tolist(),
                            "confidence": [], "accuracy": [], "count": []}
    for b in range(n_bins):
        m = idx == b
        out["count"].append(int(m.sum()))
        out["confidence"].append(float(conf[m].mean()) if m.any() else float("nan"))
        out["accuracy"].append(float(correct[m].mean()) if m.any() else float("nan"))
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """ECE = sum over bins of (bin share) * |accuracy - confidence|."""
    d = reliability_diagram(probs, labels, n_bins)
    n = sum(d["count"])
    return float(sum(c / n * abs(a - f) for c, a, f in zip(d["count"], d["accuracy"],
                                                           d["confidence"], strict=True) if c))


def calibrate(val_logits: Tensor, val_labels: Tensor, test_logits: Tensor, test_labels: Tensor,
              n_bins: int = 10) -> dict[str, Any]:
    """Fit T on validation data; ECE and reliability diagrams on test data before and after."""
    t = fit_temperature(val_logits, val_labels)
    y = test_labels.detach().numpy()
    before, after = probabilities(test_logits), probabilities(test_logits, t)
    return {"temperature": t,
            "ece_before": expected_calibration_error(before, y, n_bins),
            "ece_after": expected_calibration_error(after, y, n_bins),
            "reliability_before": reliability_diagram(before, y, n_bins),
            "reliability_after": reliability_diagram(after, y, n_bins)}


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
        d = report[key]
        xs = [c for c, n in zip(d["confidence"], d["count"], strict=True) if n]
        ys = [a for a, n in zip(d["accuracy"], d["count"], strict=True) if n]
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
