"""`head-swap`: a new head for a new output space on the pre-trained encoder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from gridtune.core.strategies.base import Strategy, freeze, register, unfreeze
from gridtune.errors import GridtuneError


@register
class HeadSwap(Strategy):
    """Replace `model.head` by `head` (a module, or a factory called with `model.embed_dim`), e.g.
    a 10-class head on an encoder pre-trained for 2 classes, or a cost regressor on a
    feasibility encoder.

    Args:
        head: the new head or a factory `embed_dim -> head`.
        freeze_encoder: train only the new head (default: ``False``: train everything).
    """

    name = "head-swap"
    description = "replace the head by a new one (new output space); optionally freeze the encoder"

    def __init__(self, head: nn.Module | Callable[[int], nn.Module] | None = None,
                 freeze_encoder: bool = False) -> None:
        super().__init__()
        if head is None:
            raise GridtuneError("head-swap needs `head`: the new head module or a factory "
                                "`embed_dim -> module`")
        self.head = head
        self.freeze_encoder = freeze_encoder

    def prepare(self, model: nn.Module, sample_batch: Any = None) -> nn.Module:
        new = self.head if isinstance(self.head, nn.Module) else self.head(model.embed_dim)
        model.head = new
        if self.freeze_encoder:
            freeze(model)
            self.frozen.append(model.encoder)
        unfreeze(model.head)
        return model
