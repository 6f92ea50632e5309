"""Whole-process labelling: `gridtune data build` from a cold cache against a naive pandapower loop,
and the start-up of the commands that only read a dataset, side by side in one run.

    python benchmarks/bench_startup.py                       # case118, 30 scenarios, one worker
    python benchmarks/bench_startup.py --case case14 --samples 30 --solver ipopt

What is timed (wall seconds and CPU seconds of the command and all its processes):
- `gridtune data build RECIPE --out DIR --workers 1` in a fresh process with an empty cache: Python
  start-up, imports, the grid, the topologies, every scenario labelled, the files written;
- the same command again (a rerun of a finished build: nothing to label);
- `gridtune data info DIR`;
- the naive loop on the SAME scenarios (`bench_labelling.naive_label`: per scenario deepcopy the
  stock pandapower net, set its loads and outage, `pandapower.runopp`), in this process after its
  imports, so its start-up is not counted against it.
The recipe is the stock grid (its own ratings, so the naive loop solves the same problem), a uniform
load scale spread +-10% around the base topology's critical scale (`bench_labelling.critical_scale`,
untimed), 5% per-load noise, a connectivity-safe N-1 branch outage on half of the scenarios.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

RECIPE = """case = "{case}"
samples = {samples}
seed = {seed}
[loads]
scale = [{lo:.4f}, {hi:.4f}]
noise = 0.05
[topology]
n_minus_1 = 0.5
candidates = 8
[labels]
solutions = true
solver = "{solver}"
"""


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _command(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall s, CPU s of the command and every process it waited for)."""
    cpu0, t0 = _cpu_children(), time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "gridtune.cli", *args], env=env, capture_output=True,
                         text=True)
    wall, cpu = time.perf_counter() - t0, _cpu_children() - cpu0
    if out.returncode != 0:
        raise SystemExit(f"`gridtune {' '.join(args)}` failed:\n{out.stderr}")
    return wall, cpu


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", default="case118", help="a stock case with a bracket in bench_labelling.BOUNDARY")
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--solver", default="ipopt", choices=["pips", "ipopt"],
                   help="AC-OPF solver tried first (default: ipopt, the recipes' default)")
    args = p.parse_args()

    import pandapower.networks as pn
    from bench_labelling import BOUNDARY, critical_scale, naive_label

    from gridtune.grids.build import draw, prepare_grid, prepare_topologies
    from gridtune.grids.model import grid_from_net
    from gridtune.grids.recipe import load_recipe

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = getattr(pn, args.case)()
        grid = grid_from_net(net, args.case)
    crit = critical_scale(grid, BOUNDARY[args.case])
    with tempfile.TemporaryDirectory() as tmp:
        recipe_path = Path(tmp) / f"{args.case}_startup.toml"
        recipe_path.write_text(RECIPE.format(case=args.case, samples=args.samples, seed=args.seed,
                                             lo=0.9 * crit, hi=1.1 * crit, solver=args.solver))
        out = Path(tmp) / "dataset"
        env = {**os.environ, "GRIDTUNE_CACHE": str(Path(tmp) / "cache")}
        build = _command(["data", "build", str(recipe_path), "--out", str(out), "--workers", "1"], env)
        rerun = _command(["data", "build", str(recipe_path), "--out", str(out), "--workers", "1"], env)
        info = _command(["data", "info", str(out)], env)

        recipe = load_recipe(recipe_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built_grid, _ = prepare_grid(recipe, out)
            topologies, _ = prepare_topologies(recipe, built_grid, out, workers=1, backend="local")
        scenarios = [draw(recipe, built_grid, topologies, i) for i in range(args.samples)]
        cpu0, t0 = time.process_time(), time.perf_counter()
        converged = sum(naive_label(net, grid, s)[0] for s in scenarios)
        naive = (time.perf_counter() - t0, time.process_time() - cpu0)

    print(f"{args.case}: {args.samples} scenarios, load scale {0.9 * crit:.3f}-{1.1 * crit:.3f} "
          f"(critical {crit:.3f}), N-1 on half, solver {args.solver}; naive runopp converged on {converged}")
    print(f"{'what':<50} {'wall s':>8} {'CPU s':>8}")
    rows = [("gridtune data build, cold (whole process)", build),
            ("naive runopp loop, same scenarios (no start-up)", naive),
            ("gridtune data build, rerun of the finished build", rerun),
            ("gridtune data info", info)]
    for name, (wall, cpu) in rows:
        print(f"{name:<50} {wall:8.2f} {cpu:8.2f}")
    print(f"whole build vs naive loop: {naive[0] / build[0]:.2f}x wall, {naive[1] / build[1]:.2f}x CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
