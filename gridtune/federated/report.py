"""Summary over seeds, one plot per site and the markdown report of a federated run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

REFERENCES = ("global", "local")


def _mean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def summarise(runs: list[dict[str, Any]], names: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Test AUROC per site and method (mean over seeds), the mean across sites, and for each
    personalisation the sites where it beats both references."""
    methods = list(runs[0]["sites"][names[0]])
    per_site = {n: {m: _mean([r["sites"][n][m].get("auroc") for r in runs]) for m in methods} for n in names}
    mean = {m: _mean([per_site[n][m] for n in names]) for m in methods}
    wins = {m: [n for n in names if all(per_site[n][m] > per_site[n][ref] for ref in REFERENCES)]
            for m in methods if m not in REFERENCES}
    eps = [r["privacy"].get("epsilon") for r in runs if "epsilon" in r["privacy"]]
    return {"auroc": per_site, "mean_auroc": mean, "beats_global_and_local": wins,
            "epsilon_max": max(eps) if eps else None, "seeds": [r["seed"] for r in runs]}


def write_plots(result: dict[str, Any], directory: Path) -> list[Path]:
    """`<site>.png`: the global model's validation AUROC on the site per round (one line per seed)
    and the test AUROC of each method (bars: mean over seeds, dots: seeds)."""
    from gridtune.evaluation.plots import _pyplot

    plt = _pyplot()
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(result["sites"]):
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
        for run in result["runs"]:
            pts = [(r["round"], r["val_auroc_global"].get(i, r["val_auroc_global"].get(str(i))))
                   for r in run["rounds"]]
            pts = [(x, y) for x, y in pts if y is not None]
            left.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=f"seed {run['seed']}")
        left.set(xlabel="round", ylabel="validation AUROC of the received global model", title=name)
        left.legend(fontsize=7)
        methods = list(result["runs"][0]["sites"][name])
        for k, m in enumerate(methods):
            vals = [run["sites"][name][m].get("auroc") for run in result["runs"]]
            vals = [v for v in vals if v is not None and math.isfinite(v)]
            right.bar(k, np.mean(vals) if vals else 0.0, color="tab:gray" if m in REFERENCES else "tab:blue")
            right.scatter([k] * len(vals), vals, color="black", s=10, zorder=3)
        right.set_xticks(range(len(methods)), methods, rotation=20)
        right.set(ylabel="test AUROC", ylim=(0.5, 1.0), title="test split")
        fig.tight_layout()
        path = directory / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(result: dict[str, Any], spec: Any, path: Path) -> None:
    s = result["summary"]
    methods = list(s["mean_auroc"])
    lines = [f"# Federated run: {len(result['sites'])} sites, {spec.strategy}, {spec.rounds} rounds, "
             f"mode {spec.mode}", "",
             f"Seeds {s['seeds']}; privacy `{spec.privacy.kind}`"
             + (f", epsilon spent (max over seeds) {s['epsilon_max']:.3g} at delta {spec.privacy.delta:g}"
                if s["epsilon_max"] is not None else "") + ".", "",
             "Test AUROC, mean over seeds (`global`: the federated model as released; `local`: trained on "
             "the site's data alone):", "",
             "| site | n_test | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    n_test = result["runs"][0]["n_test"]
    for name in result["sites"]:
        row = s["auroc"][name]
        lines.append(f"| {name} | {n_test[name]} | " + " | ".join(f"{row[m]:.4f}" for m in methods) + " |")
    lines.append("| mean | | " + " | ".join(f"{s['mean_auroc'][m]:.4f}" for m in methods) + " |")
    lines += ["", "Sites where a personalisation beats both the global model and local-only training:", ""]
    lines += [f"- {m}: {len(v)} of {len(result['sites'])} ({', '.join(v) or 'none'})"
              for m, v in s["beats_global_and_local"].items()]
    failures = [(run["seed"], r["round"], r["failed"], r["errors"]) for run in result["runs"]
                for r in run["rounds"] if r["failed"] or r["errors"]]
    lines += ["", "Failed sites by round: " + ("none" if not failures else "; ".join(
        f"seed {sd} round {rd}: sites {f} ({'; '.join(e) or 'no answer'})" for sd, rd, f, e in failures)), ""]
    path.write_text("\n".join(lines) + "\n")
