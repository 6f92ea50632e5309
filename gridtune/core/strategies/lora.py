"""`lora`: low-rank updates on the encoder's linear layers; base weights frozen."""

from __future__ import annotations

from typing import Any

from torch import nn

from gridtune.core.lora import apply_lora, merge_lora
from gridtune.core.strategies.base import Strategy, check_sample, freeze, register, unfreeze


@register
class LoRA(Strategy):
    """LoRA (Hu et al. 2021) on every linear layer of the encoder; the head trains fully. After
    training the updates are merged into the base weights (`finalize`).

    Args:
        rank: rank of the update (default: ``4``).
        alpha: scaling numerator, `scaling = alpha / rank` (default: ``8.0``).
        merge: fold the updates into the weights after training (default: ``True``).
    """

    name = "lora"
    description = "freeze encoder weights, train low-rank updates of its linear layers and the head"

    def __init__(self, rank: int = 4, alpha: float = 8.0, merge: bool = True) -> None:
        super().__init__()
        self.rank, self.alpha, self.merge = rank, alpha, merge
        self.wrapped: list[str] = []

    def prepare(self, model: nn.Module, sample_batch: Any = None) -> nn.Module:
        # lazy layers (PyG Linear with in_channels=-1) get their shapes from one forward pass
        if sample_batch is not None:
            from gridtune.core.strategies.base import block_output_shapes
            block_output_shapes(model, check_sample(sample_batch, self.name))
        freeze(model)
        self.wrapped = apply_lora(model.encoder, self.rank, self.alpha)
        unfreeze(model.head)
        return model

    def finalize(self, model: nn.Module) -> nn.Module:
        if self.merge:
            merge_lora(model)
        return model
