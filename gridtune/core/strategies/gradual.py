"""`gradual`: unfreeze the encoder one block at a time, from the top."""

from __future__ import annotations

from typing import Any

from torch import nn

from gridtune.core.protocol import encoder_blocks
from gridtune.core.strategies.base import (
    Strategy,
    freeze,
    non_block_parameters,
    register,
    unfreeze,
)
from gridtune.core.trainer import TrainConfig
from gridtune.errors import GridtuneError


@register
class Gradual(Strategy):
    """Gradual unfreezing (Howard & Ruder 2018, ULMFiT): the head trains alone first; every
    `every` epochs the next block down is unfrozen; after the lowest block, the rest of the
    encoder (input embeddings) unfreezes.

    Args:
        every: epochs between two unfreezing steps (default: ``2``).
    """

    name = "gradual"
    description = "start with the head, unfreeze one encoder block from the top every few epochs"

    def __init__(self, every: int = 2) -> None:
        super().__init__()
        if not isinstance(every, int) or every < 1:
            raise GridtuneError(f"gradual: every must be a positive integer, got `{every}`")
        self.every = every
        self._stages: list[list[nn.Parameter]] = []
        self._stage_modules: list[nn.Module | None] = []

    def prepare(self, model: nn.Module, sample_batch: Any = None) -> nn.Module:
        blocks = encoder_blocks(model)
        freeze(model)
        unfreeze(model.head)
        self._stage_modules = list(reversed(list(blocks))) + [None]
        self._stages = [list(b.parameters()) for b in reversed(list(blocks))]
        self._stages.append(non_block_parameters(model))
        return model

    def param_groups(self, model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
        # Every parameter is in the optimizer from the start: AdamW leaves a parameter without a
        # gradient untouched, so frozen stages do not move until unfrozen.
        return [{"params": list(model.parameters())}]

    def unfrozen_stages(self, epoch: int) -> int:
        return min(epoch // self.every, len(self._stages))

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        n = self.unfrozen_stages(epoch)
        for i, params in enumerate(self._stages):
            for p in params:
                p.requires_grad_(i < n)
        for i, m in enumerate(self._stage_modules):
            if m is not None and i >= n:
                m.eval()
