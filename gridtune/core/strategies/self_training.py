"""`self-training`: a base strategy (default `full`) plus pseudo-labels on unlabelled target data.

Unlabelled target scenarios are cheap on grids (no OPF solve), so after a few supervised steps
the model's own confident predictions on them become extra training targets. The pseudo-labels
come from a teacher whose weights are an exponential moving average of the student's (Mean
Teacher, Tarvainen & Valpola 2017), which makes them steadier than the student's own; only
predictions above a confidence threshold count (Lee 2013 "Pseudo-label"; Sohn et al. 2020
"FixMatch"). The term ramps in linearly over `warmup_steps`.

Outputs are read by their shape, as `ClassificationTask` does: (B,) binary logits, (B, C) class
logits; `kind="regression"` instead pulls outputs towards the teacher's (no threshold).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gridtune.core.strategies.base import register
from gridtune.core.strategies.domain import DomainStrategy
from gridtune.errors import GridtuneError, choices_text

KINDS = ("classification", "regression")


def pseudo_label_loss(student: Tensor, teacher: Tensor, threshold: float,
                      kind: str = "classification") -> Tensor:
    """Loss of student outputs against the teacher's confident hard labels, averaged over ALL rows
    (so a batch with few confident rows contributes little).

    Shapes: student, teacher: (B,) binary logits or (B, C) logits; (R, K) for regression.
    """
    if kind == "regression":
        return F.mse_loss(student, teacher)
    if student.dim() == 1:
        p = torch.sigmoid(teacher)
        keep = torch.maximum(p, 1 - p) >= threshold
        if not keep.any():
            return student.sum() * 0.0
        target = (p > 0.5).to(student.dtype)
        return F.binary_cross_entropy_with_logits(student[keep], target[keep], reduction="sum") / len(student)
    p = torch.softmax(teacher, dim=1)
    conf, label = p.max(dim=1)
    keep = conf >= threshold
    if not keep.any():
        return student.sum() * 0.0
    return F.cross_entropy(student[keep], label[keep], reduction="sum") / len(student)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher <- decay * teacher + (1 - decay) * student (parameters); buffers are copied."""
    for pt, ps in zip(teacher.parameters(), student.parameters(), strict=True):
        pt.mul_(decay).add_(ps.detach(), alpha=1 - decay)
    for bt, bs in zip(teacher.buffers(), student.buffers(), strict=True):
        bt.copy_(bs)


@register
class SelfTraining(DomainStrategy):
    """Mean-teacher pseudo-labelling on unlabelled target batches.

    Args:
        unlabeled: iterable of unlabelled target batches (cycled).
        weight: weight of the pseudo-label term (default: ``1.0``).
        base: strategy deciding what trains (default: ``"full"``).
        threshold: teacher confidence needed for a pseudo-label (default: ``0.9``).
        ema: teacher decay per step (default: ``0.99``).
        warmup_steps: steps over which the term ramps from 0 to `weight` (default: ``100``).
        kind: ``"classification"`` or ``"regression"`` (default: ``"classification"``).
    """

    name = "self-training"
    description = "full fine-tuning + confident pseudo-labels from an EMA teacher on unlabelled target"

    def __init__(self, unlabeled: Iterable[Any] | None = None, weight: float = 1.0,
                 base: str = "full", threshold: float = 0.9, ema: float = 0.99,
                 warmup_steps: int = 100, kind: str = "classification") -> None:
        super().__init__(unlabeled, weight, base)
        if kind not in KINDS:
            raise GridtuneError(f"self-training: unknown kind `{kind}`; valid: {choices_text(KINDS)}")
        if not 0.5 <= threshold < 1:
            raise GridtuneError(f"self-training: threshold must be in [0.5, 1), got `{threshold}`")
        if not 0 <= ema < 1:
            raise GridtuneError(f"self-training: ema must be in [0, 1), got `{ema}`")
        self.threshold, self.ema, self.warmup_steps, self.kind = threshold, ema, warmup_steps, kind
        self.teacher: nn.Module | None = None
        self.confident_share: list[float] = []

    def prepare(self, model: nn.Module, sample_batch: Any = None) -> nn.Module:
        model = super().prepare(model, sample_batch)
        self.teacher = copy.deepcopy(model)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()
        return model

    def extra_loss(self, model: nn.Module, batch: Any, step: int) -> Tensor:
        ema_update(self.teacher, model, self.ema)
        u = self._target_batch()
        with torch.no_grad():
            t_out = self.teacher(u)
        s_out = model(u)
        if self.kind == "classification":
            p = torch.sigmoid(t_out) if t_out.dim() == 1 else torch.softmax(t_out, 1)
            conf = torch.maximum(p, 1 - p) if t_out.dim() == 1 else p.max(1).values
            self.confident_share.append(float((conf >= self.threshold).float().mean()))
        loss = pseudo_label_loss(s_out, t_out, self.threshold, self.kind)
        self.history.append(float(loss.detach()))
        ramp = min(1.0, step / max(self.warmup_steps, 1))
        return self.weight * ramp * loss
