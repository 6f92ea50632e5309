"""The strategy interface and the helpers every strategy shares.

A strategy turns a pre-trained `TransferModel` (gridtune.core.protocol) into a model ready for
`fit`: it freezes, wraps or replaces parts (`prepare`), says which parameters train at which
learning rate (`param_groups`), may add a loss term (`extra_loss`) and a per-epoch hook
(`on_epoch_start`), and may fold its changes back into plain layers after training (`finalize`).
Strategies touch only `model.encoder.blocks`, `model.encoder`, `model.head` and `model.embed`, so
the same objects adapt a grid GNN, a CNN or a transformer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from gridtune.core.trainer import TrainConfig
from gridtune.errors import GridtuneError

# name -> strategy class; filled by `register`, read through `gridtune.core.registry`
REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: register a strategy under its `name`; a duplicate name is an error."""
    name = getattr(cls, "name", "")
    if not name:
        raise GridtuneError(f"strategy class `{cls.__name__}` has no `name`")
    if name in REGISTRY:
        raise GridtuneError(f"strategy name `{name}` is already registered by "
                            f"`{REGISTRY[name].__name__}`; pick another name")
    REGISTRY[name] = cls
    return cls


def build(name: str, **options: Any) -> Any:
    """A registered strategy by name, for strategies that delegate to another (domain adaptation
    on top of `full`); `gridtune.core.registry.make_strategy` is the public, checked path."""
    if name not in REGISTRY:
        raise GridtuneError(f"unknown strategy `{name}`; valid: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**options)


def freeze(module: nn.Module) -> None:
    """Stop gradients for every parameter of `module`."""
    for p in module.parameters():
        p.requires_grad_(False)


def unfreeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(True)


def reset_parameters(module: nn.Module) -> int:
    """Re-initialise every sub-module that defines `reset_parameters`; returns how many did.

    Lazy / parameter-free modules are skipped. This is how `scratch` and new heads get fresh
    weights without knowing the architecture.
    """
    n = 0
    for m in module.modules():
        fn = getattr(m, "reset_parameters", None)
        if callable(fn) and any(True for _ in m.parameters(recurse=False)):
            fn()
            n += 1
    return n


def non_block_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Encoder parameters outside `encoder.blocks` (input embeddings, final norms, pooling)."""
    in_blocks = {id(p) for p in model.encoder.blocks.parameters()}
    return [p for p in model.encoder.parameters() if id(p) not in in_blocks]


def outside_encoder_head(model: nn.Module) -> list[nn.Parameter]:
    """Model parameters in neither the encoder nor the head (e.g. a separate input embedding)."""
    seen = {id(p) for p in model.encoder.parameters()} | {id(p) for p in model.head.parameters()}
    return [p for p in model.parameters() if id(p) not in seen]


class Strategy:
    """Base class: full fine-tuning behaviour unless a subclass says otherwise.

    Subclasses set `name` (the registry key) and `description` (one line for
    `gridtune finetune --list-strategies`), and are registered with
    `register` (re-exported by `gridtune.core.registry`).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # True for strategies that learn from unlabelled target data (domain adaptation): callers
    # must pass them an `unlabeled` loader
    needs_unlabeled: ClassVar[bool] = False
    # True for strategies that keep training on the source's labelled data (rehearsal): callers
    # must pass them a `source` loader and the task's `loss`
    needs_source: ClassVar[bool] = False

    def __init__(self) -> None:
        # Modules whose weights are frozen: kept in eval mode during training so normalisation
        # statistics (BatchNorm running means) and dropout do not change a "frozen" encoder.
        self.frozen: list[nn.Module] = []

    def prepare(self, model: nn.Module, sample_batch: Any = None) -> nn.Module:
        """Modify `model` (in place or by wrapping) before training; returns the model to train.

        `sample_batch` is one training batch, for strategies that need layer shapes.
        """
        return model

    def param_groups(self, model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params}]

    def extra_loss(self, model: nn.Module, batch: Any, step: int) -> Tensor | None:
        return None

    def extra_parameters(self) -> list[nn.Parameter]:
        """Parameters the strategy owns outside the model (e.g. a domain discriminator)."""
        return []

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        for m in self.frozen:
            m.eval()

    def finalize(self, model: nn.Module) -> nn.Module:
        """After training: fold strategy-specific layers back (LoRA merge); returns the model."""
        return model

    def rebuild(self, model: nn.Module) -> nn.Module:
        """Give a freshly built model the structure this strategy leaves after `finalize`, so that
        a saved adapted model's weights load into it (as PEFT's `from_pretrained` does). Most
        strategies leave plain layers behind: nothing to do. `config()` must hold every setting
        this needs, since it is what a checkpoint stores."""
        return model

    def config(self) -> dict[str, Any]:
        """The strategy's settings, written next to results and into checkpoints."""
        scalar = (int, float, str, bool, type(None))
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and (
            isinstance(v, scalar) or (isinstance(v, list) and all(isinstance(x, scalar) for x in v)))}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class OnBase(Strategy):
    """A strategy that adds a loss term to a base strategy, which decides what trains (domain
    alignment, self-training, replay). Subclasses call `super().prepare` and define `extra_loss`.

    Args:
        base: name of the strategy that decides what trains.
    """

    def __init__(self, base: str = "full") -> None:
        super().__init__()
        self.base = base
        self._base: Strategy = build(base)

    def prepare(self, model: nn.Module, sample_batch: Any = None) -> nn.Module:
        return self._base.prepare(model, sample_batch)

    def param_groups(self, model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
        return self._base.param_groups(model, config)

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        self._base.on_epoch_start(epoch, model)

    def finalize(self, model: nn.Module) -> nn.Module:
        return self._base.finalize(model)


class Cycled:
    """Batches of an iterable drawn one at a time and restarted when it runs out (the unlabelled
    target batches of domain strategies, the source batches of `replay`).

    Args:
        batches: any re-iterable of batches (a DataLoader, a list).
        empty: the error message when it yields nothing.
    """

    def __init__(self, batches: Any, empty: str) -> None:
        self.batches, self.empty = batches, empty
        self._iter: Iterator[Any] | None = None

    def restart(self) -> None:
        self._iter = None

    def next(self) -> Any:
        if self._iter is None:
            self._iter = iter(self.batches)
        try:
            return next(self._iter)
        except StopIteration:
            self._iter = iter(self.batches)
            try:
                return next(self._iter)
            except StopIteration:
                raise GridtuneError(self.empty) from None


def freeze_all_but_head(model: nn.Module, strategy: Strategy) -> None:
    """Freeze everything except `model.head`; frozen encoder parts go in eval mode each epoch."""
    freeze(model)
    unfreeze(model.head)
    strategy.frozen.append(model.encoder)


def check_sample(sample_batch: Any, strategy: str) -> Any:
    from gridtune.errors import GridtuneError
    if sample_batch is None:
        raise GridtuneError(f"strategy `{strategy}` needs a sample batch to size its layers; "
                            "call it through gridtune.core.adapt")
    return sample_batch


@torch.no_grad()
def block_output_shapes(model: nn.Module, sample_batch: Any) -> list[torch.Size]:
    """Output shape of every encoder block on one batch (forward hooks, eval mode)."""
    shapes: list[torch.Size] = []
    hooks = [b.register_forward_hook(lambda m, i, o: shapes.append(o.shape))
             for b in model.encoder.blocks]
    was = model.training
    model.eval()
    try:
        model.embed(sample_batch)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return shapes
