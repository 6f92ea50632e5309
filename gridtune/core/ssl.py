"""Self-supervised pre-adaptation on unlabelled target data: masked feature reconstruction.

Stage one of two-stage adaptation: before any target label is used, the encoder learns the
target's input statistics by reconstructing masked input rows (bus features of a grid, token
features) from their context, as in masked autoencoding of graphs (Hou et al. 2022, "GraphMAE")
and masked language modelling (Devlin et al. 2019). Stage two is ordinary supervised fine-tuning
(`gridtune.core.adapt`) starting from the pre-adapted encoder.

A masked row is replaced by the column means of the batch (a neutral value in the input's own
units); the loss is the mean squared error of the masked rows, each column divided by its standard
deviation over the unlabelled data so that large-valued columns do not dominate. The model's head
is not touched; a temporary reconstruction head is dropped at the end.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from gridtune.core.representation import element_representation
from gridtune.errors import GridtuneError, TrainingError


def graph_features(batch: Any) -> Tensor:
    """Default feature accessor: `batch.x` (PyG graphs), else `batch[0]` (tuples)."""
    return batch.x if hasattr(batch, "x") else batch[0]


def with_graph_features(batch: Any, x: Tensor) -> Any:
    """Default replacer: a shallow copy of the batch with new features."""
    if hasattr(batch, "x"):
        out = copy.copy(batch)
        out.x = x
        return out
    return (x, *batch[1:])


@dataclass
class PreAdaptResult:
    history: list[float] = field(default_factory=list)  # mean masked loss per epoch
    columns: list[int] = field(default_factory=list)
    wall_time_s: float = 0.0


def pre_adapt(model: nn.Module, unlabeled: Sequence[Any] | Any, *, epochs: int = 20,
              lr: float = 1e-3, mask_rate: float = 0.15, seed: int = 0,
              columns: Sequence[int] | None = None,
              features: Callable[[Any], Tensor] = graph_features,
              with_features: Callable[[Any, Tensor], Any] = with_graph_features,
              hidden: int = 64) -> PreAdaptResult:
    """Train `model.encoder` to reconstruct masked input rows of unlabelled batches.

    Args:
        model: a `TransferModel`; its last encoder block must give one row per input row.
        unlabeled: an iterable of batches (re-iterated each epoch).
        epochs, lr, seed: optimisation (AdamW).
        mask_rate: share of rows masked per batch (at least one row).
        columns: input columns to reconstruct (default: every column that varies).
        features, with_features: read / replace the input rows of a batch.
        hidden: width of the temporary reconstruction head.

    Shapes:
        features(batch): (R, F); last-block output: (R, D).
    """
    if not 0 < mask_rate < 1:
        raise GridtuneError(f"mask_rate must be in (0, 1), got `{mask_rate}`")
    batches = list(unlabeled)
    if not batches:
        raise GridtuneError("pre-adaptation needs unlabelled batches, got none")
    with torch.no_grad():
        rep = element_representation(model, batches[0])
    if rep.dim() != 2 or rep.shape[0] != features(batches[0]).shape[0]:
        raise GridtuneError(f"masked reconstruction needs one representation row per input row; "
                            f"the last encoder block gives shape `{tuple(rep.shape)}` for "
                            f"`{features(batches[0]).shape[0]}` input rows")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x_all = torch.cat([features(b) for b in batches]).float()
    std = x_all.std(dim=0)
    cols = list(columns) if columns is not None else [int(i) for i in torch.nonzero(std > 1e-6)]
    if not cols:
        raise GridtuneError("pre-adaptation: no input column varies across the unlabelled data")
    scale = std[cols].clamp_min(1e-6)
    recon = nn.Sequential(nn.Linear(rep.shape[-1], hidden), nn.ReLU(), nn.Linear(hidden, len(cols)))
    enc_params = [p for p in model.encoder.parameters()]
    was = [p.requires_grad for p in enc_params]
    for p in enc_params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(enc_params + list(recon.parameters()), lr=lr)
    result = PreAdaptResult(columns=cols)
    start = time.perf_counter()
    model.train()
    try:
        for epoch in range(epochs):
            total = 0.0
            order = torch.randperm(len(batches), generator=gen).tolist()
            for k in order:
                batch = batches[k]
                x = features(batch)
                n = x.shape[0]
                mask = torch.rand(n, generator=gen) < mask_rate
                if not mask.any():
                    mask[torch.randint(n, (1,), generator=gen)] = True
                x_masked = x.clone()
                x_masked[mask] = x.mean(dim=0).to(x.dtype)
                h = element_representation(model, with_features(batch, x_masked))  # (R, D)
                pred = recon(h[mask])  # (M, len(cols))
                loss = (((pred - x[mask][:, cols].float()) / scale) ** 2).mean()
                if not torch.isfinite(loss):
                    raise TrainingError(f"pre-adaptation loss became `{loss.item()}` at epoch {epoch}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
            result.history.append(total / len(batches))
    finally:
        for p, w in zip(enc_params, was, strict=True):
            p.requires_grad_(w)
        model.eval()
    result.wall_time_s = time.perf_counter() - start
    return result
