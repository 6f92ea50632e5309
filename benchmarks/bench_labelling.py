"""Labelling throughput: the Ipopt and PIPS paths of gridtune's `Labeller` and a naive pandapower
loop, side by side on the same scenarios, in one run.

Methods: "naive" (per scenario, deepcopy the pandapower net, set its loads and outage, call
`pandapower.runopp`, status = converged or not; stock grids only), and `Labeller(grid,
solutions=True, solver=...)` with `solver = "pips"` and `"ipopt"` (AC-OPF solution of every
feasible scenario; the other solver is the second solver), one worker each; optionally the Ipopt
path on several workers through `gridtune.parallel.run_tasks`.

Scenarios (the SAME for every method):
- `--cases`: a stock grid, uniform load scale spread +-10% around the critical uniform scale of
  the base topology (bisection inside the bracket in `BOUNDARY`, untimed), 5% per-load noise, a
  random connectivity-safe N-1 branch outage on half; `--scale lo,hi` draws from a fixed range.
- `--recipes`: scenarios of a shipped recipe (its re-rated grid, its calibrated topologies, its
  `[labels]` keys); grid and calibration are cached under `--data-dir`.

Steady state: each labeller first labels `--warmup` other scenarios (untimed), then the timed
ones. Prints labelled scenarios per core-second (CPU time of the process, all its threads: robust
on a shared machine) and per wall second, ratios against the naive loop and the PIPS path, the
status agreement of the two paths where both decide (feasible or infeasible), the relative
objective differences, and every disagreement with the side that holds a proof (a re-checked
point or a relaxation certificate).

    python benchmarks/bench_labelling.py --samples 200 --cases case118 --recipes case118,case57,case300
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
from gridtune.parallel import run_tasks

BOUNDARY = {"case14": (1.5, 2.0), "case57": (1.0, 1.6), "case118": (2.0, 2.5), "case300": (1.0, 1.3)}


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


def _label_task(item: tuple[GridModel, str, Scenario]) -> Label:
    grid, solver, scenario = item
    key = f"{grid.name}-{solver}"
    if key not in _WORKER:
        _WORKER[key] = Labeller(grid, solutions=True, dc=False, solver=solver)
    return _WORKER[key].label(scenario)


def _timed(labeller: Labeller, scenarios: list[Scenario]) -> tuple[list[Label], float, float]:
    """Labels, wall seconds and CPU seconds of this process (all its threads)."""
    w0, c0 = time.perf_counter(), time.process_time()
    labels = [labeller.label(s) for s in scenarios]
    return labels, time.perf_counter() - w0, time.process_time() - c0


def _decided(label: Label) -> bool:
    return label.status in ("feasible", "infeasible")


def compare(grid: GridModel, scenarios: list[Scenario], *, naive_net: Any | None, warmup: int,
            dc: bool, sdp: bool, workers: int) -> None:
    """Label `scenarios` with every method, one worker each, and print rates and agreement.

    Steady state: each labeller first labels `warmup` other scenarios of the same kind (untimed:
    cvxpy compilation, Ipopt structures and the warm-start anchors they create), then the timed
    ones. Rates per core-second use the process's CPU time (robust on a shared machine); wall
    rates are printed beside them.
    """
    samples = len(scenarios)
    warm, timed = scenarios[:warmup], scenarios[warmup:]
    n = len(timed)
    rows: list[tuple[str, int, float, float]] = []
    naive_ok = None
    if naive_net is not None:
        NAIVE_TIMES.clear()
        w0, c0 = time.perf_counter(), time.process_time()
        naive = [naive_label(naive_net, grid, s) for s in timed]
        rows.append(("naive runopp loop", 1, time.perf_counter() - w0, time.process_time() - c0))
        naive_ok = np.array([c for c, _ in naive])
    results: dict[str, list[Label]] = {}
    labellers: dict[str, Labeller] = {}
    for solver in ("pips", "ipopt"):
        lab = Labeller(grid, solutions=True, dc=dc, sdp=sdp, solver=solver)
        for s in warm:
            lab.label(s)
        anchors0 = lab.ipopt.anchor_solves if lab._ipopt is not None else 0
        labels, wall, cpu = _timed(lab, timed)
        anchors = (lab.ipopt.anchor_solves if lab._ipopt is not None else 0) - anchors0
        rows.append((f"gridtune solver={solver}", 1, wall, cpu))
        results[solver], labellers[solver] = labels, lab
        print(f"  {solver}: AC-OPF solutions by pips {lab.solved_by['pips']}, ipopt "
              f"{lab.solved_by['ipopt']} ({lab.solved_by['second']} by the second solver, warm-up "
              f"included); Ipopt warm-start anchors solved in the timed part: {anchors}; "
              f"settled by a kept Farkas ray: SOC {lab.soc.settled_by_rays}, cycle relaxation "
              f"{lab._cycles.settled_by_rays if lab._cycles is not None else 0} (warm-up included)")
    if workers > 1:
        w0 = time.perf_counter()
        import bench_labelling  # this file as a module: worker processes cannot import __main__

        items = [(grid, "ipopt", s) for s in scenarios]
        for _ in run_tasks(bench_labelling._label_task, items, workers=workers, chunksize=max(1, samples // (4 * workers))):
            pass
        rows.append((f"gridtune solver=ipopt, {workers} workers (all {samples}, cold)", workers,
                     time.perf_counter() - w0, float("nan")))

    # the multi-worker row labels all scenarios (warm-up ones too) from fresh workers
    count = {tag: n if cpu == cpu else samples for tag, w, wall, cpu in rows}
    rate = {tag: n / cpu if cpu == cpu else samples / (wall * w) for tag, w, wall, cpu in rows}
    print(f"{'method':44s} {'workers':>7s} {'wall s':>8s} {'CPU s':>8s} {'/core-s':>8s} "
          f"{'/wall-s':>8s} {'x naive':>8s} {'x pips':>7s}")
    base_naive = rate.get("naive runopp loop")
    base_pips = rate["gridtune solver=pips"]
    for tag, w, wall, cpu in rows:
        r = rate[tag]
        print(f"{tag:44s} {w:7d} {wall:8.2f} {cpu:8.2f} {r:8.2f} {count[tag] / wall:8.2f} "
              f"{(r / base_naive if base_naive else float('nan')):8.2f} {r / base_pips:7.2f}")

    for solver, labels in results.items():
        counts: dict[str, int] = {}
        for lb in labels:
            counts[f"{lb.status}/{lb.certificate}"] = counts.get(f"{lb.status}/{lb.certificate}", 0) + 1
        by: dict[str, list[float]] = {}
        for lb in labels:
            by.setdefault(lb.certificate, []).append(lb.solve_time_s)
        print(f"  {solver} statuses: {dict(sorted(counts.items()))}")
        print(f"  {solver} mean wall time per scenario: "
              + ", ".join(f"{k} {np.mean(v):.3f} s (n={len(v)})" for k, v in sorted(by.items())))

    # ---- agreement between the PIPS and the Ipopt paths ----
    pips, ipopt = results["pips"], results["ipopt"]
    both = [i for i in range(n) if _decided(pips[i]) and _decided(ipopt[i])]
    same = [i for i in both if pips[i].status == ipopt[i].status]
    gaps = [abs(ipopt[i].objective - pips[i].objective) / max(1.0, abs(pips[i].objective))
            for i in range(n) if pips[i].objective is not None and ipopt[i].objective is not None]
    share = len(same) / len(both) if both else float("nan")
    print(f"statuses pips vs ipopt: identical on {len(same)}/{len(both)} scenarios where both decide "
          f"({100 * share:.2f}%); unknown: pips {sum(lb.status == 'unknown' for lb in pips)}, "
          f"ipopt {sum(lb.status == 'unknown' for lb in ipopt)}")
    if gaps:
        print(f"objectives (both with an AC-OPF solution, n={len(gaps)}): relative difference max "
              f"{max(gaps):.2e}, median {np.median(gaps):.2e}, above 1e-4: {sum(g > 1e-4 for g in gaps)}")
    for i in range(n):
        a, b = pips[i], ipopt[i]
        if a.status != b.status or (a.objective is not None and b.objective is not None
                                    and abs(a.objective - b.objective) > 1e-4 * max(1.0, abs(a.objective))):
            s = timed[i]
            print(f"  scenario {s.scenario_id} (scale {s.load_scale:.3f}, out {s.branch_out}/{s.gen_out}): "
                  f"pips {a.status}/{a.certificate} {a.objective}, ipopt {b.status}/{b.certificate} "
                  f"{b.objective}; {_explain(grid, s, a, b)}")

    if naive_ok is not None:
        ours = np.array([lb.status == "feasible" for lb in ipopt])
        print(f"naive: {int(naive_ok.sum())} converged, {int((~naive_ok).sum())} not; feasible "
              f"agreement with the ipopt path {int((ours == naive_ok).sum())}/{n}")
        for i, (lb, (ok, sol)) in enumerate(zip(ipopt, naive, strict=False)):
            if (lb.status == "feasible") == ok:
                continue
            if ok:
                bad = recheck(grid, timed[i], sol)
                side = ("gridtune (naive point fails re-check: " + ", ".join(bad) + ")") if bad else \
                    f"naive (its point re-checks; gridtune said {lb.status}/{lb.certificate})"
            else:
                side = ("gridtune (re-checked feasible point, " + lb.certificate + ")"
                        if lb.status == "feasible" else "neither is proven")
            print(f"  scenario {timed[i].scenario_id}: naive {'feasible' if ok else 'failed'}, "
                  f"gridtune {lb.status}: right = {side}")


def _explain(grid: GridModel, s: Scenario, a: Label, b: Label) -> str:
    """Which side holds a proof when the two paths disagree."""
    proofs = []
    for name, lb in (("pips", a), ("ipopt", b)):
        if lb.status == "feasible":
            proofs.append(f"{name}'s point re-checked ({lb.certificate})")
        elif lb.status == "infeasible":
            proofs.append(f"{name} has a relaxation certificate ({lb.certificate})")
    if a.status == b.status:
        return "same status, different local optima (both re-checked)"
    return "; ".join(proofs) or "neither side proves anything"


def run_case(name: str, samples: int, workers: int, seed: int,
             scale: tuple[float, float] | None, warmup: int) -> None:
    import pandapower.networks as pn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = getattr(pn, name)()
        grid = grid_from_net(net, name)  # also leaves net._pd2ppc_lookups for the naive loop
    if scale is None:
        crit = critical_scale(grid, BOUNDARY[name])
        scale = (0.9 * crit, 1.1 * crit)
        print(f"\n{name}: critical uniform load scale of the base topology {crit:.3f}")
    scenarios = make_scenarios(grid, samples + warmup, scale, seed)
    scenarios = scenarios[samples:] + scenarios[:samples]  # warm-up first, timed ones after
    print(f"== {name} (stock ratings): {samples} timed scenarios after {warmup} warm-up ones, "
          f"load scale {scale[0]:.3f}-{scale[1]:.3f}, N-1 on half, 5% noise")
    compare(grid, scenarios, naive_net=net, warmup=warmup, dc=False, sdp=False, workers=workers)


def run_recipe(name: str, samples: int, warmup: int, data_dir: str | None, workers: int) -> None:
    """Scenarios of a shipped recipe (re-rated grid, calibrated topologies, its [labels] keys)."""
    from pathlib import Path

    from gridtune.grids.build import draw, prepare_grid, prepare_topologies
    from gridtune.grids.recipe import recipe_for

    recipe = recipe_for(name)
    directory = Path(data_dir or ".") / f"bench-{name}"
    directory.mkdir(parents=True, exist_ok=True)
    w0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grid, _ = prepare_grid(recipe, directory)
        topologies, _ = prepare_topologies(recipe, grid, directory, workers=1, backend="local")
    print(f"\n== recipe {name}: grid and {len(topologies)} calibrated topologies in "
          f"{time.perf_counter() - w0:.1f} s (cached in {directory}); {samples} timed scenarios "
          f"after {warmup} warm-up ones; labels dc={recipe.labels.dc} sdp={recipe.labels.sdp}")
    scenarios = [draw(recipe, grid, topologies, i) for i in range(samples + warmup)]
    scenarios = scenarios[samples:] + scenarios[:samples]
    compare(grid, scenarios, naive_net=None, warmup=warmup, dc=recipe.labels.dc,
            sdp=recipe.labels.sdp, workers=workers)


def main() -> None:
    import logging

    logging.getLogger("pandapower").setLevel(logging.ERROR)  # runopp's per-call limit notes
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=40, help="timed scenarios per case (default: 40)")
    p.add_argument("--warmup", type=int, default=20,
                   help="untimed scenarios labelled first by each labeller (default: 20)")
    p.add_argument("--cases", default="case14,case118",
                   help=f"comma-separated stock grids: {', '.join(BOUNDARY)} (empty: none)")
    p.add_argument("--recipes", default="",
                   help="comma-separated shipped recipes, e.g. case118,case57 (default: none)")
    p.add_argument("--data-dir", default=None,
                   help="where recipe grids and calibrations are cached (default: current dir)")
    p.add_argument("--workers", type=int, default=1,
                   help="also time the Ipopt path on this many workers (default: 1, skipped)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", default=None,
                   help="fixed load-scale range `lo,hi` (default: +-10%% around the critical scale)")
    args = p.parse_args()
    scale = tuple(float(x) for x in args.scale.split(",")) if args.scale else None
    for name in filter(None, args.cases.split(",")):
        if name not in BOUNDARY:
            raise SystemExit(f"unknown case `{name}`; valid: {', '.join(f'`{c}`' for c in BOUNDARY)}")
        run_case(name, args.samples, args.workers, args.seed, scale, args.warmup)  # type: ignore[arg-type]
    for name in filter(None, args.recipes.split(",")):
        run_recipe(name, args.samples, args.warmup, args.data_dir, args.workers)


if __name__ == "__main__":
    main()
