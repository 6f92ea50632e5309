"""Infeasibility certificates: how many scenarios stay `unknown`, and at what labelling cost, with
and without one certificate, side by side on the same scenarios of shipped recipes.

Paths (each the recipe's own `[labels]` keys, same scenarios, same worker pool), for
`--certificate cycles` (default):
- "without cycles": `[labels] cycles = false` (SOC, both AC solvers, the SDP where the recipe
  asks for it): labelling as before cycle certificates.
- "with cycles": the recipe as shipped (`cycles = true`): the cycle relaxation runs where SOC is
  feasible and the first AC solver failed, before the second solver.
For `--certificate obbt`: "without obbt" is the recipe with `obbt = false`, "with obbt" the same
with `obbt = true` (bound tightening where every other step left the scenario open).

Prints per path the status and certificate counts, the unknown share, labelled scenarios per
core-second (scenarios / summed per-scenario labelling time, robust to machine load), and the
mean time of the scenarios each certificate settled; then the status agreement where both paths
decide (a cycle certificate must never contradict a re-checked AC solution) and every scenario
whose status differs. The grid and the calibrated topologies come from the recipe's dataset
directory (built there first if missing).

    python benchmarks/bench_certificates.py --recipes case30,case118 --samples 1000 --workers 2
    python benchmarks/bench_certificates.py --recipes case30 --samples 1000 --certificate obbt
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from typing import Any

import numpy as np
from bench_labelling import _decided

from gridtune.grids.build import (
    default_directory,
    draw,
    labeller_for,
    prepare_grid,
    prepare_topologies,
)
from gridtune.grids.labels import Label
from gridtune.grids.recipe import Recipe, recipe_for
from gridtune.parallel import run_tasks


def _label_task(item: tuple[Recipe, Any, tuple, int]) -> Label:
    """Label scenario `sid` of `recipe` (worker side; the build's Labeller for its `[labels]`)."""
    recipe, grid, topologies, sid = item
    warnings.simplefilter("ignore")
    return labeller_for(grid, recipe.labels).label(draw(recipe, grid, topologies, sid))


def label_all(recipe: Recipe, grid: Any, topologies: tuple, samples: int, workers: int
              ) -> tuple[list[Label], float]:
    import bench_certificates  # this file as a module: worker processes cannot import __main__

    items = [(recipe, grid, topologies, sid) for sid in range(samples)]
    start = time.perf_counter()
    out = dict(run_tasks(bench_certificates._label_task, items, workers=workers,
                         chunksize=max(1, samples // (8 * workers))))
    return [out[i] for i in range(samples)], time.perf_counter() - start


CERTIFICATE_NAMES = {"cycles": "cycle-infeasible", "obbt": "obbt-infeasible"}


def run_recipe(name: str, samples: int, workers: int, solver: str | None,
               certificate: str = "cycles") -> None:
    shipped = recipe_for(name)
    if solver is not None:
        shipped = dataclasses.replace(shipped, labels=dataclasses.replace(shipped.labels, solver=solver))
    before = dataclasses.replace(shipped, labels=dataclasses.replace(shipped.labels, **{certificate: False}))
    shipped = dataclasses.replace(shipped, labels=dataclasses.replace(shipped.labels, **{certificate: True}))
    without, with_ = f"without {certificate}", f"with {certificate}"
    directory = default_directory(before)
    directory.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    grid, _ = prepare_grid(before, directory)
    topologies, _ = prepare_topologies(before, grid, directory, workers=workers, backend="local")
    print(f"\n== recipe {name}: {grid.n_bus} buses, {len(topologies)} calibrated topologies "
          f"({time.perf_counter() - start:.0f} s); scenarios 0..{samples - 1}, {workers} workers; "
          f"labels solver={shipped.labels.solver} sdp={shipped.labels.sdp} "
          f"solutions={shipped.labels.solutions} cycles={shipped.labels.cycles}")
    results: dict[str, list[Label]] = {}
    for tag, recipe in ((without, before), (with_, shipped)):
        labels, wall = label_all(recipe, grid, tuple(topologies), samples, workers)
        results[tag] = labels
        busy = sum(lb.solve_time_s for lb in labels)
        counts: dict[str, int] = {}
        times: dict[str, list[float]] = {}
        for lb in labels:
            counts[lb.status] = counts.get(lb.status, 0) + 1
            times.setdefault(lb.certificate, []).append(lb.solve_time_s)
        unknown = counts.get("unknown", 0)
        print(f"{tag:15s} wall {wall:7.1f} s  {samples / busy:6.2f} labelled /core-s  unknown "
              f"{unknown}/{samples} = {100 * unknown / samples:.2f}%  statuses {dict(sorted(counts.items()))}")
        print(" " * 16 + "by certificate: " + ", ".join(
            f"{k} {len(v)} ({np.mean(v):.3f} s)" for k, v in sorted(times.items())))
    a, b = results[without], results[with_]
    both = [i for i in range(samples) if _decided(a[i]) and _decided(b[i])]
    same = sum(a[i].status == b[i].status for i in both)
    cert = CERTIFICATE_NAMES[certificate]
    print(f"statuses identical on {same}/{len(both)} scenarios where both paths decide; "
          f"unknown -> infeasible ({cert}): "
          f"{sum(a[i].status == 'unknown' and b[i].certificate == cert for i in range(samples))}")
    for i in range(samples):
        if a[i].status != b[i].status and not (a[i].status == "unknown" and b[i].status == "infeasible"):
            print(f"  scenario {i}: {without} {a[i].status}/{a[i].certificate}, {with_} "
                  f"{b[i].status}/{b[i].certificate}; reasons: {a[i].reason} | {b[i].reason}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", default="case30,case118",
                   help="comma-separated shipped recipes (default: case30,case118)")
    p.add_argument("--samples", type=int, default=500, help="scenarios per recipe (default: 500)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    p.add_argument("--solver", choices=("ipopt", "pips"), default=None,
                   help="first AC solver for both paths (default: the recipe's)")
    p.add_argument("--certificate", choices=tuple(CERTIFICATE_NAMES), default="cycles",
                   help="the `[labels]` key compared off against on (default: cycles)")
    args = p.parse_args()
    for name in filter(None, args.recipes.split(",")):
        run_recipe(name, args.samples, args.workers, args.solver, args.certificate)


if __name__ == "__main__":
    main()
