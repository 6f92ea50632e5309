"""Read and write MATPOWER case files (`.m`, format version 2) without MATLAB or extra packages.

A MATPOWER case file is a MATLAB function that assigns `mpc.baseMVA` and the numeric matrices
`mpc.bus`, `mpc.gen`, `mpc.branch` and (for an OPF) `mpc.gencost`. Only these are read; cell
arrays such as `mpc.bus_name` and user fields are skipped. Numbers keep MATPOWER's external bus
numbering; pandapower's converter renumbers.

Format: R. D. Zimmerman, C. E. Murillo-Sanchez, "MATPOWER User's Manual", Appendix B (caseformat).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from gridtune.errors import CaseError

# Minimum columns MATPOWER requires (User's Manual, tables B-1 to B-4); result columns are optional.
MIN_COLUMNS = {"bus": 13, "gen": 10, "branch": 13, "gencost": 5}
REQUIRED = ("baseMVA", "bus", "gen", "branch", "gencost")
PLACEHOLDER_BASE_KV = 100.0  # for buses with base kV 0 (allowed by MATPOWER, not by pandapower)

_MATRIX = re.compile(r"mpc\.(\w+)\s*=\s*\[(.*?)\]\s*;", re.S)
_SCALAR = re.compile(r"mpc\.(\w+)\s*=\s*([-+0-9.eE]+|Inf|-Inf|NaN)\s*;")
_NUMBER = {"inf": np.inf, "-inf": -np.inf, "nan": np.nan}


def _strip_comments(text: str) -> str:
    # `%` starts a comment except inside a quoted string ('...'); strings only appear in cell
    # arrays and the version field, so tracking single quotes per line is enough.
    out = []
    for line in text.splitlines():
        quoted, cut = False, len(line)
        for i, ch in enumerate(line):
            if ch == "'":
                quoted = not quoted
            elif ch == "%" and not quoted:
                cut = i
                break
        out.append(line[:cut])
    return "\n".join(out)


def _parse_matrix(body: str, field: str, path: Path) -> np.ndarray:
    rows = []
    for raw in re.split(r"[;\n]", body):
        tokens = raw.replace(",", " ").replace("...", " ").split()
        if not tokens:
            continue
        try:
            rows.append([_NUMBER[t.lower()] if t.lower() in _NUMBER else float(t) for t in tokens])
        except ValueError as exc:
            raise CaseError(f"MATPOWER file `{path}`: `mpc.{field}` holds a non-numeric entry "
                            f"({exc}); expected numbers, `Inf` or `NaN`") from exc
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise CaseError(f"MATPOWER file `{path}`: rows of `mpc.{field}` have different lengths "
                        f"`{sorted(widths)}`")
    return np.array(rows, dtype=float).reshape(len(rows), widths.pop() if widths else 0)


def read_m(path: str | Path) -> dict[str, Any]:
    """Parse a MATPOWER `.m` case into a PYPOWER-style dict (baseMVA, bus, gen, branch, gencost).

    Raises `CaseError` for a missing file, a missing or malformed field, or too few columns.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CaseError(f"MATPOWER file `{path}` cannot be read: {exc.strerror or exc}") from exc
    text = _strip_comments(text)
    ppc: dict[str, Any] = {"version": "2"}
    for m in _SCALAR.finditer(text):
        value = m.group(2).lower()
        ppc[m.group(1)] = _NUMBER[value] if value in _NUMBER else float(value)
    for m in _MATRIX.finditer(text):
        if m.group(1) in MIN_COLUMNS:
            ppc[m.group(1)] = _parse_matrix(m.group(2), m.group(1), path)
    missing = [k for k in REQUIRED if k not in ppc]
    if missing:
        raise CaseError(f"MATPOWER file `{path}` lacks {', '.join(f'`mpc.{k}`' for k in missing)}; "
                        f"a case for AC-OPF needs {', '.join(f'`mpc.{k}`' for k in REQUIRED)}")
    for field, cols in MIN_COLUMNS.items():
        arr = ppc[field]
        if arr.shape[0] == 0 or arr.shape[1] < cols:
            raise CaseError(f"MATPOWER file `{path}`: `mpc.{field}` has shape `{arr.shape}`; "
                            f"expected at least one row and {cols} columns")
    if ppc["gencost"].shape[0] < ppc["gen"].shape[0]:
        raise CaseError(f"MATPOWER file `{path}`: `mpc.gencost` has {ppc['gencost'].shape[0]} rows "
                        f"for {ppc['gen'].shape[0]} generators; every generator needs a cost")
    return ppc


def write_m(ppc: dict[str, Any], path: str | Path, name: str | None = None) -> Path:
    """Write a PYPOWER-style case dict as a MATPOWER `.m` file (format version 2)."""
    path = Path(path)
    fn = name or path.stem
    lines = [f"function mpc = {fn}", "%% written by gridtune", "mpc.version = '2';",
             f"mpc.baseMVA = {float(ppc['baseMVA']):.12g};"]
    for field in ("bus", "gen", "branch", "gencost"):
        arr = np.asarray(ppc[field], dtype=float)
        lines.append(f"mpc.{field} = [")
        lines += ["\t" + "\t".join(f"{v:.12g}" for v in row) + ";" for row in arr]
        lines.append("];")
    from gridtune.files import atomic_write_text

    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def net_from_m(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """A pandapower net from a MATPOWER `.m` file, via `pandapower.converter.from_ppc`.

    Returns `(net, ppc)`; the case dict serves to repair the conversion
    (`gridtune.grids.repairs.align_converted_matpower`).

    Buses with base kV 0 (MATPOWER allows it; case57 has no voltages at all) get
    `PLACEHOLDER_BASE_KV`: the per-unit data, hence the OPF, do not depend on it, but pandapower
    needs a voltage to convert impedances to ohms.
    """
    import warnings

    from pandapower.converter.pypower import from_ppc
    from pandapower.pypower.idx_bus import BASE_KV

    ppc = read_m(path)
    bus = ppc["bus"].copy()
    bus[bus[:, BASE_KV] <= 0, BASE_KV] = PLACEHOLDER_BASE_KV
    ppc["bus"] = bus
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return from_ppc(ppc, f_hz=60, validate_conversion=False), ppc
        except Exception as exc:  # pandapower raises many types on inconsistent data
            raise CaseError(f"MATPOWER file `{path}` cannot be converted to pandapower: "
                            f"{type(exc).__name__}: {exc}") from exc
