"""`decoder`: dense outputs (per node, per pixel, per token) from a pre-trained encoder.

A model pre-trained for a pooled output (graph feasibility, image class) has per-element features
at its last encoder block. `DecoderModel` exposes those as `embed` and puts a decoder on them, so
a node-level OPF predictor or a segmentation map reuses the encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

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


class DecoderModel(nn.Module):
    """A `TransferModel` whose `embed` is the base model's last-block output and whose head is a
    decoder.

    Shapes:
        embed(batch): the last encoder block's output, e.g. (N, D) nodes, (B, C, H, W) images.
    """

    def __init__(self, base: nn.Module, decoder: nn.Module, embed_dim: int) -> None:
        super().__init__()
        self.base = base
        self.encoder = base.encoder
        self.head = decoder
        self.embed_dim = embed_dim

    def embed(self, batch: Any) -> Tensor:
        captured: list[Tensor] = []
        hook = encoder_blocks(self.base)[-1].register_forward_hook(
            lambda m, i, o: captured.append(o))
        try:
            self.base.embed(batch)  # runs the encoder; the pooled result is not needed
        finally:
            hook.remove()
        return captured[-1]

    def forward(self, batch: Any) -> Tensor:
        return self.head(self.embed(batch))


@register
class DecoderAttach(Strategy):
    """Attach `decoder` (a module or a factory called with the last block's feature size) to the
    per-element features of the pre-trained encoder; the base model's head is dropped from
    training.

    Args:
        decoder: the decoder or a factory `feature_size -> module`.
        feature_dim: axis holding features in the last block's output (default: ``-1``).
        freeze_encoder: train only the decoder (default: ``False``).
    """

    name = "decoder"
    description = "attach a dense decoder (node / pixel / token outputs) to the encoder's last block"

    def __init__(self, decoder: nn.Module | Callable[[int], nn.Module] | None = None,
                 feature_dim: int = -1, freeze_encoder: bool = False) -> None:
        super().__init__()
        if decoder is None:
            raise GridtuneError("decoder needs `decoder`: a module or a factory "
                                "`feature_size -> module`")
        self.decoder = decoder
        self.feature_dim = feature_dim
        self.freeze_encoder = freeze_encoder

    def prepare(self, model: nn.Module, sample_batch: Any = None) -> nn.Module:
        shape = block_output_shapes(model, check_sample(sample_batch, self.name))[-1]
        dim = int(shape[self.feature_dim])
        dec = self.decoder if isinstance(self.decoder, nn.Module) else self.decoder(dim)
        freeze(model.head)  # the old head is not used by the decoder model
        wrapped = DecoderModel(model, dec, dim)
        if self.freeze_encoder:
            freeze(model.encoder)
            self.frozen.append(model.encoder)
        unfreeze(wrapped.head)
        return wrapped
