"""Grid tasks for `gridtune.core.trainer.fit` (its `Task` protocol).

    feasibility  output (B,) logits of P(infeasible); target `y_infeasible` (NaN for graphs that
                 are neither feasible nor certified infeasible: they are left out of the loss and
                 of the metrics). Class imbalance: `pos_weight` = n_feasible / n_infeasible of the
                 training split (`make_task("feasibility", pos_weight=...)`).
    opf          output (N, 4) per-unit `OPF_TARGETS`; target `y_opf` (NaN rows on graphs without
                 an AC-OPF solution, left out). Loss: MSE of standardised values (`target_std`:
                 the model's fitted statistics, or typical per-unit spreads when not given).
    cost         output (B,) $/h; target `y_cost`. Loss: MSE relative to the cost scale.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gridtune.core.metrics import classification_metrics
from gridtune.errors import GridtuneError
from gridtune.grids.features import OPF_TARGETS
from gridtune.grids.labels import TASKS
from gridtune.nn.heads import check_task

# Typical spreads of the OPF targets across IEEE cases (vm_pu, va_rad, pg_pu, qg_pu): used to
# standardise the loss when no fitted statistics are given (e.g. a task built from its name alone).
DEFAULT_OPF_STD = (0.03, 0.2, 1.0, 0.5)


def _nan_to_none(report: dict[str, Any]) -> dict[str, float]:
    return {k: (float("nan") if v is None else float(v)) for k, v in report.items()
            if k != "undefined" and (v is None or isinstance(v, (int, float)))}


class FeasibilityTask:
    """Binary classification of certified infeasibility (graph level).

    Args:
        pos_weight: weight of infeasible graphs in the loss (default: 1.0, balanced data).
    """

    name = "feasibility"

    def __init__(self, pos_weight: float = 1.0) -> None:
        if not (pos_weight > 0 and math.isfinite(pos_weight)):
            raise GridtuneError(f"feasibility `pos_weight` must be positive, got `{pos_weight}`")
        self.pos_weight = float(pos_weight)

    def target(self, batch: Any) -> Tensor:
        return batch.y_infeasible.view(-1)

    def loss(self, output: Tensor, batch: Any) -> Tensor:
        y = self.target(batch)
        keep = torch.isfinite(y)
        if not keep.any():
            return output.sum() * 0.0  # a batch of `unknown` graphs teaches nothing
        return F.binary_cross_entropy_with_logits(
            output[keep], y[keep], pos_weight=torch.tensor(self.pos_weight, dtype=output.dtype))

    def metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        probs = torch.sigmoid(outputs.double()).numpy()
        return _nan_to_none(classification_metrics(probs, targets.double().numpy()))

    def val_score(self, metrics: dict[str, float]) -> float:
        # AUROC ranks; when a split has one class only, fall back to the log loss.
        auroc = metrics.get("auroc", float("nan"))
        return auroc if math.isfinite(auroc) else -metrics.get("log_loss", float("inf"))


class OpfTask:
    """Per-bus regression of the AC-OPF solution (node level).

    Args:
        target_std: per-target scale of the loss, (4,) in per-unit (default: `DEFAULT_OPF_STD`).
    """

    name = "opf"

    def __init__(self, target_std: Tensor | tuple[float, ...] | None = None) -> None:
        std = torch.as_tensor(DEFAULT_OPF_STD if target_std is None else target_std, dtype=torch.float32)
        if std.shape != (len(OPF_TARGETS),) or not bool((std > 0).all()):
            raise GridtuneError(f"opf `target_std` must be {len(OPF_TARGETS)} positive values, got `{std.tolist()}`")
        self.target_std = std.clone()

    def target(self, batch: Any) -> Tensor:
        return batch.y_opf

    def loss(self, output: Tensor, batch: Any) -> Tensor:
        y = self.target(batch)
        keep = torch.isfinite(y).all(dim=1)
        if not keep.any():
            return output.sum() * 0.0
        z = (output[keep] - y[keep]) / self.target_std.to(output.dtype)  # (N_feasible, 4)
        return (z ** 2).mean()

    def metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        keep = torch.isfinite(targets).all(dim=1)
        if not keep.any():
            return {"std_mse": float("nan"), **{f"mae_{t}": float("nan") for t in OPF_TARGETS}}
        err = (outputs[keep] - targets[keep]).double()
        out = {"std_mse": float(((err / self.target_std.double()) ** 2).mean())}
        for k, t in enumerate(OPF_TARGETS):
            out[f"mae_{t}"] = float(err[:, k].abs().mean())
        return out

    def val_score(self, metrics: dict[str, float]) -> float:
        return -metrics["std_mse"]


class CostTask:
    """Graph-level regression of the AC-OPF objective ($/h).

    Args:
        cost_scale: $/h by which errors are divided in the loss (default: each target's own
            magnitude, i.e. a relative squared error).
    """

    name = "cost"

    def __init__(self, cost_scale: float | None = None) -> None:
        if cost_scale is not None and not cost_scale > 0:
            raise GridtuneError(f"cost `cost_scale` must be positive, got `{cost_scale}`")
        self.cost_scale = cost_scale

    def target(self, batch: Any) -> Tensor:
        return batch.y_cost.view(-1)

    def loss(self, output: Tensor, batch: Any) -> Tensor:
        y = self.target(batch)
        keep = torch.isfinite(y)
        if not keep.any():
            return output.sum() * 0.0
        scale = self.cost_scale if self.cost_scale is not None else y[keep].abs().clamp_min(1.0)
        return (((output[keep] - y[keep]) / scale) ** 2).mean()

    def metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        keep = torch.isfinite(targets)
        if not keep.any():
            return {"mae_cost": float("nan"), "mape_cost": float("nan")}
        err = (outputs[keep] - targets[keep]).double().numpy()
        y = targets[keep].double().numpy()
        return {"mae_cost": float(np.mean(np.abs(err))),
                "mape_cost": float(np.mean(np.abs(err) / np.maximum(np.abs(y), 1.0)))}

    def val_score(self, metrics: dict[str, float]) -> float:
        return -metrics["mape_cost"]


TASK_CLASSES = dict(zip(TASKS, (FeasibilityTask, OpfTask, CostTask), strict=True))


def make_task(name: str, **options: Any) -> FeasibilityTask | OpfTask | CostTask:
    """The task called `name`; `options` go to its constructor (`pos_weight`, `target_std`, `cost_scale`)."""
    return TASK_CLASSES[check_task(name)](**options)


def task_for_model(model: Any, **options: Any) -> FeasibilityTask | OpfTask | CostTask:
    """The task of a `GridModelNet`, with its loss scaled by the model's own fitted statistics."""
    name = model.task
    if name == "opf" and "target_std" not in options:
        options["target_std"] = model.normalizer.opf_std.detach().clone()
    if name == "cost" and "cost_scale" not in options:
        options["cost_scale"] = float(model.normalizer.cost_std)
    return make_task(name, **options)


PRIMARY_METRICS = {"feasibility": ("auroc", True), "opf": ("std_mse", False), "cost": ("mape_cost", False)}


def primary_metric(task: str) -> str:
    """The metric a verdict compares: AUROC for feasibility, standardised MSE for OPF, MAPE for cost."""
    return PRIMARY_METRICS[task][0]


def higher_is_better(task: str) -> bool:
    """Whether a larger `primary_metric(task)` is better."""
    return PRIMARY_METRICS[task][1]
