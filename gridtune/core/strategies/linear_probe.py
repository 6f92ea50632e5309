"""`linear-probe`: feature reuse; the pre-trained encoder is frozen, a new head is trained."""

from __future__ import annotations

from typing import Any

from torch import nn

from gridtune.core.strategies.base import (
    Strategy,
    freeze_all_but_head,
    register,
    reset_parameters,
)


@register
class LinearProbe(Strategy):
    """Frozen encoder, new head (Kornblith et al. 2019, "Do better ImageNet models transfer
    better?"). The head keeps its architecture but gets fresh weights unless `reset_head=False`.

    Args:
        reset_head: re-initialise the head (default: ``True``).
    """

    name = "linear-probe"
    description = "freeze the encoder, train a freshly initialised head on its features"

    def __init__(self, reset_head: bool = True) -> None:
        super().__init__()
        self.reset_head = reset_head

    def prepare(self, model: nn.Module, sample_batch: Any = None) -> nn.Module:
        if self.reset_head:
            reset_parameters(model.head)
        freeze_all_but_head(model, self)
        return model
