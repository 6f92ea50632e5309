"""Run a strategy: prepare the model, train it with `fit`, finalize it.

    model, result = adapt(model, make_strategy("adapter"), train_loader, val_loader, task, config)

Extra loss terms (constraint formulations, alignment) compose with the strategy's own term.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from gridtune.core.strategies.base import Strategy
from gridtune.core.trainer import ExtraLoss, FitResult, Task, TrainConfig, fit
from gridtune.errors import TrainingError


def adapt(
    model: nn.Module,
    strategy: Strategy,
    train_loader: Any,
    val_loader: Any | None,
    task: Task,
    config: TrainConfig,
    *,
    extra_losses: Sequence[ExtraLoss] = (),
    progress: bool = False,
) -> tuple[nn.Module, FitResult]:
    """Fine-tune `model` with `strategy`; returns the (possibly wrapped) model and the fit result.

    Args:
        model: a `TransferModel` (gridtune.core.protocol), modified in place where the strategy can.
        strategy: a `Strategy` (see `gridtune.core.registry`).
        train_loader, val_loader, task, config: as for `gridtune.core.trainer.fit`.
        extra_losses: more `extra_loss(model, batch, step)` terms (constraints, alignment); any
            that is an `nn.Module` with parameters has them trained too.
    """
    # new layers (heads, adapters, LoRA factors, discriminators) get seeded initial weights
    torch.manual_seed(config.seed)
    try:
        sample = next(iter(train_loader))
    except StopIteration:
        raise TrainingError(f"strategy `{strategy.name}`: the training loader is empty") from None
    model = strategy.prepare(model, sample)
    groups = strategy.param_groups(model, config)
    extra_params = list(strategy.extra_parameters())
    for term in extra_losses:
        if isinstance(term, nn.Module):
            extra_params += [p for p in term.parameters() if p.requires_grad]
    if extra_params:
        groups = groups + [{"params": extra_params}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise TrainingError(f"strategy `{strategy.name}` left no parameter to train")

    def combined(m: nn.Module, batch: Any, step: int) -> Tensor:
        total = torch.zeros(())
        own = strategy.extra_loss(m, batch, step)
        if own is not None:
            total = total + own
        for term in extra_losses:
            total = total + term(m, batch, step)
        return total

    has_extra = bool(extra_losses) or type(strategy).extra_loss is not Strategy.extra_loss
    # constraint formulations select the checkpoint: constrained selection (`val_violation`)
    # when they offer it, else their validation Lagrangian joins the early-stopping score
    checks = [t.validation_violation for t in extra_losses if hasattr(t, "validation_violation")]
    penalties = [t.validation_penalty for t in extra_losses
                 if hasattr(t, "validation_penalty") and not hasattr(t, "validation_violation")]

    def score_penalty(m: nn.Module, loader: Any) -> float:
        return sum(p(m, loader) for p in penalties)

    def val_violation(m: nn.Module, loader: Any) -> float:
        return sum(c(m, loader) for c in checks)

    result = fit(model, train_loader, val_loader, task, config, param_groups=groups,
                 extra_loss=combined if has_extra else None,
                 on_epoch_start=strategy.on_epoch_start,
                 score_penalty=score_penalty if penalties else None,
                 val_violation=val_violation if checks else None, progress=progress)
    # parameters outside the model (discriminators) trained too, but are not deployed with it
    in_model = {id(p) for p in model.parameters()}
    result.auxiliary_parameters = sum(p.numel() for p in extra_params if id(p) not in in_model)
    result.trainable_parameters -= result.auxiliary_parameters
    model = strategy.finalize(model)
    return model, result
