"""`scratch`: the same architecture with fresh weights; the baseline every transfer is judged by."""

from __future__ import annotations

from typing import Any

from torch import nn

from gridtune.core.strategies.base import Strategy, register, reset_parameters, unfreeze


@register
class Scratch(Strategy):
    name = "scratch"
    description = "re-initialise every weight and train on the target labels only (the baseline)"

    def prepare(self, model: nn.Module, sample_batch: Any = None) -> nn.Module:
        reset_parameters(model)
        unfreeze(model)
        return model
