"""`adapter`: frozen encoder, a bottleneck adapter after every block, trainable head."""

from __future__ import annotations

from typing import Any

from torch import nn

from gridtune.core.adapters import AdaptedBlock, BottleneckAdapter
from gridtune.core.protocol import encoder_blocks
from gridtune.core.strategies.base import (
    Strategy,
    block_output_shapes,
    check_sample,
    freeze,
    register,
    unfreeze,
)
from gridtune.errors import GridtuneError


@register
class Adapter(Strategy):
    """Houlsby adapters (Houlsby et al. 2019) after each encoder block; only adapters and the head
    train. Feature sizes are read from one sample batch.

    Args:
        bottleneck: adapter hidden size (default: ``16``).
        feature_dim: axis holding features in block outputs (default: ``-1``; ``1`` for
            channel-first images).
        dims: feature size after each block; when given no sample batch is needed (rebuilding
            a saved adapted model). After `prepare` it holds the sizes used.
    """

    name = "adapter"
    description = "freeze the encoder, insert small bottleneck modules after each block, train those"

    def __init__(self, bottleneck: int = 16, feature_dim: int = -1,
                 dims: list[int] | None = None) -> None:
        super().__init__()
        if not isinstance(bottleneck, int) or bottleneck < 1:
            raise GridtuneError(f"adapter: bottleneck must be a positive integer, got `{bottleneck}`")
        self.bottleneck = bottleneck
        self.feature_dim = feature_dim
        self.dims = list(dims) if dims is not None else None

    def prepare(self, model: nn.Module, sample_batch: Any = None) -> nn.Module:
        blocks = encoder_blocks(model)
        if self.dims is None:
            shapes = block_output_shapes(model, check_sample(sample_batch, self.name))
            self.dims = [int(s[self.feature_dim]) for s in shapes]
        if len(self.dims) != len(blocks):
            raise GridtuneError(f"adapter: `{len(self.dims)}` feature sizes for {len(blocks)} blocks")
        freeze(model)
        self.frozen.append(model.encoder)
        for i, dim in enumerate(self.dims):
            adapter = BottleneckAdapter(dim, self.bottleneck, self.feature_dim)
            blocks[i] = AdaptedBlock(blocks[i], adapter)
        unfreeze(model.head)
        return model

    def rebuild(self, model: nn.Module) -> nn.Module:
        if self.dims is None:
            raise GridtuneError("adapter: rebuilding a saved adapted model needs `dims` in its config")
        return self.prepare(model)

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        super().on_epoch_start(epoch, model)
        for b in model.encoder.blocks:
            if isinstance(b, AdaptedBlock):
                b.adapter.train()
