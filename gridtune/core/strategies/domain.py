"""`dann`, `coral`, `mmd`: a base strategy (default `full`) plus a domain-alignment loss between
embeddings of labelled source batches and unlabelled target batches.

The unlabelled data come as any iterable of batches (`unlabeled`) that `model.embed` accepts;
for grids these are target scenarios without OPF labels (`--unlabeled N`), which cost no solve.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from gridtune.core.domain import (
    DomainDiscriminator,
    coral_loss,
    dann_lambda,
    dann_loss,
    mmd_loss,
    subsample_rows,
)
from gridtune.core.strategies.base import Cycled, OnBase, register
from gridtune.errors import GridtuneError


class DomainStrategy(OnBase):
    """Shared machinery: delegate freezing to `base`, add `weight * loss(z_source, z_target)`.

    Args:
        unlabeled: iterable of unlabelled target batches (cycled).
        weight: weight of the domain loss (default: ``1.0``).
        base: name of the strategy that decides what trains (default: ``"full"``).
        max_rows: rows per side used by the loss, sampled at random (default: ``512``).
    """

    needs_unlabeled = True

    def __init__(self, unlabeled: Iterable[Any] | None = None, weight: float = 1.0,
                 base: str = "full", max_rows: int = 512) -> None:
        super().__init__(base)
        if weight < 0:
            raise GridtuneError(f"{self.name}: weight must be >= 0, got `{weight}`")
        self.unlabeled = unlabeled
        self.weight = weight
        self.max_rows = max_rows
        self._targets = Cycled(unlabeled, f"strategy `{self.name}`: the unlabelled data are empty")
        self._gen = torch.Generator().manual_seed(0)
        self.history: list[float] = []

    def prepare(self, model: nn.Module, sample_batch: Any = None) -> nn.Module:
        if self.unlabeled is None:
            raise GridtuneError(f"strategy `{self.name}` needs unlabelled target data "
                                "(`unlabeled=...`; on the command line `--unlabeled N`)")
        self._targets.restart()
        self._gen.manual_seed(torch.initial_seed() % (2**63))
        return super().prepare(model, sample_batch)

    def _target_batch(self) -> Any:
        return self._targets.next()

    def domain_loss(self, zs: Tensor, zt: Tensor, step: int) -> Tensor:
        raise NotImplementedError

    def extra_loss(self, model: nn.Module, batch: Any, step: int) -> Tensor:
        zs = subsample_rows(model.embed(batch), self.max_rows, self._gen)
        zt = subsample_rows(model.embed(self._target_batch()), self.max_rows, self._gen)
        loss = self.domain_loss(zs, zt, step)
        self.history.append(float(loss.detach()))
        return self.weight * loss


@register
class DANN(DomainStrategy):
    """DANN (Ganin & Lempitsky 2015): a domain discriminator trained through gradient reversal.

    Args:
        hidden: discriminator width (default: ``64``).
        warmup_steps: steps over which the reversal weight ramps from 0 to ~1 (default: ``200``).
        (and the `DomainStrategy` options)
    """

    name = "dann"
    description = "full fine-tuning + domain discriminator with gradient reversal on unlabelled target"

    def __init__(self, unlabeled: Iterable[Any] | None = None, weight: float = 1.0,
                 base: str = "full", max_rows: int = 512, hidden: int = 64,
                 warmup_steps: int = 200) -> None:
        super().__init__(unlabeled, weight, base, max_rows)
        self.hidden = hidden
        self.warmup_steps = warmup_steps
        self.discriminator: DomainDiscriminator | None = None

    def prepare(self, model: nn.Module, sample_batch: Any = None) -> nn.Module:
        model = super().prepare(model, sample_batch)
        self.discriminator = DomainDiscriminator(model.embed_dim, self.hidden)
        return model

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.discriminator.parameters()) if self.discriminator is not None else []

    def domain_loss(self, zs: Tensor, zt: Tensor, step: int) -> Tensor:
        return dann_loss(self.discriminator, zs, zt, dann_lambda(step, self.warmup_steps))


@register
class CORAL(DomainStrategy):
    """Deep CORAL (Sun & Saenko 2016): align second-order statistics of the embeddings."""

    name = "coral"
    description = "full fine-tuning + CORAL loss matching source and unlabelled target covariances"

    def domain_loss(self, zs: Tensor, zt: Tensor, step: int) -> Tensor:
        return coral_loss(zs, zt)


@register
class MMD(DomainStrategy):
    """Multi-kernel MMD (Long et al. 2015, DAN) between source and target embeddings."""

    name = "mmd"
    description = "full fine-tuning + multi-kernel MMD between source and unlabelled target embeddings"

    def domain_loss(self, zs: Tensor, zt: Tensor, step: int) -> Tensor:
        return mmd_loss(zs, zt)
