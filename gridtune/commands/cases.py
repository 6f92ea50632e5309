"""`gridtune cases [GRID ...] [--json]`: the available grids and their nominal AC-OPF."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cases", help="list the default IEEE cases (or given grid files) with their "
                                     "nominal AC-OPF against MATPOWER's published objective")
    p.add_argument("grids", nargs="*", metavar="GRID",
                   help="case names or .json / .m files (default: the eight default cases)")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    p.add_argument("--refresh", action="store_true", help="re-solve instead of using the cache")
    p.add_argument("--workers", type=int, default=None,
                   help="processes for uncached solves (default: all cores)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from gridtune.grids.cases import case_table

    rows = case_table(list(args.grids) or None, refresh=args.refresh, workers=args.workers)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
    return 0


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Human-readable table of `case_info` rows."""
    header = ("name", "buses", "branches", "gens", "AC-OPF", "objective $/h", "MATPOWER $/h",
              "diff %", "repairs", "solve s")
    body = [(r["name"], str(r["buses"]), str(r["branches"]), str(r["generators"]),
             "converged" if r["converged"] else "FAILED", _num(r["objective"], ",.2f"),
             _num(r["published_objective"], ",.2f"),
             _num(None if r["relative_difference"] is None else 100 * r["relative_difference"], "+.3f"),
             str(r["repairs"]), _num(r["solve_time_s"], ".1f")) for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths)))
             for line in (header, *body)]
    failed = [r for r in rows if not r["converged"]]
    lines += [f"{r['name']}: {r['message']}" for r in failed]
    return "\n".join(lines)
