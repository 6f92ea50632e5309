"""Read and write MATPOWER case files (`.m`, format version 2) without MATLAB or extra packages.

A MATPOWER case file is a MATLAB function that assigns `mpc.baseMVA` and the numeric matrices
`mpc.bus`, `mpc.gen`, `mpc.branch` and (for an OPF) `mpc.gencost`. Only these are read; cell
arrays such as `mpc.bus_name` and descriptive fields are skipped. Fields that would change the
OPF and that gridtune does not model (`UNSUPPORTED_FIELDS`: DC lines, user constraints and
costs) make `read_m` refuse the file by name. Numbers keep MATPOWER's external bus numbering;
pandapower's converter renumbers.

`grid_from_m` builds the `GridModel` straight from the file's arrays with MATPOWER's semantics
(`ext2int` and `runopf`'s defaults): isolated buses (type 4) and the generators and branches
at them are dropped, out-of-service generators and branches are kept with their status 0 (a
scenario's OPF leaves them out), branch limits are RATE_A in MVA of apparent power at both ends
(`flow_limit = "apparent_power"`, 0 = unlimited), ANGMIN / ANGMAX bound the angle difference,
and every generator's cost is a polynomial of degree at most 2. What that model cannot hold is
refused by name (`CaseError`): piecewise-linear costs, polynomials of higher degree, reactive
power costs.

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

# Fields `runopf` would act on that gridtune does not model; refused instead of dropped.
UNSUPPORTED_FIELDS = {
    "dcline": "DC lines", "dclinecost": "DC line costs",
    "A": "user linear constraints", "l": "user linear constraints", "u": "user linear constraints",
    "N": "user costs", "Cw": "user costs", "H": "user costs", "fparm": "user costs",
    "z0": "user variables", "zl": "user variables", "zu": "user variables",
}
_FIELD = re.compile(r"mpc\.(\w+)\s*=")
# MATLAB statements that change a table after it is written (`mpc.bus(:, PD) = ...`). The unit
# conversions MATPOWER's distribution feeders end with are applied (`_CONVERSIONS`); a case
# that computes anything else is refused, since its numbers are not the ones gridtune reads.
_INDEXED_ASSIGNMENT = re.compile(r"^\s*mpc\.\w+\s*\(.*?\)\s*=.*$", re.M)
_CONVERSIONS = {
    # r and x stated in ohms: divided by the impedance base of bus 1's voltage
    "mpc.branch(:,[BR_RBR_X])=mpc.branch(:,[BR_RBR_X])/(Vbase^2/Sbase);": "ohms_to_pu",
    # loads stated in kW and kvar
    "mpc.bus(:,[PD,QD])=mpc.bus(:,[PD,QD])/1e3;": "kw_to_mw",
}
_CONVERSION_INPUTS = ("Vbase=mpc.bus(1,BASE_KV)*1e3;", "Sbase=mpc.baseMVA*1e6;")
# An optional block some PEGASE cases carry, off unless its switch is set (`fixed = 0`).
_SWITCHED_BLOCK = re.compile(r"^\s*fixed\s*=\s*0\s*;.*?^\s*if\s+fixed\b.*?^\s*end\b", re.M | re.S)
_MATRIX = re.compile(r"mpc\.(\w+)\s*=\s*\[(.*?)\]\s*;", re.S)
_SCALAR = re.compile(r"mpc\.(\w+)\s*=\s*([-+0-9.eE]+|Inf|-Inf|NaN)\s*;")
_NUMBER = {"inf": np.inf, "-inf": -np.inf, "nan": np.nan}


def _strip_comments(text: str) -> str:
    # `%` starts a comment except inside a quoted string ('...'); strings only appear in cell
    # arrays and the version field, so tracking single quotes per line is enough.
    out = []
    for line in text.splitlines():
        if "%" not in line or "'" not in line:  # the common cases, without a scan per character
            out.append(line.split("%", 1)[0])
            continue
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


def file_sizes(path: str | Path) -> dict[str, int]:
    """Rows of `mpc.bus`, `mpc.branch` and `mpc.gen` as the file states them (no checks; 0 for a
    missing table): sizes of a file even when `read_m` refuses it, read line by line (a
    70,000-bus file in a fraction of a second)."""
    keys = {"bus": "buses", "branch": "branches", "gen": "generators"}
    sizes = {"buses": 0, "branches": 0, "generators": 0}
    current = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            code = line.split("%", 1)[0].strip()
            if current is None:
                m = re.match(r"mpc\.(\w+)\s*=\s*\[(.*)$", code)
                if m and m.group(1) in keys:
                    current = keys[m.group(1)]
                    code = m.group(2).strip()
                else:
                    continue
            end = "]" in code
            body = code.split("]", 1)[0]
            sizes[current] += sum(1 for row in body.split(";") if row.strip())
            if end:
                current = None
    return sizes


def read_m(path: str | Path) -> dict[str, Any]:
    """Parse a MATPOWER `.m` case into a PYPOWER-style dict (baseMVA, bus, gen, branch, gencost).

    Raises `CaseError` for a missing file, a missing or malformed field, or too few columns.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CaseError(f"MATPOWER file `{path}` cannot be read: {exc.strerror or exc}") from exc
    text = _SWITCHED_BLOCK.sub("", _strip_comments(text))
    conversions = _conversions(text, path)
    for field in sorted(set(_FIELD.findall(text)) & set(UNSUPPORTED_FIELDS)):
        raise CaseError(f"MATPOWER file `{path}` has `mpc.{field}` ({UNSUPPORTED_FIELDS[field]}), "
                        "which gridtune cannot model; valid cases hold only baseMVA, bus, gen, "
                        "branch, gencost and descriptive fields")
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
    if "ohms_to_pu" in conversions:
        from pandapower.pypower.idx_brch import BR_R, BR_X
        from pandapower.pypower.idx_bus import BASE_KV

        z_base_ohm = (ppc["bus"][0, BASE_KV] * 1e3) ** 2 / (ppc["baseMVA"] * 1e6)
        ppc["branch"][:, [BR_R, BR_X]] /= z_base_ohm
    if "kw_to_mw" in conversions:
        from pandapower.pypower.idx_bus import PD, QD

        ppc["bus"][:, [PD, QD]] /= 1e3
    if ppc["gencost"].shape[0] < ppc["gen"].shape[0]:
        raise CaseError(f"MATPOWER file `{path}`: `mpc.gencost` has {ppc['gencost'].shape[0]} rows "
                        f"for {ppc['gen'].shape[0]} generators; every generator needs a cost")
    return ppc


def _conversions(text: str, path: Path) -> list[str]:
    """The known unit conversions a case applies after its tables (`_CONVERSIONS`); any other
    statement that changes a table raises `CaseError`."""
    found = []
    for m in _INDEXED_ASSIGNMENT.finditer(text):
        statement = re.sub(r"\s+", "", m.group(0))
        kind = _CONVERSIONS.get(statement)
        if kind is None or (kind == "ohms_to_pu" and not all(
                x in re.sub(r"\s+", "", text) for x in _CONVERSION_INPUTS)):
            raise CaseError(f"MATPOWER file `{path}` changes its tables with MATLAB code "
                            f"(`{m.group(0).strip()[:80]}`), which gridtune does not run; valid: "
                            "tables stated as numbers (or MATPOWER's kW and ohm conversions)")
        found.append(kind)
    return found


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


def grid_from_m(path: str | Path, name: str | None = None) -> tuple[Any, list[str]]:
    """`(GridModel, notes)` of a MATPOWER `.m` file with MATPOWER's semantics (module docstring).

    `notes` says in words what MATPOWER's own conversion would also leave out (isolated buses
    and what sits on them). Raises `CaseError` for what cannot be represented.
    """
    path = Path(path)
    ppc = read_m(path)  # refusals of the file's content come before any heavy import
    gencost = _polynomial_costs(ppc["gencost"], ppc["gen"].shape[0], path)

    from pandapower.pypower.idx_brch import F_BUS, T_BUS
    from pandapower.pypower.idx_bus import BUS_I, BUS_TYPE
    from pandapower.pypower.idx_gen import GEN_BUS

    from gridtune.grids.model import GridModel

    bus, gen, branch = ppc["bus"], ppc["gen"], ppc["branch"]
    numbers = bus[:, BUS_I]
    if np.any(numbers != np.round(numbers)) or np.any(numbers <= 0) or len(set(numbers)) < len(numbers):
        raise CaseError(f"MATPOWER file `{path}`: bus numbers must be distinct positive integers")
    for what, ids in (("gen bus", gen[:, GEN_BUS]), ("branch from bus", branch[:, F_BUS]),
                      ("branch to bus", branch[:, T_BUS])):
        unknown = np.setdiff1d(ids, numbers)
        if unknown.size:
            raise CaseError(f"MATPOWER file `{path}`: {what} `{int(unknown[0])}` is not in `mpc.bus`")
    isolated = bus[:, BUS_TYPE] == 4
    if np.any(~np.isin(bus[:, BUS_TYPE], (1, 2, 3, 4))):
        bad = bus[~np.isin(bus[:, BUS_TYPE], (1, 2, 3, 4)), BUS_TYPE][0]
        raise CaseError(f"MATPOWER file `{path}`: bus type `{bad:g}`; valid: 1 (PQ), 2 (PV), "
                        "3 (reference), 4 (isolated)")
    if not np.any(bus[:, BUS_TYPE] == 3):
        raise CaseError(f"MATPOWER file `{path}` has no reference bus (type 3); an OPF needs one")
    off = set(numbers[isolated].tolist())
    gen_keep = ~np.isin(gen[:, GEN_BUS], list(off))
    br_keep = ~(np.isin(branch[:, F_BUS], list(off)) | np.isin(branch[:, T_BUS], list(off)))
    notes = []
    if isolated.any():
        notes.append(f"{int(isolated.sum())} isolated buses (type 4) left out, with "
                     f"{int((~gen_keep).sum())} generators and {int((~br_keep).sum())} branches at them")
    kept = numbers[~isolated]
    index = {int(n): i for i, n in enumerate(kept)}
    bus = bus[~isolated].copy()
    bus[:, BUS_I] = np.arange(len(kept))
    gen, gencost = gen[gen_keep].copy(), gencost[gen_keep]
    gen[:, GEN_BUS] = [index[int(n)] for n in gen[:, GEN_BUS]]
    branch = branch[br_keep].copy()
    branch[:, F_BUS] = [index[int(n)] for n in branch[:, F_BUS]]
    branch[:, T_BUS] = [index[int(n)] for n in branch[:, T_BUS]]
    arrays = {"baseMVA": float(ppc["baseMVA"]), "bus": bus, "gen": gen, "branch": branch,
              "gencost": gencost}
    grid = GridModel(name=name or path.stem, base_mva=float(ppc["baseMVA"]), ppc=arrays,
                     bus_ids=kept.astype(np.int64), flow_limit="apparent_power")
    return grid, notes


def _polynomial_costs(gencost: np.ndarray, n_gen: int, path: Path) -> np.ndarray:
    """Generator costs as MATPOWER model-2 rows with 3 coefficients (c2, c1, c0), shape (n_gen, 7).

    Polynomials of any stated order are accepted when the terms above degree 2 are zero;
    piecewise-linear costs, higher-degree terms and reactive-power costs (rows beyond `n_gen`)
    raise `CaseError`.
    """
    if gencost.shape[0] > n_gen:
        q_rows = gencost[n_gen: 2 * n_gen]
        n_q = q_rows[:, 3].astype(int)
        if any(np.any(row[4: 4 + n] != 0) for row, n in zip(q_rows, n_q)):
            raise CaseError(f"MATPOWER file `{path}` has reactive power costs (`mpc.gencost` rows "
                            f"{n_gen + 1}-{2 * n_gen}), which gridtune cannot model; valid: costs "
                            "on active power only")
    out = np.zeros((n_gen, 7))
    out[:, 0], out[:, 3] = 2, 3
    for g, row in enumerate(gencost[:n_gen]):
        out[g, 1:3] = row[1:3]  # startup, shutdown (not used by an OPF)
        if row[0] == 1:
            raise CaseError(f"MATPOWER file `{path}`: generator {g + 1} has a piecewise-linear cost "
                            "(model 1), which gridtune cannot model; valid: polynomial costs "
                            "(model 2) of degree at most 2")
        if row[0] != 2:
            raise CaseError(f"MATPOWER file `{path}`: generator {g + 1} has cost model `{row[0]:g}`; "
                            "valid: 2 (polynomial)")
        n = int(row[3])
        coeffs = row[4: 4 + n]
        if len(coeffs) < n:
            raise CaseError(f"MATPOWER file `{path}`: generator {g + 1} states {n} cost coefficients "
                            f"but `mpc.gencost` has room for {len(coeffs)}")
        if np.any(coeffs[: max(0, n - 3)] != 0):
            raise CaseError(f"MATPOWER file `{path}`: generator {g + 1} has a cost polynomial of "
                            f"degree `{n - 1}`, which gridtune cannot model; valid: degree at most 2")
        coeffs = coeffs[max(0, n - 3):]
        out[g, 7 - len(coeffs):] = coeffs
    return out
