"""The contract between models and the modality-agnostic fine-tuning core.

Any PyTorch model the strategies in `gridtune.core` adapt (a grid GNN, a CNN, a transformer)
is an `nn.Module` with:

    encoder: nn.Module           with `blocks: nn.ModuleList`, applied in order (input -> output);
                                 strategies freeze / unfreeze / wrap these blocks (partial,
                                 gradual, adapter, discriminative learning rates). A block's
                                 forward takes the running representation as its first argument
                                 and returns the new representation (a Tensor of the same shape);
                                 extra arguments (edge_index, edge_attr, masks) pass through.
    head: nn.Module              maps the representation returned by `embed` to outputs.
    embed(batch) -> Tensor       the representation the head consumes: (B, D) for graph-level or
                                 image / text tasks, (N, D) for node-level tasks. Domain
                                 adaptation (DANN, CORAL, MMD) and alignment losses act on it.
    forward(batch) -> Tensor     `head(embed(batch))`.
    embed_dim: int               D.

Heads are swappable: `model.head = new_head` must work (head swap, decoder attach).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class TransferModel(Protocol):
    encoder: nn.Module
    head: nn.Module
    embed_dim: int

    def embed(self, batch: Any) -> Tensor: ...

    def __call__(self, batch: Any) -> Tensor: ...


def encoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The ordered blocks of `model.encoder`; a clear error when the model does not follow the contract."""
    from gridtune.errors import GridtuneError

    enc = getattr(model, "encoder", None)
    blocks = getattr(enc, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise GridtuneError(f"model `{type(model).__name__}` has no `encoder.blocks` ModuleList; "
                            "see gridtune.core.protocol for what a fine-tunable model exposes")
    return blocks
