"""Shared plumbing of the beyond-grids examples: seeds, the strategy loop, the results table.

Every example adapts its own small model with the core's strategies (`make_strategy`, `adapt`),
scores it with the core's trainer (`predict`) and judges it against the from-scratch baseline
with the core's verdict (`transfer_verdict`); this file only loops and prints.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gridtune.core.adapt import adapt
from gridtune.core.registry import make_strategy
from gridtune.core.trainer import FitResult, Task, TrainConfig, fit, predict
from gridtune.core.verdict import transfer_verdict


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="reduced sizes and 2 seeds (a smoke run, as the tests do)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: 3 or more, see the example; 2 with --quick)")
    p.add_argument("--out", type=Path, default=Path("."),
                   help="directory for the plot and the JSON results (default: current directory)")
    return p


def setup(args: argparse.Namespace, default_seeds: int = 3) -> list[int]:
    torch.set_num_threads(1)  # small models on shared cores: one thread (docs/design.md)
    args.out.mkdir(parents=True, exist_ok=True)
    n = args.seeds if args.seeds is not None else (2 if args.quick else default_seeds)
    return list(range(n))


def pretrain(model: nn.Module, train: Any, val: Any, task: Task, config: TrainConfig) -> FitResult:
    """Pre-training on the source data is an ordinary `fit`."""
    return fit(model, train, val, task, config)


def run_strategy(pretrained: nn.Module, name: str, train: Any, val: Any, test: Any, task: Task,
                 config: TrainConfig, metric: Callable[[torch.Tensor, torch.Tensor], float],
                 **options: Any) -> tuple[float, nn.Module, FitResult]:
    """Adapt a copy of `pretrained` with strategy `name`; its test metric, model and fit result."""
    model = copy.deepcopy(pretrained)
    model, fit_result = adapt(model, make_strategy(name, **options), train, val, task, config)
    out, tgt = predict(model, test, task)
    return float(metric(out, tgt)), model, fit_result


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval over seeds."""
    from scipy.stats import t

    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if len(v) < 2:
        return m, math.nan, math.nan
    half = float(t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - half, m + half


def results_table(scores: dict[str, list[float]], metric: str, *, baseline: str = "scratch",
                  higher_is_better: bool = True, title: str = "") -> tuple[str, dict[str, Any]]:
    """A text table: each strategy's mean metric with a 95 % interval over seeds, the paired gain
    over `baseline` with its bootstrap interval and the verdict (`transfer_verdict`)."""
    base = scores[baseline]
    lines = []
    if title:
        lines.append(title)
    head = (f"{'strategy':<22} {metric + ' mean [95% CI]':<28} {'gain vs ' + baseline + ' [95% CI]':<30} "
            f"verdict")
    lines += [head, "-" * len(head)]
    summary: dict[str, Any] = {}
    for name, vals in scores.items():
        m, lo, hi = mean_interval(vals)
        cell = f"{m:.3f} [{lo:.3f}, {hi:.3f}]"
        if name == baseline:
            lines.append(f"{name:<22} {cell:<28} {'(baseline)':<30}")
            summary[name] = {"values": list(vals), "mean": m, "ci": [lo, hi]}
            continue
        v = transfer_verdict(vals, base, metric=metric, higher_is_better=higher_is_better)
        gain = f"{v.gain_mean:+.3f} [{v.ci_low:+.3f}, {v.ci_high:+.3f}]"
        lines.append(f"{name:<22} {cell:<28} {gain:<30} {v.label}")
        summary[name] = {"values": list(vals), "mean": m, "ci": [lo, hi], "verdict": v.to_dict()}
    n = len(base)
    lines.append(f"({n} seeds; intervals: Student t for the mean, paired bootstrap for the gain"
                 + ("; few seeds make the bootstrap interval optimistic)" if n < 5 else ")"))
    return "\n".join(lines), summary


def comparison_lines(scores: dict[str, list[float]], names: Sequence[str], against: str,
                     metric: str, higher_is_better: bool = True) -> tuple[str, dict[str, Any]]:
    """One line per strategy in `names`: its paired gain over `against` (not over scratch)."""
    lines, out = [], {}
    for name in names:
        v = transfer_verdict(scores[name], scores[against], metric=metric,
                             higher_is_better=higher_is_better)
        lines.append(f"  {name} vs {against}: {v.gain_mean:+.3f} [{v.ci_low:+.3f}, {v.ci_high:+.3f}] "
                     f"({'better' if v.positive_transfer else 'worse' if v.negative_transfer else 'no clear difference'})")
        out[name] = v.to_dict()
    return "\n".join(lines), out


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __str__(self) -> str:
        return f"{time.perf_counter() - self.start:.0f} s"


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")


def batches(data: Sequence[Any], batch_size: int, *, shuffle: bool, seed: int = 0):
    """torch's DataLoader over `(x, y)` tuples, seeded (the core's `make_loader`)."""
    from gridtune.core.trainer import make_loader
    return make_loader(data, batch_size, shuffle=shuffle, seed=seed)


def learning_curve_plot(payload: dict[str, Any], budgets: list[int], names: Sequence[str], path: Path,
                        *, reference: float, reference_label: str, xlabel: str, ylabel: str,
                        title: str) -> None:
    """Mean and interval per strategy over label budgets (log axis), with a horizontal reference
    line (the source model without adaptation); `payload["budgets"][str(b)][name]` holds `mean`
    and `ci` as `results_table` reports them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in names:
        rows = [payload["budgets"][str(b)][name] for b in budgets]
        means = np.array([r["mean"] for r in rows])
        lo = np.array([r["ci"][0] for r in rows])
        hi = np.array([r["ci"][1] for r in rows])
        ax.errorbar(budgets, means, yerr=np.nan_to_num([means - lo, hi - means]), marker="o",
                    capsize=3, label=name)
    ax.axhline(reference, color="black", ls="--", lw=1, label=reference_label)
    ax.set_xscale("log")
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set_xticks([], minor=True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
