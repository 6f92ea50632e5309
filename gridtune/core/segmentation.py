"""Segmentation in the core: soft Dice loss, Dice + cross-entropy, Dice and IoU metrics.

For small, rare structures (lesions a few percent of the pixels) per-pixel cross-entropy is
dominated by the background and can settle on predicting none; the soft Dice loss (Milletari et
al. 2016, "V-Net") scores the overlap of prediction and mask directly, whatever their size. The
smoothing term `smooth` keeps it defined (and its gradient finite) on masks and predictions that
are empty. Dice + cross-entropy (as in nnU-Net, Isensee et al. 2021) combines the two.

Outputs are logits: binary masks use (B, 1, H, W) or (B, H, W) (sigmoid of the foreground),
C classes use (B, C, H, W) (softmax; class 0 is the background). Targets are (B, H, W) integer
masks. Any number of spatial axes works (volumes: (B, C, D, H, W)).

The soft Dice here is computed over the whole batch ("batch Dice"): each image with no lesion
would otherwise score 0 or 1 on its own and swamp the few images that have one. The metrics
follow the same rule by default (pooled over the evaluated set) and can be averaged per image.
`SegmentationTask` makes them a core `Task` for `fit` and the strategies (`decoder`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from gridtune.errors import GridtuneError, choices_text

LOSSES = ("dice", "ce", "dice+ce")


def _as_probs_and_onehot(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Foreground probabilities and one-hot targets, both (B, K, *spatial) with K foreground
    classes (1 for binary)."""
    target = target.long()
    if logits.dim() == target.dim():  # (B, *spatial) binary
        logits = logits.unsqueeze(1)
    if logits.dim() != target.dim() + 1 or logits.shape[2:] != target.shape[1:] or \
            logits.shape[0] != target.shape[0]:
        raise GridtuneError(f"segmentation: logits `{tuple(logits.shape)}` do not match masks "
                            f"`{tuple(target.shape)}`; expected (B, C, *spatial) and (B, *spatial)")
    if logits.shape[1] == 1:
        return torch.sigmoid(logits), (target == 1).unsqueeze(1).to(logits.dtype)
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    return probs[:, 1:], onehot[:, 1:]


def soft_dice_loss(logits: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """1 - soft Dice of the foreground class(es), pooled over the batch, averaged over classes:
    1 - (2 sum(p g) + smooth) / (sum p + sum g + smooth)."""
    if smooth < 0:
        raise GridtuneError(f"dice: smooth must be >= 0, got `{smooth}`")
    p, g = _as_probs_and_onehot(logits, target)
    axes = [0, *range(2, p.dim())]
    inter = (p * g).sum(axes)
    denom = p.sum(axes) + g.sum(axes)
    return 1 - ((2 * inter + smooth) / (denom + smooth).clamp_min(1e-12)).mean()


def cross_entropy(logits: Tensor, target: Tensor, pos_weight: float | None = None) -> Tensor:
    """Per-pixel cross-entropy: binary (sigmoid) for one output channel, else softmax."""
    if logits.dim() == target.dim() + 1 and logits.shape[1] == 1:
        logits = logits.squeeze(1)
    if logits.dim() == target.dim():
        w = None if pos_weight is None else torch.tensor(pos_weight, dtype=logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), pos_weight=w)
    return F.cross_entropy(logits, target.long())


def dice_ce_loss(logits: Tensor, target: Tensor, smooth: float = 1.0, dice_weight: float = 1.0,
                 ce_weight: float = 1.0) -> Tensor:
    """`dice_weight` x soft Dice loss + `ce_weight` x cross-entropy."""
    return dice_weight * soft_dice_loss(logits, target, smooth) + ce_weight * cross_entropy(logits, target)


def hard_masks(logits: Tensor) -> Tensor:
    """Predicted integer masks (B, *spatial) from logits with a channel axis (B, C, *spatial):
    foreground where the logit is > 0 for C = 1, the argmax class otherwise."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def _overlap(pred: Tensor, target: Tensor, cls: int, per_image: bool) -> tuple[Tensor, Tensor, Tensor]:
    p, g = (pred == cls), (target.long() == cls)
    axes = list(range(1, p.dim())) if per_image else list(range(p.dim()))
    return (p & g).sum(axes).double(), p.sum(axes).double(), g.sum(axes).double()


def dice_score(pred: Tensor, target: Tensor, *, classes: int = 2, per_image: bool = False) -> float:
    """Dice 2|P n G| / (|P| + |G|) of hard masks, averaged over foreground classes 1..classes-1.

    Pooled over all images (default), or the mean over images whose mask or prediction holds the
    class (`per_image=True`; images where both are empty are skipped). 1.0 when nothing anywhere
    holds the class (a perfect empty prediction).
    """
    scores = []
    for c in range(1, classes):
        inter, p, g = _overlap(pred, target, c, per_image)
        denom = p + g
        if per_image:
            keep = denom > 0
            scores.append(float((2 * inter[keep] / denom[keep]).mean()) if keep.any() else 1.0)
        else:
            scores.append(float(2 * inter / denom) if denom > 0 else 1.0)
    return float(sum(scores) / len(scores))


def iou_score(pred: Tensor, target: Tensor, *, classes: int = 2, per_image: bool = False) -> float:
    """Intersection over union |P n G| / |P u G| of hard masks; conventions as `dice_score`."""
    scores = []
    for c in range(1, classes):
        inter, p, g = _overlap(pred, target, c, per_image)
        union = p + g - inter
        if per_image:
            keep = union > 0
            scores.append(float((inter[keep] / union[keep]).mean()) if keep.any() else 1.0)
        else:
            scores.append(float(inter / union) if union > 0 else 1.0)
    return float(sum(scores) / len(scores))


class SegmentationTask:
    """Dense segmentation on `(image, mask)` batches.

    Args:
        loss: ``"dice"`` (soft Dice), ``"ce"`` (cross-entropy) or ``"dice+ce"`` (default).
        smooth: Dice smoothing term (default: ``1.0``).
        name: shown in logs and errors (default: ``"segmentation"``).

    Metrics: `loss`, `dice` and `iou` pooled over the split, `dice_per_image` (mean over images
    with the structure in mask or prediction); the validation score is `dice`.
    """

    def __init__(self, loss: str = "dice+ce", smooth: float = 1.0, name: str = "segmentation") -> None:
        if loss not in LOSSES:
            raise GridtuneError(f"unknown segmentation loss `{loss}`; valid: {choices_text(LOSSES)}")
        self.loss_name = loss
        self.smooth = smooth
        self.name = name

    def target(self, batch: Any) -> Tensor:
        return batch[1]

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.loss_name == "dice":
            return soft_dice_loss(logits, target, self.smooth)
        if self.loss_name == "ce":
            return cross_entropy(logits, target)
        return dice_ce_loss(logits, target, self.smooth)

    def loss(self, output: Tensor, batch: Any) -> Tensor:
        return self._loss(output, self.target(batch))

    def metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        classes = 2 if outputs.dim() == targets.dim() or outputs.shape[1] == 1 else outputs.shape[1]
        pred = hard_masks(outputs if outputs.dim() > targets.dim() else outputs.unsqueeze(1))
        return {"loss": float(self._loss(outputs, targets)),
                "dice": dice_score(pred, targets, classes=classes),
                "iou": iou_score(pred, targets, classes=classes),
                "dice_per_image": dice_score(pred, targets, classes=classes, per_image=True)}

    def val_score(self, metrics: dict[str, float]) -> float:
        return metrics["dice"]
