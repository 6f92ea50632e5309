"""Built-in fine-tuning strategies; importing this package registers them."""

from gridtune.core.strategies import (  # noqa: F401
    adapter,
    decoder,
    discriminative,
    domain,
    full,
    gradual,
    head_swap,
    l2sp,
    linear_probe,
    lora,
    partial,
    replay,
    scratch,
    self_training,
)
from gridtune.core.strategies.base import Strategy

__all__ = ["Strategy"]
