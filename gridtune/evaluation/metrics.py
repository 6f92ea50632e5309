"""Metrics of OPF predictors on grid graphs, with undefined values made explicit.

Feasibility classifiers are scored by the modality-agnostic `gridtune.core.metrics`
(positive class = certified infeasible).
OPF (physical units): MAE / RMSE of vm (p.u.), va (degrees, relative to the reference bus), pg
    (MW), qg (Mvar); optimality gap
    of the predicted dispatch's cost; the AC system power-balance residual in MW at the predicted
    operating point (MATPOWER pi-model branch equations; Zimmerman et al. 2011).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from gridtune.core.metrics import Report, undefined
from gridtune.grids.features import BUS_FEATURES
from gridtune.grids.physics import ac_power_balance

_X = {n: i for i, n in enumerate(BUS_FEATURES)}


def _rmse(err: np.ndarray) -> float:
    return float(np.sqrt(np.mean(err ** 2)))


OPF_UNITS = (("vm", "pu"), ("va", "degree"), ("pg", "mw"), ("qg", "mvar"))


def opf_metrics(graphs: list[Any], predictions: list[np.ndarray | None], *, which: str = "model") -> Report:
    """OPF metrics over the feasible graphs (those with a finite `y_opf`).

    Args:
        graphs: PyG graphs of schema v1 (raw features, with `y_opf`, `y_cost`, `base_mva`).
        predictions: per graph an (N, 4) array of `OPF_TARGETS` in per-unit (vm, va_rad, pg, qg);
            columns may be NaN where the predictor has no value (the DC-OPF has no vm / qg: vm is
            then taken as 1 p.u. for the power balance). `None` skips a graph (no prediction).
        which: name used in reasons for undefined metrics.

    Returns: `n`, `mae_<t>_<unit>` / `rmse_<t>_<unit>` for vm (pu), va (degree), pg (mw), qg (mvar),
        `optimality_gap` (mean of (C(pred) - C(true)) / true cost, signed), `abs_optimality_gap`,
        `power_balance_mw` (mean |system residual|), `nodal_mismatch_mw` (mean |nodal residual|).
    """
    errs: list[list[np.ndarray]] = [[] for _ in OPF_UNITS]
    gaps, balance, nodal = [], [], []
    for g, pred in zip(graphs, predictions, strict=True):
        y = g.y_opf.numpy()
        if pred is None or not np.isfinite(y).all():
            continue
        base = float(g.base_mva)
        scale = (1.0, 180.0 / math.pi, base, base)
        ref = np.flatnonzero(g.x[:, _X["is_ref"]].numpy() > 0.5)
        r = int(ref[0]) if ref.size else 0
        for k in range(4):
            if np.isfinite(pred[:, k]).all():
                err = pred[:, k] - y[:, k]
                if k == 1:
                    # angles relative to the reference bus: only differences are physical, and
                    # solvers place the reference at different absolute angles (pandapower's
                    # case118 AC-OPF at 30 degrees, the DC-OPF at 0)
                    err = err - err[r]
                errs[k].append(err * scale[k])
        if not np.isfinite(pred[:, [1, 2]]).all():
            continue
        vm = np.where(np.isfinite(pred[:, 0]), pred[:, 0], 1.0)
        res, _ = ac_power_balance(g.x, g.edge_index, g.edge_attr, torch.as_tensor(vm),
                                  torch.as_tensor(pred[:, 1]), torch.as_tensor(pred[:, 2]))
        balance.append(abs(float(res.sum())) * base)
        nodal.append(float(res.abs().mean()) * base)
        cost = float(g.y_cost)
        if math.isfinite(cost) and cost != 0:
            gaps.append((dispatch_cost(g.x.numpy(), pred[:, 2]) - dispatch_cost(g.x.numpy(), y[:, 2])) / cost)
    report: Report = {"n": max([len(balance)] + [len(e) for e in errs])}
    for (t, unit), e in zip(OPF_UNITS, errs, strict=True):
        if e:
            flat = np.concatenate(e)
            report[f"mae_{t}_{unit}"] = float(np.mean(np.abs(flat)))
            report[f"rmse_{t}_{unit}"] = _rmse(flat)
        else:
            reason = (f"the {which} gives no `{t}`" if any(np.isfinite(g.y_opf.numpy()).all() for g in graphs)
                      else "no feasible graphs with an AC-OPF solution")
            undefined(report, f"mae_{t}_{unit}", reason)
            undefined(report, f"rmse_{t}_{unit}", reason)
    for name, vals in (("power_balance_mw", balance), ("nodal_mismatch_mw", nodal)):
        if vals:
            report[name] = float(np.mean(vals))
        else:
            undefined(report, name, f"no operating point from the {which} on feasible graphs")
    if gaps:
        report["optimality_gap"] = float(np.mean(gaps))
        report["abs_optimality_gap"] = float(np.mean(np.abs(gaps)))
    else:
        for name in ("optimality_gap", "abs_optimality_gap"):
            undefined(report, name, "no feasible graphs with a finite AC-OPF cost")
    return report


def dispatch_cost(x: np.ndarray, pg_pu: np.ndarray) -> float:
    """Cost ($/h, without constant terms) of a per-bus dispatch with the bus cost features.

    Constant cost terms are not in the schema; they cancel in the optimality gap, which compares
    two dispatches of the same scenario.
    """
    c2 = x[:, _X["cost_c2_per_pu2h"]]
    c1 = x[:, _X["cost_c1_per_puh"]]
    return float(np.sum(c2 * pg_pu ** 2 + c1 * pg_pu))
