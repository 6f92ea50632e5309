"""Platt calibration of a grid feasibility model's output buffers (`logit_scale`, `logit_bias`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch_geometric.data import Data

from gridtune.core.calibration import fit_platt
from gridtune.core.trainer import make_loader, predict
from gridtune.grids.view import task_graphs
from gridtune.nn.tasks import make_task


@torch.no_grad()
def platt_calibrate(model: Any, graphs: Sequence[Data], batch_size: int = 256) -> dict[str, float] | None:
    """Fit `logit_scale` and `logit_bias` of a feasibility model on `graphs` (Platt scaling).

    Returns the fitted values, or None (model left uncalibrated: identity) when `graphs` lack
    both classes or the fit would flip the ranking.
    """
    graphs = task_graphs(graphs, "feasibility")
    if len(graphs) < 2:
        return None
    model.logit_scale.fill_(1.0)
    model.logit_bias.fill_(0.0)
    logits, y = predict(model, make_loader(graphs, batch_size, shuffle=False), make_task("feasibility"))
    fitted = fit_platt(logits, y)
    if fitted is None:
        return None
    model.logit_scale.fill_(fitted[0])
    model.logit_bias.fill_(fitted[1])
    return {"logit_scale": fitted[0], "logit_bias": fitted[1]}
