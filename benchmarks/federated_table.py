"""Tables of federated runs over seeds: test AUROC per site and method with a 95% interval over
seeds; each personalisation against the global model and local-only training, paired by seed
(the target: ahead of both on the mean over sites and on at least 3 of 4 sites); and the cost of
differential privacy against the same run without it, paired by seed.

    python benchmarks/federated_table.py runs/federated_sites/results.json \
        --dp runs/federated_sites_dp/results.json

Each argument is a `results.json` of `gridtune federated`; the runs of several files (e.g. one
per seed) are pooled. The interval is Student's t over seeds (mean +- t(0.975, n-1) * sd / sqrt(n));
with one seed it is left out.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats


def load_runs(paths: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    sites: list[str] = []
    runs: list[dict[str, Any]] = []
    for p in paths:
        result = json.loads(Path(p).read_text())
        sites = sites or list(result["sites"])
        if list(result["sites"]) != sites:
            raise SystemExit(f"{p}: sites {result['sites']} differ from {sites}")
        runs += result["runs"]
    return sites, sorted(runs, key=lambda r: r["seed"])


def interval(values: list[float]) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "n/a"
    mean = float(np.mean(vals))
    if len(vals) < 2:
        return f"{mean:.3f}"
    half = stats.t.ppf(0.975, len(vals) - 1) * np.std(vals, ddof=1) / math.sqrt(len(vals))
    return f"{mean:.3f} [{mean - half:.3f}, {mean + half:.3f}]"


def site_mean(run: dict[str, Any], sites: list[str], method: str) -> float:
    return float(np.mean([run["sites"][s][method]["auroc"] for s in sites]))


def auroc_table(sites: list[str], runs: list[dict[str, Any]]) -> str:
    methods = list(runs[0]["sites"][sites[0]])
    lines = ["| site | n_test | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for s in sites:
        n_test = sorted({r["n_test"][s] for r in runs})
        n = f"{n_test[0]}" if len(n_test) == 1 else f"{n_test[0]}-{n_test[-1]}"
        lines.append(f"| {s} | {n} | "
                     + " | ".join(interval([r["sites"][s][m]["auroc"] for r in runs]) for m in methods) + " |")
    lines.append("| mean over sites | | " + " | ".join(interval([site_mean(r, sites, m) for r in runs])
                                                       for m in methods) + " |")
    return "\n".join(lines)


REFERENCES = ("global", "local")


def personalisation_table(sites: list[str], runs: list[dict[str, Any]]) -> str:
    """Each personalisation minus each reference, mean over sites per seed (t-interval over
    seeds), and in how many seeds it is ahead on each site."""
    methods = [m for m in runs[0]["sites"][sites[0]] if m not in REFERENCES]
    refs = [r for r in REFERENCES if r in runs[0]["sites"][sites[0]]]
    lines = ["| method | against | mean over sites, minus the reference | per seed | seeds ahead, per site |",
             "|---|---|---|---|---|"]
    for m in methods:
        for ref in refs:
            diff = [[r["sites"][s][m]["auroc"] - r["sites"][s][ref]["auroc"] for s in sites] for r in runs]
            per_seed = [float(np.mean(d)) for d in diff]
            ahead = [sum(d[i] > 0 for d in diff) for i in range(len(sites))]
            lines.append(f"| {m} | {ref} | {interval(per_seed)} | "
                         + ", ".join(f"{v:+.3f}" for v in per_seed) + " | "
                         + ", ".join(f"{s} {a}/{len(runs)}" for s, a in zip(sites, ahead, strict=True)) + " |")
    return "\n".join(lines)


def dp_table(sites: list[str], plain: list[dict[str, Any]], dp: list[dict[str, Any]]) -> str:
    by_seed = {r["seed"]: r for r in plain}
    pairs = [(by_seed[r["seed"]], r) for r in dp if r["seed"] in by_seed]
    methods = [m for m in dp[0]["sites"][sites[0]] if m in plain[0]["sites"][sites[0]]]
    lines = ["| method | without DP | with DP | cost (without - with) | cost per seed |", "|---|---|---|---|---|"]
    for m in methods:
        a = [site_mean(p, sites, m) for p, _ in pairs]
        b = [site_mean(d, sites, m) for _, d in pairs]
        cost = [x - y for x, y in zip(a, b, strict=True)]
        lines.append(f"| {m} | {interval(a)} | {interval(b)} | {interval(cost)} | "
                     + ", ".join(f"{c:+.3f}" for c in cost) + " |")
    if "epsilon" not in dp[0]["privacy"]:
        return "\n".join(lines)
    eps = [d["privacy"]["epsilon"] for _, d in pairs]
    per_site = dp[0]["privacy"].get("per_site", {})
    sigma = [v["noise_multiplier"] for v in per_site.values()]
    steps = [v["steps"] for v in per_site.values()]
    q = [v["sample_rate"] for v in per_site.values()]
    lines += ["", f"seeds {[d['seed'] for _, d in pairs]}; epsilon spent {min(eps):.3g}-{max(eps):.3g} at delta "
              f"{dp[0]['privacy']['delta']:g}; noise multipliers {min(sigma):.3g}-{max(sigma):.3g}, sample rates "
              f"{min(q):.3g}-{max(q):.3g}, {min(steps)}-{max(steps)} steps a site"]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", help="results.json of runs without DP (pooled over files)")
    p.add_argument("--dp", nargs="*", default=[], help="results.json of the same runs with DP")
    args = p.parse_args()
    sites, runs = load_runs(args.results)
    print(f"seeds {[r['seed'] for r in runs]}: test AUROC, mean [95% t-interval over seeds]\n")
    print(auroc_table(sites, runs))
    print("\npersonalised against the references, paired by seed:\n")
    print(personalisation_table(sites, runs))
    if args.dp:
        _, dp = load_runs(args.dp)
        print(f"\nwith DP, seeds {[r['seed'] for r in dp]}:\n")
        print(auroc_table(sites, dp))
        print("\nmean test AUROC over sites, paired by seed:\n")
        print(dp_table(sites, runs, dp))


if __name__ == "__main__":
    main()
