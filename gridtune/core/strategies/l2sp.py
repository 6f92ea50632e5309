"""`l2sp`: full fine-tuning regularised towards the pre-trained weights."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gridtune.core.strategies.base import Strategy, register, unfreeze
from gridtune.errors import GridtuneError


@register
class L2SP(Strategy):
    """L2-SP (Li, Grandvalet & Davoine 2018, "Explicit inductive bias for transfer learning with
    convolutional networks"): loss + alpha/2 * ||w - w0||^2 over the encoder (w0: pre-trained)
    + beta/2 * ||w||^2 over the head.

    Args:
        alpha: weight of the pull towards the pre-trained encoder (default: ``0.01``).
        beta: weight decay of the head (default: ``0.0001``).
    """

    name = "l2sp"
    description = "train everything with an L2 penalty pulling encoder weights to pre-trained ones"

    def __init__(self, alpha: float = 0.01, beta: float = 1e-4) -> None:
        super().__init__()
        if alpha < 0 or beta < 0:
            raise GridtuneError(f"l2sp: alpha and beta must be >= 0, got `{alpha}`, `{beta}`")
        self.alpha = alpha
        self.beta = beta
        self._anchor: list[tuple[nn.Parameter, Tensor]] = []

    def prepare(self, model: nn.Module, sample_batch: Any = None) -> nn.Module:
        unfreeze(model)
        self._anchor = [(p, p.detach().clone()) for p in model.encoder.parameters()]
        return model

    def extra_loss(self, model: nn.Module, batch: Any, step: int) -> Tensor:
        enc = sum(((p - p0) ** 2).sum() for p, p0 in self._anchor)
        head = sum((p ** 2).sum() for p in model.head.parameters())
        return 0.5 * self.alpha * torch.as_tensor(enc) + 0.5 * self.beta * torch.as_tensor(head)
