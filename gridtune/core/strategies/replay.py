"""`replay`: a base strategy (default `full`) that keeps training on the source's labelled data.

Fine-tuning on a few target labels moves a model towards them and away from what the source
taught it. Where the source's own labels still hold for most of the target (a grid after a
planning change: new lines, a retired unit, load growth in one area), rehearsing them keeps
that knowledge while the target labels correct what changed: each step adds the task loss on
one batch of source data, `weight * loss(model(source_batch), source_batch)` (experience replay
/ rehearsal, Robins 1995, "Catastrophic forgetting, rehearsal and pseudorehearsal"; joint
training on source and target, as in Ganin et al.'s baselines).

Works on any model and task: the source batches come as any iterable the model accepts, and
`loss(output, batch)` is the task's loss (`gridtune.core.tasks.Task.loss`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor, nn

from gridtune.core.strategies.base import Cycled, OnBase, register
from gridtune.errors import GridtuneError


@register
class Replay(OnBase):
    """Fine-tuning plus the task loss on labelled source batches (cycled).

    Args:
        source: iterable of labelled source batches (cycled); required before training.
        loss: `loss(output, batch) -> Tensor`, the task's loss; required before training.
        weight: weight of the source term against the target's task loss (default: ``1.0``).
        base: strategy deciding what trains (default: ``"full"``).
    """

    name = "replay"
    description = "full fine-tuning + the task loss on the source's own labelled data (rehearsal)"
    needs_source = True

    def __init__(self, source: Iterable[Any] | None = None,
                 loss: Callable[[Any, Any], Tensor] | None = None, weight: float = 1.0,
                 base: str = "full") -> None:
        super().__init__(base)
        if not weight >= 0:
            raise GridtuneError(f"replay: weight must be >= 0, got `{weight}`")
        self.source, self.loss, self.weight = source, loss, weight
        self._sources = Cycled(source, "strategy `replay`: the source data are empty")
        self.history: list[float] = []

    def prepare(self, model: nn.Module, sample_batch: Any = None) -> nn.Module:
        if self.source is None or self.loss is None:
            raise GridtuneError("strategy `replay` needs the source's labelled data and the task's "
                                "loss (`source=...`, `loss=...`; on the command line `--source-data DATA`)")
        self._sources.restart()
        return super().prepare(model, sample_batch)

    def extra_loss(self, model: nn.Module, batch: Any, step: int) -> Tensor:
        src = self._sources.next()
        loss = self.loss(model(src), src)  # type: ignore[misc]
        self.history.append(float(loss.detach()))
        return self.weight * loss
