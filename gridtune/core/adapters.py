"""Bottleneck adapters inserted after encoder blocks (Houlsby et al. 2019, "Parameter-efficient
transfer learning for NLP").

An adapter is `h + up(gelu(down(h)))` on the feature axis; `up` starts at zero so the adapted
model equals the pre-trained one before training. `feature_dim` says which axis holds features:
-1 for node or token embeddings, 1 for channel-first image feature maps.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class BottleneckAdapter(nn.Module):
    """Residual bottleneck on the feature axis.

    Args:
        dim: feature size D.
        bottleneck: hidden size (default: ``16``).
        feature_dim: axis of `h` holding the D features (default: ``-1``).

    Shapes:
        h: any shape with `h.shape[feature_dim] == dim`; output: same shape.
    """

    def __init__(self, dim: int, bottleneck: int = 16, feature_dim: int = -1) -> None:
        super().__init__()
        self.dim, self.bottleneck, self.feature_dim = dim, bottleneck, feature_dim
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.down.reset_parameters()
        # zero up-projection: the adapter starts as the identity
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: Tensor) -> Tensor:
        z = h.movedim(self.feature_dim, -1)  # (..., D)
        z = z + self.up(self.act(self.down(z)))
        return z.movedim(-1, self.feature_dim)


class AdaptedBlock(nn.Module):
    """An encoder block followed by an adapter; same call signature as the block."""

    def __init__(self, block: nn.Module, adapter: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.adapter = adapter

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.adapter(self.block(*args, **kwargs))
