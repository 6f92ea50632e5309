"""`discriminative`: layer-wise learning rates that shrink towards the input."""

from __future__ import annotations

from typing import Any

from torch import nn

from gridtune.core.protocol import encoder_blocks
from gridtune.core.strategies.base import (
    Strategy,
    non_block_parameters,
    outside_encoder_head,
    register,
    unfreeze,
)
from gridtune.core.trainer import TrainConfig
from gridtune.errors import GridtuneError


@register
class Discriminative(Strategy):
    """Discriminative fine-tuning (Howard & Ruder 2018, ULMFiT): the head trains at `lr`, block
    i of L at `lr * decay**(L - i)`, parameters below the blocks at `lr * decay**(L + 1)`.

    Args:
        decay: learning-rate factor per block going down (default: ``0.5``), in (0, 1].
    """

    name = "discriminative"
    description = "train everything, with learning rates shrinking by a factor per block downwards"

    def __init__(self, decay: float = 0.5) -> None:
        super().__init__()
        if not 0 < decay <= 1:
            raise GridtuneError(f"discriminative: decay must be in (0, 1], got `{decay}`")
        self.decay = decay

    def prepare(self, model: nn.Module, sample_batch: Any = None) -> nn.Module:
        unfreeze(model)
        return model

    def param_groups(self, model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
        blocks = encoder_blocks(model)
        n = len(blocks)
        groups: list[dict[str, Any]] = [{"params": list(model.head.parameters()), "lr": config.lr}]
        for i, b in enumerate(blocks):
            groups.append({"params": list(b.parameters()), "lr": config.lr * self.decay ** (n - i)})
        low = non_block_parameters(model) + outside_encoder_head(model)
        groups.append({"params": low, "lr": config.lr * self.decay ** (n + 1)})
        return [g for g in groups if g["params"]]
