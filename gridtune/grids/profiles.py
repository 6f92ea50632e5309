"""Real load profiles and contingency lists from MATPOWER change tables.

MATPOWER ships, for its ACTIVSg synthetic grids (Birchfield et al. 2017, "Grid structural
characteristics as validation criteria for synthetic networks", IEEE Trans. Power Systems), hourly
load scenarios (`scenarios_ACTIVSg200.m`, `scenarios_ACTIVSg2000.m`: one year of area or zone load
totals) and contingency tables (`contab_ACTIVSg*.m`: one branch or generator outage each). Both are
change tables for MATPOWER's `apply_changes` (MATPOWER User's Manual, section 9.3.5): rows of
`label prob table row col chgtype newval`, where `label` is the hour or the contingency.

What gridtune reads:
- load profiles: `CT_TAREALOAD` rows setting `CT_LOAD_ALL_P` / `CT_LOAD_FIX_P` (or `..._PQ`) by
  replacement (`CT_REP`, a total in MW) or scaling (`CT_REL`). A row names a region: a value of the
  case's `BUS_AREA` column, or of its `ZONE` column when the areas do not hold the profile's
  regions (`scenarios_ACTIVSg200.m` asks for the two columns to be swapped). Every bus of a region
  gets the region's factor; reactive load follows active load at each bus's power factor (gridtune's
  convention for every load change; `apply_changes` with `CT_LOAD_ALL_P` would leave Q as it is).
- contingency tables: `CT_TBRCH` rows with `BR_STATUS` and `CT_TGEN` rows with `GEN_STATUS` set
  to 0 (`CT_REP`). Rows index the case file's branch and generator matrices (1-based).
Anything else is refused by name.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np

from gridtune.errors import SpecError

_ROW = re.compile(r"^\s*([^%\s][^;%]*?)\s*;", re.M)
LOAD_COLUMNS = ("CT_LOAD_ALL_P", "CT_LOAD_FIX_P", "CT_LOAD_ALL_PQ", "CT_LOAD_FIX_PQ")


def read_change_table(path: str | Path) -> list[tuple[int, str, int, str, str, float]]:
    """The rows of a MATPOWER change table file: (label, table, row, column, change type, value).
    `path` may name a file of the MATPOWER library (`matpower:scenarios_ACTIVSg200`)."""
    from gridtune.grids.library import data_file

    path = data_file(path)
    if not path.is_file():
        raise SpecError(f"change table `{path}` does not exist; give a MATPOWER change table "
                        "(.m), e.g. `scenarios_ACTIVSg200.m` from MATPOWER's data folder")
    text = path.read_text(errors="replace")
    start = text.find("chgtab = [")
    if start < 0:
        raise SpecError(f"`{path}` is not a MATPOWER change table (no `chgtab = [`)")
    body = text[start + len("chgtab = ["): text.find("];", start)]
    rows = []
    for m in _ROW.finditer(body):
        tok = m.group(1).split()
        if len(tok) != 7:
            raise SpecError(f"change table `{path}`: row `{m.group(1)}` has {len(tok)} entries, "
                            "expected 7 (label prob table row col chgtype newval)")
        try:
            rows.append((int(float(tok[0])), tok[2], int(float(tok[3])), tok[4], tok[5], float(tok[6])))
        except ValueError as exc:
            raise SpecError(f"change table `{path}`: row `{m.group(1)}` is malformed ({exc})") from exc
    if not rows:
        raise SpecError(f"change table `{path}` has no rows")
    return rows


@dataclasses.dataclass(frozen=True)
class LoadProfile:
    """Per-bus load factors of each hour of a profile, relative to the grid's own loads.

    Attributes:
        hours: the profile's hour labels (1-based), shape (H,).
        factors: (H, n_bus) multiplier of each bus's nominal load (P and Q) at each hour.
        regions: `"area"` or `"zone"`: the case column the profile's rows name.
    """

    hours: np.ndarray
    factors: np.ndarray
    regions: str


def _case_file(case: str) -> Path:
    from gridtune.grids.library import data_file

    path = data_file(case)
    if path.suffix != ".m" or not path.is_file():
        raise SpecError(f"a load profile or contingency table needs the recipe's `case` to be a "
                        f"MATPOWER file (.m or `matpower:<case>`) with the grid's own bus, branch and "
                        f"generator rows; got `{case}`")
    return path


def _internal_bus_numbers(grid: Any, mpc: dict[str, Any], case: str) -> np.ndarray:
    """The case file's bus number of each internal bus (checked against the loads)."""
    numbers = np.asarray(grid.bus_ids, dtype=float)
    pos = {int(b): i for i, b in enumerate(mpc["bus"][:, 0])}
    rows = np.array([pos.get(int(b), -1) for b in numbers])
    if (rows < 0).any() or not np.allclose(mpc["bus"][rows, 2], grid.pd_mw, atol=1e-6):
        raise SpecError(f"grid `{grid.name}` ({grid.n_bus} buses) does not match the bus rows of "
                        f"`{case}` ({len(mpc['bus'])} buses); profiles and contingency tables "
                        "apply to the unchanged case file")
    return rows


def load_profile(path: str | Path, case: str, grid: Any, hours: tuple[int, int] | None = None
                 ) -> LoadProfile:
    """The profile in `path` on `grid` (loaded from the MATPOWER file `case`)."""
    from gridtune.grids.matpower import read_m

    mpc = read_m(_case_file(case))
    rows = _internal_bus_numbers(grid, mpc, case)
    table = read_change_table(path)
    bad = next((r for r in table if r[1] != "CT_TAREALOAD" or r[3] not in LOAD_COLUMNS
                or r[4] not in ("CT_REP", "CT_REL")), None)
    if bad is not None:
        raise SpecError(f"load profile `{path}`: hour {bad[0]} changes `{bad[1]} {bad[3]} {bad[4]}`; "
                        "gridtune reads area load changes (`CT_TAREALOAD`, `CT_LOAD_ALL_P` or "
                        "`CT_LOAD_FIX_P`, `CT_REP` or `CT_REL`)")
    wanted = sorted({r[2] for r in table})
    pd = grid.pd_mw
    region = None
    for name, col in (("area", 6), ("zone", 10)):
        of_bus = mpc["bus"][rows, col].astype(int)
        totals = {z: pd[of_bus == z].sum() for z in wanted}
        if all(abs(t) > 0 for t in totals.values()):
            region, nominal = name, totals
            break
    if region is None:
        areas = sorted(set(mpc["bus"][:, 6].astype(int)))
        zones = sorted(set(mpc["bus"][:, 10].astype(int)))
        raise SpecError(f"load profile `{Path(path).name}` sets the load of {len(wanted)} regions "
                        f"`{_span(wanted)}`, grid `{grid.name}` ({grid.n_bus} buses) has loaded areas "
                        f"`{_span(areas)}` and zones `{_span(zones)}`: use the profile made for this grid")
    labels = np.array(sorted({r[0] for r in table}))
    if hours is not None:
        labels = labels[(labels >= hours[0]) & (labels <= hours[1])]
        if labels.size == 0:
            raise SpecError(f"load profile `{Path(path).name}` has no hours in `{list(hours)}`")
    at = {h: i for i, h in enumerate(labels)}
    of_bus = mpc["bus"][rows, 6 if region == "area" else 10].astype(int)
    factors = np.ones((labels.size, grid.n_bus))
    for h, _, z, _, kind, value in table:
        if h in at:
            factors[at[h], of_bus == z] = value / nominal[z] if kind == "CT_REP" else value
    return LoadProfile(hours=labels, factors=factors, regions=region)


def _span(values: list[int]) -> str:
    if not values:
        return "none"
    return f"{values[0]}`..`{values[-1]}" if len(values) > 2 else "`, `".join(map(str, values))


@dataclasses.dataclass(frozen=True)
class Contingency:
    """One contingency of a table, as internal branch and generator indices."""

    label: int
    branch_out: tuple[int, ...]
    gen_out: tuple[int, ...]


def load_contingencies(path: str | Path, case: str, grid: Any) -> list[Contingency]:
    """The contingencies of the table in `path`, mapped onto `grid`'s branches and generators."""
    from gridtune.grids.matpower import read_m

    mpc = read_m(_case_file(case))
    bus_rows = _internal_bus_numbers(grid, mpc, case)
    number = mpc["bus"][bus_rows, 0].astype(int)
    table = read_change_table(path)
    bad = next((r for r in table if (r[1], r[3]) not in (("CT_TBRCH", "BR_STATUS"), ("CT_TGEN", "GEN_STATUS"))
                or r[4] != "CT_REP" or r[5] != 0), None)
    if bad is not None:
        raise SpecError(f"contingency table `{path}`: contingency {bad[0]} changes `{bad[1]} {bad[3]} "
                        f"{bad[4]} {bad[5]:g}`; gridtune models outages (`BR_STATUS` or `GEN_STATUS` "
                        "set to 0 with `CT_REP`)")
    n_br, n_gen = len(mpc["branch"]), len(mpc["gen"])
    over = next((r for r in table if r[2] > (n_br if r[1] == "CT_TBRCH" else n_gen)), None)
    if over is not None:
        raise SpecError(f"contingency table `{Path(path).name}` names {'branch' if over[1] == 'CT_TBRCH' else 'generator'} row "
                        f"`{over[2]}`, case `{Path(case).name}` has {n_br} branches and {n_gen} "
                        "generators: use the table made for this grid")
    branch_of = _branch_map(grid, mpc, number)
    gen_of = _gen_map(grid, mpc, number)
    out: dict[int, tuple[list[int], list[int]]] = {}
    for label, tab, row, *_ in table:
        br, gen = out.setdefault(label, ([], []))
        k = int((branch_of if tab == "CT_TBRCH" else gen_of)[row - 1])
        if k >= 0:  # an element already out in the case file changes nothing
            (br if tab == "CT_TBRCH" else gen).append(k)
    return [Contingency(k, tuple(sorted(b)), tuple(sorted(g))) for k, (b, g) in sorted(out.items())
            if b or g]


def _branch_map(grid: Any, mpc: dict[str, Any], number: np.ndarray) -> np.ndarray:
    """Internal index of each branch row of the case file (`model.pair_branches`: endpoints, then
    reactance); -1 for a row out of service in the case file that the grid does not hold."""
    from gridtune.grids.model import pair_branches

    rows = np.asarray(mpc["branch"], dtype=float)
    out = pair_branches(rows[:, :2], rows[:, 3], np.c_[number[grid.f_bus], number[grid.t_bus]], grid.x_pu)
    missing = np.flatnonzero((out < 0) & (rows[:, 10] > 0))
    if missing.size:
        r = int(missing[0])
        raise SpecError(f"grid `{grid.name}` has no branch {int(rows[r, 0])}-{int(rows[r, 1])} (row {r + 1} "
                        "of its case file); contingency tables apply to the unchanged case file")
    return out


def _gen_map(grid: Any, mpc: dict[str, Any], number: np.ndarray) -> np.ndarray:
    """Internal index of each generator row of the case file (bus, then capacity)."""
    free: dict[int, list[int]] = {}
    for g, b in enumerate(number[grid.gen_bus]):
        free.setdefault(int(b), []).append(g)
    pmax = grid.max_p_mw
    out = np.full(len(mpc["gen"]), -1, dtype=np.int64)  # -1: out of service in the case file
    for r, row in enumerate(mpc["gen"]):
        if row[7] <= 0:
            continue
        cands = free.get(int(row[0]))
        if not cands:
            raise SpecError(f"grid `{grid.name}` has no generator at bus {int(row[0])} (row {r + 1} "
                            "of its case file); contingency tables apply to the unchanged case file")
        best = min(cands, key=lambda g: abs(pmax[g] - row[8]))
        cands.remove(best)
        out[r] = best
    return out


_PROFILES: dict[tuple[str, str, str, tuple[int, int] | None], LoadProfile] = {}


def cached_profile(path: str, case: str, grid: Any, hours: tuple[int, int] | None) -> LoadProfile:
    """`load_profile`, parsed once per process and grid (workers draw many scenarios from it)."""
    from gridtune.grids.model import grid_hash

    key = (str(path), str(case), grid_hash(grid), hours)
    if key not in _PROFILES:
        if len(_PROFILES) > 4:
            _PROFILES.clear()
        _PROFILES[key] = load_profile(path, case, grid, hours)
    return _PROFILES[key]
