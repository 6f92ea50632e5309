"""Per-element representations: the output of the last encoder block (nodes, tokens, pixels).

`model.embed` may pool (graph-level and image tasks give (B, D)); self-supervised
reconstruction and entity alignment need one row per node / token instead. A forward hook on
`encoder.blocks[-1]` reads it without the model knowing.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from gridtune.core.protocol import encoder_blocks


def element_representation(model: nn.Module, batch: Any) -> Tensor:
    """The last encoder block's output when `model.embed(batch)` runs (gradients flow)."""
    captured: list[Tensor] = []
    hook = encoder_blocks(model)[-1].register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        model.embed(batch)
    finally:
        hook.remove()
    return captured[-1]
