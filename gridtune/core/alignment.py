"""Representation alignment prior: pull the embeddings of paired entities together.

Given pairs of corresponding entities across a source and a target (buses of an old and a new
model of the same grid, orthologous proteins, translated sentences), the fine-tuned target model
is asked to place each target entity near its partner's representation under the frozen
pre-trained source model, as an `extra_loss` term. This is a correspondence prior in the spirit of
cross-domain alignment with anchor pairs (e.g. Mikolov et al. 2013, "Exploiting similarities
among languages for machine translation"; Conneau et al. 2018) applied during fine-tuning.

Representations are per element (`level="elements"`: last encoder block, one row per node /
token) or per sample (`level="embed"`: `model.embed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gridtune.core.representation import element_representation
from gridtune.errors import GridtuneError, choices_text

LEVELS = ("elements", "embed")
DISTANCES = ("mse", "cosine")


def pairs_by_name(source_names: Sequence[str], target_names: Sequence[str]) -> Tensor:
    """(K, 2) row pairs of entities with the same name on both sides, in target order."""
    where = {n: i for i, n in enumerate(source_names)}
    pairs = [(where[n], j) for j, n in enumerate(target_names) if n in where]
    if not pairs:
        raise GridtuneError("no entity name is shared by source and target; nothing to align")
    return torch.tensor(pairs, dtype=torch.long)


def _representation(model: nn.Module, batch: Any, level: str) -> Tensor:
    return element_representation(model, batch) if level == "elements" else model.embed(batch)


class PairedAlignment:
    """`extra_loss(model, batch, step)`: weight * mean distance of paired representations.

    Args:
        source_model: the pre-trained model (not modified; its representations are computed once).
        source_batch: a batch holding the source entities.
        target_batch: a batch holding the target entities (the same every step).
        pairs: (K, 2) long tensor of (source row, target row).
        weight: weight of the term (default: ``1.0``).
        level: ``"elements"`` or ``"embed"`` (default: ``"elements"``).
        distance: ``"mse"`` (squared Euclidean per pair) or ``"cosine"`` (1 - cosine similarity).
    """

    def __init__(self, source_model: nn.Module, source_batch: Any, target_batch: Any,
                 pairs: Tensor, *, weight: float = 1.0, level: str = "elements",
                 distance: str = "mse") -> None:
        if level not in LEVELS:
            raise GridtuneError(f"unknown alignment level `{level}`; valid: {choices_text(LEVELS)}")
        if distance not in DISTANCES:
            raise GridtuneError(f"unknown alignment distance `{distance}`; valid: {choices_text(DISTANCES)}")
        pairs = torch.as_tensor(pairs, dtype=torch.long)
        if pairs.dim() != 2 or pairs.shape[1] != 2 or pairs.shape[0] == 0:
            raise GridtuneError(f"alignment pairs must be a (K, 2) array, got shape `{tuple(pairs.shape)}`")
        self.weight, self.level, self.distance = weight, level, distance
        self.target_batch = target_batch
        self.pairs = pairs
        was = source_model.training
        source_model.eval()
        with torch.no_grad():
            zs = _representation(source_model, source_batch, level)
        source_model.train(was)
        if int(pairs[:, 0].max()) >= zs.shape[0]:
            raise GridtuneError(f"alignment pair source row `{int(pairs[:, 0].max())}` is out of "
                                f"range for `{zs.shape[0]}` source rows")
        self.source = zs[pairs[:, 0]].detach()  # (K, D)
        self.history: list[float] = []

    def distance_to(self, model: nn.Module) -> Tensor:
        zt = _representation(model, self.target_batch, self.level)
        if int(self.pairs[:, 1].max()) >= zt.shape[0]:
            raise GridtuneError(f"alignment pair target row `{int(self.pairs[:, 1].max())}` is out "
                                f"of range for `{zt.shape[0]}` target rows")
        zt = zt[self.pairs[:, 1]]
        if zt.shape[1] != self.source.shape[1]:
            raise GridtuneError(f"source and target representations differ in width: "
                                f"`{self.source.shape[1]}` and `{zt.shape[1]}`")
        if self.distance == "mse":
            return ((zt - self.source) ** 2).sum(dim=1).mean()
        return (1 - F.cosine_similarity(zt, self.source, dim=1)).mean()

    def __call__(self, model: nn.Module, batch: Any, step: int) -> Tensor:
        d = self.distance_to(model)
        self.history.append(float(d.detach()))
        return self.weight * d
