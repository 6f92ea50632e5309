"""How hard and how clean are the shipped recipes' datasets?

For each shipped recipe (gridtune/resources/datasets/*.toml), builds (or reuses) its dataset at `--samples` and prints
the share of each status, the unknown share (target < 5%), and the AUROC of the baseline every
model must beat — logistic regression on system totals, 5-fold CV — against the naive-sampling
reference (same grid, stock ratings, fixed load range 0.6-1.6, no calibration), built side by side
at the same size. Target: baseline AUROC <= 0.90 on every shipped recipe.

    python benchmarks/bench_datasets.py --cases case9 case14 case30 --samples 300
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from gridtune.grids.build import build_dataset, default_directory
from gridtune.grids.recipe import LimitSpec, LoadSpec, recipe_for


def build(recipe, workers):
    start = time.perf_counter()
    directory = default_directory(recipe)
    build_dataset(recipe, directory, workers=workers, progress=False)
    manifest = json.loads((directory / "manifest.json").read_text())
    return manifest, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["case9", "case14", "case24_ieee_rts", "case30",
                                                     "case39", "case57", "case118", "case300"])
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--no-naive", action="store_true", help="skip the naive-sampling reference")
    args = ap.parse_args()
    rows = []
    for case in args.cases:
        shipped = recipe_for(case, samples=args.samples)
        m, wall = build(shipped, args.workers)
        naive_auroc = None
        if not args.no_naive:
            naive = dataclasses.replace(shipped, loads=LoadSpec(scale=(0.6, 1.6), noise=0.05),
                                        limits=LimitSpec())
            nm, _ = build(naive, args.workers)
            naive_auroc = (nm.get("baseline") or {}).get("auroc")
        c, n = m["counts"], m["samples"]
        auroc = (m.get("baseline") or {}).get("auroc")
        rows.append((case, n, c["feasible"] / n, c["infeasible"] / n, c["unknown"] / n,
                     c["error"] / n, auroc, naive_auroc, m["solve_time_s"]["mean"], wall))
        print(json.dumps({"case": case, "counts": c, "baseline_auroc": auroc,
                          "naive_baseline_auroc": naive_auroc,
                          "calibration": {k: v for k, v in m["calibration"].items() if k != "rejected"}}))
    print()
    print(f"{'case':<16}{'n':>6}{'feas':>7}{'infeas':>8}{'unknown':>9}{'error':>7}"
          f"{'AUROC totals':>14}{'naive':>8}{'s/label':>9}{'wall s':>8}")
    for r in rows:
        fmt = lambda v: f"{v:.3f}" if v is not None else "n/a"  # noqa: E731
        print(f"{r[0]:<16}{r[1]:>6}{r[2]:>7.2f}{r[3]:>8.2f}{r[4]:>9.3f}{r[5]:>7.3f}"
              f"{fmt(r[6]):>14}{fmt(r[7]):>8}{r[8]:>9.3f}{r[9]:>8.0f}")
    ok = all(r[6] is not None and r[6] <= 0.90 for r in rows)
    print(f"\ntarget baseline AUROC <= 0.90 on every recipe: {'met' if ok else 'NOT met'}; "
          f"unknown < 5%: {'met' if all(r[4] < 0.05 for r in rows) else 'NOT met'}")


if __name__ == "__main__":
    main()
