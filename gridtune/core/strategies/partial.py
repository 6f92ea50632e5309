"""`partial`: only the last k encoder blocks and the head train."""

from __future__ import annotations

from typing import Any

from torch import nn

from gridtune.core.protocol import encoder_blocks
from gridtune.core.strategies.base import Strategy, freeze, register, unfreeze
from gridtune.errors import GridtuneError


@register
class Partial(Strategy):
    """Freeze the encoder except its last `k` blocks (Yosinski et al. 2014: later layers are the
    most task-specific). Encoder parameters outside the blocks (input embeddings) stay frozen.

    Args:
        k: number of top blocks to train (default: ``1``).
    """

    name = "partial"
    description = "train only the last k encoder blocks (default 1) and the head"

    def __init__(self, k: int = 1) -> None:
        super().__init__()
        if not isinstance(k, int) or k < 0:
            raise GridtuneError(f"partial: k must be a non-negative integer, got `{k}`")
        self.k = k

    def prepare(self, model: nn.Module, sample_batch: Any = None) -> nn.Module:
        blocks = encoder_blocks(model)
        if self.k > len(blocks):
            raise GridtuneError(f"partial: k=`{self.k}` but the encoder has {len(blocks)} blocks; "
                                f"valid: 0 to {len(blocks)}")
        freeze(model)
        unfreeze(model.head)
        n_frozen = len(blocks) - self.k
        for i, b in enumerate(blocks):
            if i >= n_frozen:
                unfreeze(b)
            else:
                self.frozen.append(b)
        return model
