"""Low-rank adaptation of linear layers (Hu et al. 2021, "LoRA: Low-rank adaptation of large
language models").

Written here rather than taken from PEFT: PEFT's LoRA targets `torch.nn.Linear` (and a few other
torch layers) and brings transformers / accelerate / huggingface_hub with it, while the grid GNNs
also use `torch_geometric.nn.dense.Linear`, which is not a `torch.nn.Linear`. Both compute
`x @ W.T + b` with a `weight` of shape (out, in), which is all LoRA needs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gridtune.errors import GridtuneError


def _linear_types() -> tuple[type, ...]:
    types: list[type] = [nn.Linear]
    try:
        from torch_geometric.nn.dense.linear import Linear as PygLinear
        types.append(PygLinear)
    except ImportError:  # pragma: no cover - torch_geometric is a dependency
        pass
    return tuple(types)


class LoRALinear(nn.Module):
    """`base(x) + scaling * x @ A.T @ B.T` with a frozen `base` and trainable A (r, in), B (out, r).

    B starts at zero, so the wrapped layer equals the base layer before training.

    Args:
        base: a linear layer with `weight` (out, in) and optional `bias`.
        rank: r (default: ``4``).
        alpha: scaling numerator; `scaling = alpha / rank` (default: ``8.0``).

    Shapes:
        x: (..., in); output: (..., out).
    """

    def __init__(self, base: nn.Module, rank: int = 4, alpha: float = 8.0) -> None:
        super().__init__()
        weight = getattr(base, "weight", None)
        if not isinstance(weight, nn.Parameter) or isinstance(weight, nn.parameter.UninitializedParameter):
            raise GridtuneError(f"lora: layer `{type(base).__name__}` has no initialised 2-D weight; "
                                "run one forward pass before adding LoRA")
        out_f, in_f = weight.shape
        self.base = base
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, in_f))
        self.lora_b = nn.Parameter(torch.zeros(out_f, rank))
        self.reset_parameters()
        for p in self.base.parameters():
            p.requires_grad_(False)

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b)

    def delta_weight(self) -> Tensor:
        """The low-rank update, (out, in)."""
        return self.scaling * (self.lora_b @ self.lora_a)

    # Some layers read their children's `weight` / `bias` directly instead of calling them
    # (nn.MultiheadAttention uses `out_proj.weight`): expose the adapted weight there too.
    @property
    def weight(self) -> Tensor:
        return self.base.weight + self.delta_weight()

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.scaling * ((x @ self.lora_a.T) @ self.lora_b.T)

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """The base layer with the update folded into its weight (no extra inference cost)."""
        self.base.weight.add_(self.delta_weight())
        return self.base


def apply_lora(module: nn.Module, rank: int = 4, alpha: float = 8.0) -> list[str]:
    """Wrap every linear layer inside `module` in a `LoRALinear`, in place.

    Returns the qualified names of the wrapped layers (an empty list is an error: nothing to adapt).
    """
    if not isinstance(rank, int) or rank < 1:
        raise GridtuneError(f"lora: rank must be a positive integer, got `{rank}`")
    types = _linear_types()
    targets = [(name, m) for name, m in module.named_modules()
               if isinstance(m, types) and not isinstance(m, LoRALinear)]
    if not targets:
        raise GridtuneError(f"lora: `{type(module).__name__}` has no linear layers to adapt")
    for name, m in targets:
        _set_submodule(module, name, LoRALinear(m, rank=rank, alpha=alpha))
    return [n for n, _ in targets]


def merge_lora(module: nn.Module) -> int:
    """Replace every `LoRALinear` inside `module` by its merged base layer; returns the count."""
    found = [(n, m) for n, m in module.named_modules() if isinstance(m, LoRALinear)]
    for name, m in found:
        _set_submodule(module, name, m.merged())
    return len(found)


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)
