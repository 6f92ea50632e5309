"""Labelling on one and on two workers: speed-up, peak memory per process, identical labels.

    python benchmarks/bench_scaling.py                        # case118, 400 scenarios
    python benchmarks/bench_scaling.py --samples 200 --ray    # also the Ray backend, 2 workers

The same recipe (the stock case118 grid, a uniform load scale spread +-10% around the base
topology's critical scale, 5% per-load noise, a connectivity-safe N-1 outage on half of the
scenarios, Ipopt first: `bench_startup.RECIPE`) is built from scratch by `gridtune data build
--workers W` in a fresh process with an empty cache, once per configuration, one after the other.

Printed per configuration: the whole command's wall time and CPU time (summed over its
processes, Ray's included, as last sampled: up to 0.2 s of each process's end is missed); the
labelling phase's wall time (from
`calibration.json`, written just before the first scenario is labelled, to `manifest.json`); the
peak resident memory of the main process and of the largest other processes (the workers; on
Ray also its own services), sampled every 0.2 s; and,
against the one-worker build, the speed-up of the labelling phase and whether every scenario got
the same status, certificate and objective. Run it on a quiet machine: the speed-up of two
workers is bounded by the cores that are free.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_memory import sample_tree  # noqa: E402  (the process-tree sampler both benchmarks use)


def run_build(recipe: Path, out: Path, env: dict[str, str], workers: int,
              backend: str) -> tuple[float, float, int, list[int]]:
    """Run the build; (wall s, CPU s summed over its processes as last sampled, main process
    peak RSS bytes, each other process's peak RSS bytes)."""
    argv = [sys.executable, "-m", "gridtune.cli", "data", "build", str(recipe), "--out", str(out),
            "--workers", str(workers), "--backend", backend]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = sample_tree(proc)
    wall, cpu, peaks = time.perf_counter() - start, sum(seen.cpu_s.values()), seen.peaks
    if proc.returncode != 0:
        raise SystemExit(f"`gridtune data build --workers {workers} --backend {backend}` exited "
                         f"{proc.returncode}:\n{proc.stderr.read() if proc.stderr else ''}")
    main_peak = peaks.pop(proc.pid, 0)
    return wall, cpu, main_peak, sorted(peaks.values(), reverse=True)


def labelling_wall_s(out: Path) -> float:
    """Seconds from the calibration file (written before labelling) to the manifest (after)."""
    return (out / "manifest.json").stat().st_mtime - (out / "calibration.json").stat().st_mtime


def compare_labels(a: Path, b: Path) -> str:
    x = pd.read_parquet(a / "scenarios.parquet").set_index("scenario_id").sort_index()
    y = pd.read_parquet(b / "scenarios.parquet").set_index("scenario_id").sort_index()
    same = (x.status == y.status) & (x.certificate == y.certificate)
    both = x.objective.notna() & y.objective.notna()
    gap = np.abs(x.objective[both] - y.objective[both]) / np.maximum(1.0, np.abs(x.objective[both]))
    return (f"status and certificate identical on {int(same.sum())}/{len(x)}; objectives max "
            f"relative difference {gap.max() if len(gap) else 0.0:.1e} (n={int(both.sum())})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", default="case118", help="a stock case with a bracket in bench_labelling.BOUNDARY")
    p.add_argument("--samples", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ray", action="store_true", help="also build with the Ray backend, 2 workers")
    args = p.parse_args()

    import pandapower.networks as pn
    from bench_labelling import BOUNDARY, critical_scale
    from bench_startup import RECIPE

    from gridtune.grids.model import grid_from_net

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grid = grid_from_net(getattr(pn, args.case)(), args.case)
    crit = critical_scale(grid, BOUNDARY[args.case])
    configs = [(1, "local"), (2, "local")] + ([(2, "ray")] if args.ray else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="gridtune-scaling-") as tmp:
        root = Path(tmp)
        recipe = root / f"{args.case}_scaling.toml"
        recipe.write_text(RECIPE.format(case=args.case, samples=args.samples, seed=args.seed,
                                        lo=0.9 * crit, hi=1.1 * crit, solver="ipopt"))
        for workers, backend in configs:
            out = root / f"ds-{workers}-{backend}"
            env = {**os.environ, "GRIDTUNE_CACHE": str(root / f"cache-{workers}-{backend}")}
            wall, cpu, main_peak, others = run_build(recipe, out, env, workers, backend)
            rows.append((workers, backend, out, wall, cpu, labelling_wall_s(out), main_peak, others))
            print(f"built: {workers} worker(s), {backend}: {wall:.1f} s", flush=True)

        print(f"\n{args.case}: {args.samples} scenarios, load scale {0.9 * crit:.3f}-{1.1 * crit:.3f} "
              f"(critical {crit:.3f}), N-1 on half, Ipopt first; {psutil.cpu_count()} CPUs")
        print(f"{'workers':>7} {'backend':>7} {'wall s':>7} {'CPU s':>6} {'labelling s':>11} {'scen/s':>7} "
              f"{'speed-up':>8}  peak MiB: main / largest others")
        base = rows[0][5]
        for workers, backend, _, wall, cpu, lab, main_peak, others in rows:
            mib = " ".join(f"{o / 2**20:.0f}" for o in others[:workers]) or "-"
            print(f"{workers:>7} {backend:>7} {wall:>7.1f} {cpu:>6.1f} {lab:>11.1f} {args.samples / lab:>7.2f} "
                  f"{base / lab:>7.2f}x  {main_peak / 2**20:.0f} / {mib}")
        for workers, backend, out, *_ in rows[1:]:
            print(f"labels, {workers} workers ({backend}) vs 1 worker: {compare_labels(rows[0][2], out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
