"""A generic classification task for `(x, y)` batches (images, text, tabular).

Grid tasks live in `gridtune.nn.tasks`; this one lets the same strategies and `fit` run on any
model whose loader yields `(inputs, labels)` pairs. Binary tasks (output shape (B,)) use logits of
the positive class; multi-class tasks (output (B, C)) use class logits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gridtune.errors import GridtuneError, choices_text


def binary_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties); NaN for one class."""
    labels = labels.astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class ClassificationTask:
    """Cross-entropy classification on `(x, y)` batches.

    Args:
        name: shown in logs and errors (default: ``"classification"``).
        score: validation score, ``"accuracy"`` or ``"auroc"`` (binary only) or ``"neg_loss"``.

    Shapes:
        output: (B,) logits for binary, (B, C) logits for C classes; batch[1]: (B,) labels.
    """

    SCORES = ("accuracy", "auroc", "neg_loss")

    def __init__(self, name: str = "classification", score: str = "accuracy") -> None:
        if score not in self.SCORES:
            raise GridtuneError(f"unknown score `{score}`; valid: {choices_text(self.SCORES)}")
        self.name = name
        self.score = score

    def target(self, batch: Any) -> Tensor:
        return batch[1]

    def loss(self, output: Tensor, batch: Any) -> Tensor:
        return self._loss(output, self.target(batch))

    @staticmethod
    def _loss(output: Tensor, y: Tensor) -> Tensor:
        if output.dim() == 1:
            return F.binary_cross_entropy_with_logits(output, y.float())
        return F.cross_entropy(output, y.long())

    def metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        out: dict[str, float] = {"loss": float(self._loss(outputs, targets))}
        if outputs.dim() == 1:
            pred = (outputs > 0).long()
            out["auroc"] = binary_auroc(outputs.numpy(), targets.numpy())
        else:
            pred = outputs.argmax(dim=1)
        out["accuracy"] = float((pred == targets.long()).float().mean())
        return out

    def val_score(self, metrics: dict[str, float]) -> float:
        if self.score == "neg_loss":
            return -metrics["loss"]
        return metrics[self.score]


def probabilities(outputs: Tensor) -> Tensor:
    """Logits -> probabilities: sigmoid for (B,), softmax for (B, C)."""
    return torch.sigmoid(outputs) if outputs.dim() == 1 else torch.softmax(outputs, dim=1)
