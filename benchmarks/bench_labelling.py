"""Labelling throughput: gridtune's `Labeller` against a naive pandapower loop, side by side.

Baseline ("naive"): per scenario, deepcopy the pandapower net, set its loads and outage, call
`pandapower.runopp`, status = converged or not. gridtune: `Labeller(grid, solutions=True)` (AC-OPF
solution of every feasible scenario) and `solutions=False` (labels only), one worker each, then
`solutions=True` on all workers through `gridtune.parallel.run_tasks`.

Scenarios (the SAME for every method): uniform load scale spread +-10% around the critical
uniform scale of the base topology (found by bisection inside the bracket docs/data.md gives,
case14: 1.5-2.0, case118: 2.0-2.5, untimed), 5% per-load noise, a random connectivity-safe N-1
branch outage on half. `--scale lo,hi` draws from a fixed range instead.

Prints samples per core-second, the speed ratio against the naive loop and the label agreement
(feasible or not); where they disagree it says which side is right: a gridtune `feasible` carries
a re-checked AC point, a gridtune `infeasible` a relaxation certificate, a naive `feasible` is
re-checked here with `gridtune.grids.opf.recheck`.

    python benchmarks/bench_labelling.py --samples 40 --cases case14,case118 --workers 2
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings
from typing import Any

import numpy as np

from gridtune.grids.labeller import Labeller
from gridtune.grids.labels import Label
from gridtune.grids.model import GridModel, grid_from_net
from gridtune.grids.opf import AcOpfResult, recheck
from gridtune.grids.scenarios import Scenario, connectivity_safe_branches
from gridtune.parallel import default_workers, run_tasks

BOUNDARY = {"case14": (1.5, 2.0), "case118": (2.0, 2.5)}


def critical_scale(grid: GridModel, bracket: tuple[float, float], steps: int = 6) -> float:
    """Uniform load scale where the base topology stops being feasible (bisection, untimed)."""
    lab = Labeller(grid, solutions=False, dc=False)
    lo, hi = bracket
    # widen the bracket downwards if it does not hold the boundary
    while lab.label(Scenario(-1, lo, grid.pd_mw * lo, grid.qd_mvar * lo)).status != "feasible":
        lo, hi = 0.8 * lo, lo
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        ok = lab.label(Scenario(-1, mid, grid.pd_mw * mid, grid.qd_mvar * mid)).status == "feasible"
        lo, hi = (mid, hi) if ok else (lo, mid)
    return 0.5 * (lo + hi)


def make_scenarios(grid: GridModel, n: int, scale: tuple[float, float], seed: int) -> list[Scenario]:
    rng = np.random.default_rng(seed)
    safe = connectivity_safe_branches(grid)
    out = []
    for i in range(n):
        s = rng.uniform(*scale)
        factor = s * np.clip(1 + 0.05 * rng.standard_normal(grid.n_bus), 0, None)
        branch_out = (int(rng.choice(safe)),) if i % 2 else ()
        out.append(Scenario(i, s, grid.pd_mw * factor, grid.qd_mvar * factor, branch_out=branch_out))
    return out


# ---- naive baseline ------------------------------------------------------------------------------
def naive_label(net: Any, grid: GridModel, scenario: Scenario) -> tuple[bool, AcOpfResult | None]:
    """deepcopy + set loads + runopp; returns (converged, solution as AcOpfResult or None)."""
    import pandapower as pp

    start = time.perf_counter()
    try:
        return _naive(pp, net, grid, scenario)
    finally:
        NAIVE_TIMES.append(time.perf_counter() - start)


NAIVE_TIMES: list[float] = []


def _naive(pp: Any, net: Any, grid: GridModel, scenario: Scenario) -> tuple[bool, AcOpfResult | None]:
    n = copy.deepcopy(net)
    lookup = n._pd2ppc_lookups["bus"] if n._pd2ppc_lookups.get("bus") is not None else None
    internal = lookup[n.load.bus.values]
    nominal_pd = grid.pd_mw[internal]
    factor = np.where(nominal_pd != 0, scenario.pd_mw[internal] / np.where(nominal_pd != 0, nominal_pd, 1), 0)
    n.load["p_mw"] = n.load.p_mw.values * factor
    n.load["q_mvar"] = n.load.q_mvar.values * factor
    n_line = len(n.line)
    for k in scenario.branch_out:  # pandapower orders ppc branches: lines, then transformers
        if k < n_line:
            n.line.loc[n.line.index[k], "in_service"] = False
        else:
            n.trafo.loc[n.trafo.index[k - n_line], "in_service"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pp.runopp(n)
        except Exception:  # OPFNotConverged and friends: the naive loop's "infeasible"
            return False, None
    order = np.argsort(lookup[n.bus.index.values])
    pg = np.r_[n.res_ext_grid.p_mw.values, n.res_gen.p_mw.values]
    qg = np.r_[n.res_ext_grid.q_mvar.values, n.res_gen.q_mvar.values]
    sol = AcOpfResult(True, float(n.res_cost), pg, qg, n.res_bus.vm_pu.values[order],
                      n.res_bus.va_degree.values[order], np.zeros(grid.n_branch),
                      np.zeros(grid.n_branch), 0, 0.0)
    return True, sol


# ---- gridtune, in worker processes ---------------------------------------------------------------
_WORKER: dict[str, Labeller] = {}


def _label_task(item: tuple[GridModel, bool, Scenario]) -> Label:
    grid, solutions, scenario = item
    key = f"{grid.name}-{solutions}"
    if key not in _WORKER:
        _WORKER[key] = Labeller(grid, solutions=solutions, dc=False)
    return _WORKER[key].label(scenario)


def run_case(name: str, samples: int, workers: int, seed: int,
             scale: tuple[float, float] | None) -> None:
    import pandapower.networks as pn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = getattr(pn, name)()
        grid = grid_from_net(net, name)  # also leaves net._pd2ppc_lookups for the naive loop
    if scale is None:
        crit = critical_scale(grid, BOUNDARY[name])
        scale = (0.9 * crit, 1.1 * crit)
        print(f"\n{name}: critical uniform load scale of the base topology {crit:.3f}")
    scenarios = make_scenarios(grid, samples, scale, seed)
    print(f"== {name}: {samples} scenarios, load scale {scale[0]:.3f}-{scale[1]:.3f}, N-1 on half, "
          "5% noise")

    NAIVE_TIMES.clear()
    t0 = time.perf_counter()
    naive = [naive_label(net, grid, s) for s in scenarios]
    t_naive = time.perf_counter() - t0
    naive_ok = np.array([c for c, _ in naive])

    rows = [("naive runopp loop", 1, t_naive, None)]
    results: dict[str, list[Label]] = {}
    for solutions in (True, False):
        t0 = time.perf_counter()  # building the cvxpy problems is part of the cost
        lab = Labeller(grid, solutions=solutions, dc=False)
        labels = [lab.label(s) for s in scenarios]
        tag = f"gridtune solutions={solutions}"
        rows.append((tag, 1, time.perf_counter() - t0, labels))
        results[tag] = labels
    if workers > 1:
        t0 = time.perf_counter()
        items = [(grid, True, s) for s in scenarios]
        par: list[Label | None] = [None] * len(items)
        for i, lab_ in run_tasks(_label_task, items, workers=workers, chunksize=max(1, samples // (4 * workers))):
            par[i] = lab_
        rows.append((f"gridtune solutions=True, {workers} workers", workers, time.perf_counter() - t0, par))

    base_rate = samples / t_naive
    print(f"{'method':42s} {'workers':>7s} {'wall s':>8s} {'samples/core-s':>15s} {'ratio':>6s}  agree")
    for tag, w, wall, labels in rows:
        rate = samples / (wall * w)
        agree = "-"
        if labels is not None:
            ours = np.array([lb.status == "feasible" for lb in labels])
            agree = f"{int((ours == naive_ok).sum())}/{samples}"
        print(f"{tag:42s} {w:7d} {wall:8.2f} {rate:15.3f} {rate / base_rate:6.2f}  {agree}")

    labels = results["gridtune solutions=True"]
    counts: dict[str, int] = {}
    for lb in labels:
        counts[f"{lb.status}/{lb.certificate}"] = counts.get(f"{lb.status}/{lb.certificate}", 0) + 1
    print("gridtune (solutions=True) statuses:", dict(sorted(counts.items())))
    print(f"naive: {int(naive_ok.sum())} converged, {int((~naive_ok).sum())} not")
    nt = np.array(NAIVE_TIMES)
    print(f"mean time per scenario, naive: converged {nt[naive_ok].mean() if naive_ok.any() else 0:.3f} s, "
          f"failed {nt[~naive_ok].mean() if (~naive_ok).any() else 0:.3f} s")
    for tag in results:
        by: dict[str, list[float]] = {}
        for lb in results[tag]:
            by.setdefault(lb.certificate, []).append(lb.solve_time_s)
        print(f"mean time per scenario, {tag}: "
              + ", ".join(f"{k} {np.mean(v):.3f} s (n={len(v)})" for k, v in sorted(by.items())))
    for i, (lb, (ok, sol)) in enumerate(zip(labels, naive, strict=False)):
        if (lb.status == "feasible") == ok:
            if ok and lb.objective is not None and sol is not None:
                gap = abs(lb.objective - sol.objective) / max(1.0, abs(sol.objective))
                if gap > 1e-4:
                    print(f"  scenario {i}: both feasible, objectives differ by {gap:.2e}")
            continue
        if ok:
            bad = recheck(grid, scenarios[i], sol)
            side = ("gridtune (naive point fails re-check: " + ", ".join(bad) + ")") if bad else \
                f"naive (its point re-checks; gridtune said {lb.status}/{lb.certificate})"
        else:
            side = ("gridtune (re-checked feasible point, " + lb.certificate + ")"
                    if lb.status == "feasible" else "neither is proven")
        print(f"  scenario {i} (scale {scenarios[i].load_scale:.3f}, out {scenarios[i].branch_out}): "
              f"naive {'feasible' if ok else 'failed'}, gridtune {lb.status}: right = {side}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=40, help="scenarios per case (default: 40)")
    p.add_argument("--cases", default="case14,case118", help="comma-separated: case14, case118")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="workers for the parallel run (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", default=None,
                   help="fixed load-scale range `lo,hi` (default: +-10%% around the critical scale)")
    args = p.parse_args()
    scale = tuple(float(x) for x in args.scale.split(",")) if args.scale else None
    for name in args.cases.split(","):
        if name not in BOUNDARY:
            raise SystemExit(f"unknown case `{name}`; valid: {', '.join(f'`{c}`' for c in BOUNDARY)}")
        run_case(name, args.samples, args.workers, args.seed, scale)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
