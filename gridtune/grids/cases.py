"""Registry of grids: the eight default IEEE cases and user grid files; nominal AC-OPF health.

A grid is named either by a default case (`CASE_NAMES`, loaded from `pandapower.networks` and
repaired to match MATPOWER's data, see `gridtune.grids.repairs`) or by the path of a user file:
a pandapower JSON net (`.json`, used as given) or a MATPOWER case (`.m`, converted with
pandapower's `from_ppc` and aligned with MATPOWER's formulation).

`nominal_opf` solves the AC-OPF at nominal load once per grid content and caches the result under
`$GRIDTUNE_CACHE/cases` (default `~/.cache/gridtune/cases`), so `gridtune cases` is instant the
second time.

Published objectives: MATPOWER 7.1 `runopf` on its own case files (R. D. Zimmerman et al.,
"MATPOWER: Steady-State Operations, Planning and Analysis Tools for Power Systems Research and
Education", IEEE Trans. Power Systems 26(1), 2011).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gridtune.errors import CaseError, GridtuneError, choices_text

CASE_NAMES: tuple[str, ...] = ("case9", "case14", "case24_ieee_rts", "case30", "case39", "case57",
                               "case118", "case300")
CASES = CASE_NAMES  # short alias

# MATPOWER's AC-OPF objective ($/h) at nominal load for each default case.
PUBLISHED_OBJECTIVES: dict[str, float] = {
    "case9": 5296.69, "case14": 8081.53, "case24_ieee_rts": 63352.21, "case30": 576.89,
    "case39": 41864.18, "case57": 41737.79, "case118": 129660.69, "case300": 719725.10,
}
GRID_SUFFIXES = (".json", ".m")
OPF_INITS = ("flat", "pf", "results")  # tried in this order by `solve_nominal`
CACHE_VERSION = 2  # bump when the cached fields or the way they are computed change


def _valid_text() -> str:
    return (f"valid: {choices_text(CASE_NAMES)}, or the path of a pandapower `.json` or "
            "MATPOWER `.m` file")


def resolve(name_or_path: str | Path) -> tuple[str, str | Path]:
    """`("case", name)` for a default case, `("file", path)` for an existing grid file.

    Raises `CaseError` for anything else (listing the valid names).
    """
    text = str(name_or_path)
    if text in CASE_NAMES:
        return "case", text
    path = Path(text).expanduser()
    if path.suffix.lower() in GRID_SUFFIXES:
        if not path.is_file():
            raise CaseError(f"grid file `{path}` does not exist; {_valid_text()}")
        return "file", path
    if path.suffix:
        raise CaseError(f"grid file `{path}` has unsupported type `{path.suffix}`; {_valid_text()}")
    raise CaseError(f"unknown case `{text}`; {_valid_text()}")


def grid_name(name_or_path: str | Path) -> str:
    """The case name, or the stem of a user grid file (no existence check)."""
    text = str(name_or_path)
    return text if text in CASE_NAMES else Path(text).stem


# Loaded, repaired nets by content key: pandapower's `from_json` spends seconds building empty
# DataFrames, a deep copy of the loaded net takes milliseconds.
_NETS: dict[str, tuple[Any, list[Any]]] = {}


def load_net_with_repairs(name_or_path: str | Path) -> tuple[Any, list[Any]]:
    """`(net, repairs)`: a fresh net (see `load_net`) and the `Repair` records applied to it."""
    import copy

    key = content_key(name_or_path)
    if key not in _NETS:
        _NETS[key] = _load(name_or_path)
    net, fixes = _NETS[key]
    return copy.deepcopy(net), list(fixes)


def _load(name_or_path: str | Path) -> tuple[Any, list[Any]]:
    from gridtune.grids import repairs

    kind, ref = resolve(name_or_path)
    with _quiet():
        if kind == "case":
            import pandapower.networks as pn

            net = getattr(pn, str(ref))()
            return net, repairs.repair_case(net, str(ref))
        path = Path(ref)
        if path.suffix.lower() == ".m":
            from gridtune.grids.matpower import net_from_m

            net, ppc = net_from_m(path)
            fixes = repairs.align_converted_matpower(net, ppc)
        else:
            net, fixes = _read_json_net(path), []
    _check_net(net, path)
    return net, fixes


def load_net(name_or_path: str | Path) -> Any:
    """A fresh pandapower net each call: a repaired default case, or a user grid file.

    Args:
        name_or_path: a name in `CASE_NAMES`, or the path of a `.json` (pandapower) or `.m`
            (MATPOWER) file.

    Raises `CaseError` for an unknown name or an unreadable / invalid file.
    """
    return load_net_with_repairs(name_or_path)[0]


def load_grid(name_or_path: str | Path) -> Any:
    """`GridModel` of a case or grid file: `grid_from_net(load_net(x), grid_name(x))`."""
    from gridtune.grids.model import grid_from_net

    return grid_from_net(load_net(name_or_path), grid_name(name_or_path))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # pandapower logs a warning per generator whose set-point exceeds its bus limits on every
    # conversion, and warns about deprecated JSON fields; noise the user cannot act on.
    logger = logging.getLogger("pandapower")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _read_json_net(path: Path) -> Any:
    import pandapower as pp

    try:
        net = pp.from_json(str(path))
    except Exception as exc:  # pandapower raises JSONDecodeError, KeyError, UserWarning ...
        raise CaseError(f"grid file `{path}` is not a pandapower JSON net: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if not hasattr(net, "bus") or not hasattr(net, "line"):
        raise CaseError(f"grid file `{path}` is JSON but not a pandapower net")
    return net


def _check_net(net: Any, path: Path) -> None:
    """An OPF needs buses, a slack and costed generators: say which is missing."""
    if len(net.bus) == 0:
        raise CaseError(f"grid file `{path}` has no buses")
    _check_bus_references(net, path)
    if len(net.ext_grid) == 0 and not (len(net.gen) and net.gen.get("slack", False).any()):
        raise CaseError(f"grid file `{path}` has no slack (no `ext_grid` and no gen with `slack=True`)")
    if len(net.poly_cost) == 0 and len(net.get("pwl_cost", [])) == 0:
        raise CaseError(f"grid file `{path}` has no generator costs (`poly_cost` / `pwl_cost` empty); "
                        "an OPF needs them")


# Element tables and their bus columns. pandapower's conversion indexes arrays by these values in
# compiled code: a reference to a bus that does not exist crashed the interpreter there.
BUS_COLUMNS = {"line": ("from_bus", "to_bus"), "trafo": ("hv_bus", "lv_bus"),
               "trafo3w": ("hv_bus", "mv_bus", "lv_bus"), "load": ("bus",), "sgen": ("bus",),
               "gen": ("bus",), "ext_grid": ("bus",), "shunt": ("bus",), "storage": ("bus",),
               "impedance": ("from_bus", "to_bus"), "switch": ("bus",), "ward": ("bus",),
               "xward": ("bus",), "dcline": ("from_bus", "to_bus")}


def _check_bus_references(net: Any, path: Path) -> None:
    """Every bus an element names exists, and bus indices are non-negative integers."""
    import numpy as np
    import pandas as pd

    index = net.bus.index
    if not pd.api.types.is_integer_dtype(index) or (len(index) and int(index.min()) < 0):
        raise CaseError(f"grid file `{path}`: bus indices must be non-negative integers, got "
                        f"`{list(index[:5])}`")
    known = set(int(i) for i in index)
    for element, columns in BUS_COLUMNS.items():
        frame = net.get(element)
        if frame is None or not hasattr(frame, "columns") or len(frame) == 0:
            continue
        for col in columns:
            if col not in frame.columns:
                raise CaseError(f"grid file `{path}`: table `{element}` lacks column `{col}`")
            values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
            bad = [i for i, v in enumerate(values)
                   if not np.isfinite(v) or v != int(v) or int(v) not in known]
            if bad:
                raise CaseError(f"grid file `{path}`: `{element}.{col}` refers to bus "
                                f"`{frame[col].iloc[bad[0]]}`, which is not in the `bus` table "
                                f"(indices `{min(known)}` to `{max(known)}`)")


# ---- nominal AC-OPF -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NominalOpf:
    """AC-OPF of a grid at nominal load, pandapower `runopp` (PIPS).

    Attributes:
        converged: `runopp` converged with one of `OPF_INITS`.
        objective: total cost in $/h, None if not converged.
        published_objective: MATPOWER's value for a default case, else None.
        solve_time_s: wall time of all attempts.
        message: which init succeeded, or why none did.
        init: the init that converged (None if none did).
    """

    converged: bool
    objective: float | None
    published_objective: float | None
    solve_time_s: float
    message: str
    init: str | None = None

    @property
    def relative_difference(self) -> float | None:
        """(objective - published) / published, when both exist."""
        if self.objective is None or not self.published_objective:
            return None
        return (self.objective - self.published_objective) / self.published_objective


def solve_nominal(net: Any, *, inits: tuple[str, ...] = OPF_INITS,
                  published_objective: float | None = None) -> NominalOpf:
    """Run `runopp` on a copy of `net`, trying each init until one converges (no cache).

    `"results"` starts from a power flow's solution (`runpp` first), `"pf"` lets `runopp` run
    that power flow itself; a failed power flow skips that init.
    """
    import copy

    import pandapower as pp

    bad = [i for i in inits if i not in OPF_INITS]
    if bad:
        raise CaseError(f"unknown OPF init `{bad[0]}`; valid: {choices_text(OPF_INITS)}")
    start = time.perf_counter()
    failures = []
    for init in inits:
        work = copy.deepcopy(net)
        with _quiet():
            try:
                if init == "results":
                    pp.runpp(work)
                pp.runopp(work, init=init, verbose=False)
            except Exception as exc:  # OPFNotConverged, LoadflowNotConverged, numerical errors
                failures.append(f"{init}: {type(exc).__name__}")
                continue
        return NominalOpf(True, float(work.res_cost), published_objective,
                          time.perf_counter() - start, f"converged with init `{init}`", init)
    return NominalOpf(False, None, published_objective, time.perf_counter() - start,
                      "runopp did not converge (" + "; ".join(failures) + ")", None)


def cache_root() -> Path:
    """`$GRIDTUNE_CACHE`, default `~/.cache/gridtune`."""
    return Path(os.environ.get("GRIDTUNE_CACHE", Path.home() / ".cache" / "gridtune"))


def content_key(name_or_path: str | Path) -> str:
    """Hash of everything the nominal result depends on, computed without building the net.

    A default case: pandapower's version, its stored JSON of the case, and the repair code. A
    file: its bytes and the conversion / repair code. Reading files is instant where loading and
    converting a net takes seconds, which is what makes a second `gridtune cases` instant.
    """
    import importlib.metadata
    import importlib.util

    # Locate pandapower and the gridtune modules without importing them (pandapower's import
    # alone takes seconds).
    here = Path(__file__).parent
    pp_root = Path(importlib.util.find_spec("pandapower").origin).parent  # type: ignore[union-attr,arg-type]
    kind, ref = resolve(name_or_path)
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION} pandapower {importlib.metadata.version('pandapower')} {kind} "
             f"{grid_name(ref)}".encode())
    h.update((here / "repairs.py").read_bytes())
    if kind == "case":
        stored = pp_root / "networks" / "power_system_test_case_jsons" / f"{ref}.json"
        if stored.is_file():
            h.update(stored.read_bytes())
        else:  # layout changed: fall back to hashing the grid's arrays (slow but correct)
            from gridtune.grids.model import grid_hash

            h.update(grid_hash(load_grid(ref)).encode())
    else:
        h.update(Path(ref).read_bytes())
        h.update((here / "matpower.py").read_bytes())
    return h.hexdigest()[:16]


def _cache_path(name_or_path: str | Path) -> Path:
    return cache_root() / "cases" / f"{grid_name(name_or_path)}-{content_key(name_or_path)}.json"


def _compute_row(name_or_path: str | Path) -> dict[str, Any]:
    net, fixes = load_net_with_repairs(name_or_path)
    name = grid_name(name_or_path)
    result = solve_nominal(net, published_objective=PUBLISHED_OBJECTIVES.get(str(name_or_path)))
    kind, ref = resolve(name_or_path)
    branches = len(net.line) + len(net.trafo) + len(net.get("impedance", []))
    return {
        "name": name,
        "source": "pandapower.networks" if kind == "case" else str(Path(ref).resolve()),
        "buses": int(len(net.bus)),
        "branches": int(branches),
        "generators": _dispatchable_generators(net),
        "load_mw": float(net.load.p_mw[net.load.in_service].sum()),
        "repairs": len(fixes),
        "repair_kinds": sorted({r.kind for r in fixes}),
        "nominal": dataclasses.asdict(result),
    }


def _dispatchable_generators(net: Any) -> int:
    """Units the OPF dispatches: ext_grids, gens and controllable sgens (as in `to_ppc`'s gen
    table); fixed sgens are negative loads (e.g. case300's 8 buses with negative demand)."""
    sgen = net.sgen
    controllable = sgen["controllable"].fillna(False).astype(bool) if "controllable" in sgen else False
    return int(len(net.ext_grid) + len(net.gen) + int((sgen.in_service & controllable).sum()))


def _row(name_or_path: str | Path, *, refresh: bool = False) -> dict[str, Any]:
    path = _cache_path(name_or_path)
    if path.is_file() and not refresh:
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            pass  # a torn or foreign file: recompute and overwrite
    row = _compute_row(name_or_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from gridtune.files import atomic_write_text

    atomic_write_text(path, json.dumps(row, indent=1))  # concurrent readers never see half a file
    return row


def nominal_opf(name_or_path: str | Path, *, refresh: bool = False) -> NominalOpf:
    """Nominal AC-OPF of a case or grid file (cached by content, see `content_key`)."""
    return NominalOpf(**_row(name_or_path, refresh=refresh)["nominal"])


def case_info(name_or_path: str | Path, *, refresh: bool = False) -> dict[str, Any]:
    """One row of `gridtune cases`: sizes, repairs and the nominal AC-OPF against MATPOWER.

    Keys: name, source, buses, branches, generators, load_mw, repairs, repair_kinds, converged,
    objective, published_objective, relative_difference, init, solve_time_s, message.
    """
    row = _row(name_or_path, refresh=refresh)
    nominal = NominalOpf(**row["nominal"])
    out = {k: v for k, v in row.items() if k != "nominal"}
    out.update(converged=nominal.converged, objective=nominal.objective,
               published_objective=nominal.published_objective,
               relative_difference=nominal.relative_difference, init=nominal.init,
               solve_time_s=nominal.solve_time_s, message=nominal.message)
    return out


def case_table(grids: list[str | Path] | None = None, *, refresh: bool = False,
               workers: int | None = None) -> list[dict[str, Any]]:
    """`case_info` of each grid (default: the default cases), solved in parallel where not
    cached. A bad name or missing file fails before any solve; a grid whose facts cannot be
    computed raises `CaseError` naming it."""
    from gridtune.parallel import check_workers, run_tasks

    refs = [str(g) for g in grids] if grids else list(CASE_NAMES)
    for ref in refs:
        resolve(ref)
    rows: list[Any] = [None] * len(refs)
    for i, row in run_tasks(_case_task, [(r, refresh) for r in refs],
                            workers=min(check_workers(workers), len(refs))):
        rows[i] = row
    for row in rows:
        if isinstance(row, str):
            raise CaseError(row)
    return rows


def _case_task(item: tuple[str, bool]) -> dict[str, Any] | str:
    ref, refresh = item
    try:
        return case_info(ref, refresh=refresh)
    except GridtuneError as exc:  # reported by the parent as one line
        return str(exc)
