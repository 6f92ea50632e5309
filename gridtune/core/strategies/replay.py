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

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from torch import Tensor, nn

from gridtune.core.strategies.base import Strategy, build, register
from gridtune.core.trainer import TrainConfig
from gridtune.errors import GridtuneError


@register
class Replay(Strategy):
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
        super().__init__()
        if not weight >= 0:
            raise GridtuneError(f"replay: weight must be >= 0, got `{weight}`")
        self.source, self.loss, self.weight, self.base = source, loss, weight, base
        self._base: Strategy = build(base)
        self._iter: Iterator[Any] | None = None
        self.history: list[float] = []

    def prepare(self, model: nn.Module, sample_batch: Any = None) -> nn.Module:
        if self.source is None or self.loss is None:
            raise GridtuneError("strategy `replay` needs the source's labelled data and the task's "
                                "loss (`source=...`, `loss=...`; on the command line `--source-data DATA`)")
        self._iter = None
        return self._base.prepare(model, sample_batch)

    def param_groups(self, model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
        return self._base.param_groups(model, config)

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        self._base.on_epoch_start(epoch, model)

    def finalize(self, model: nn.Module) -> nn.Module:
        return self._base.finalize(model)

    def _source_batch(self) -> Any:
        if self._iter is None:
            self._iter = iter(self.source)  # type: ignore[arg-type]
        try:
            return next(self._iter)
        except StopIteration:
            self._iter = iter(self.source)  # type: ignore[arg-type]
            try:
                return next(self._iter)
            except StopIteration:
                raise GridtuneError("strategy `replay`: the source data are empty") from None

    def extra_loss(self, model: nn.Module, batch: Any, step: int) -> Tensor:
        src = self._source_batch()
        loss = self.loss(model(src), src)  # type: ignore[misc]
        self.history.append(float(loss.detach()))
        return self.weight * loss
