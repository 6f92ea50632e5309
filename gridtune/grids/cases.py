"""Registry of grids: the eight default IEEE cases, the MATPOWER case library and user grid files;
nominal AC-OPF health.

A grid is named by a default case (`CASE_NAMES`, loaded from `pandapower.networks` and repaired
to match MATPOWER's data, see `gridtune.grids.repairs`), by a MATPOWER library case
(`matpower:<name>`, see `gridtune.grids.library`) or by the path of a user file: a pandapower
JSON net (`.json`, used as given) or a MATPOWER case (`.m`).

Two formulations (`FORMULATIONS`): the default cases and pandapower nets are solved as pandapower
states them ("pandapower": branch limits on current, `runopp`); MATPOWER files, the library's
and a user's, keep MATPOWER's semantics ("matpower": the grid is built from the file's arrays by
`gridtune.grids.matpower.grid_from_m`, branch limits on apparent power at both ends, the
reference bus voltage free within its limits, angle-difference limits, solved with Ipopt and,
failing that, PIPS). `load_net` still converts a MATPOWER file to a pandapower net (for tools
that edit nets); the labels of a MATPOWER grid never come from that net.

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
FORMULATIONS = {
    "pandapower": "pandapower's AC-OPF: branch limits on current |I| at nominal voltage",
    "matpower": "MATPOWER's AC-OPF: branch limits on apparent power |S| in MVA at both ends "
                "(RATE_A, 0 = unlimited), angle-difference limits, free reference voltage",
}
# Nominal AC-OPF attempts of a MATPOWER grid, in order: Ipopt and PIPS from the middle of the
# variable bounds, PIPS from the file's own operating point (as `runopf` starts).
MATPOWER_INITS = ("ipopt-flat", "pips-flat", "pips-case")
OPF_INITS = ("flat", "pf", "results")  # tried in this order by `solve_nominal`
CACHE_VERSION = 2  # bump when the cached fields or the way they are computed change


def _valid_text() -> str:
    return (f"valid: {choices_text(CASE_NAMES)}, `matpower:<case>` (the MATPOWER library), or "
            "the path of a pandapower `.json` or MATPOWER `.m` file")


def resolve(name_or_path: str | Path) -> tuple[str, str | Path]:
    """`("case", name)` for a default case, `("library", path)` for a MATPOWER library case,
    `("file", path)` for an existing grid file.

    Raises `CaseError` for anything else (listing the valid names).
    """
    from gridtune.grids.library import is_library_ref, library_path

    text = str(name_or_path)
    if text in CASE_NAMES:
        return "case", text
    if is_library_ref(text):
        return "library", library_path(text)
    path = Path(text).expanduser()
    if path.suffix.lower() in GRID_SUFFIXES:
        if not path.is_file():
            raise CaseError(f"grid file `{path}` does not exist; {_valid_text()}")
        return "file", path
    if path.suffix:
        raise CaseError(f"grid file `{path}` has unsupported type `{path.suffix}`; {_valid_text()}")
    raise CaseError(f"unknown case `{text}`; {_valid_text()}")


def grid_name(name_or_path: str | Path) -> str:
    """The case name, the library case's name, or the stem of a user grid file (no existence
    check)."""
    text = str(name_or_path)
    if text.startswith("matpower:"):
        return text[len("matpower:"):]
    return text if text in CASE_NAMES else Path(text).stem


def formulation(name_or_path: str | Path) -> str:
    """The key of `FORMULATIONS` a grid is solved with: "matpower" for MATPOWER files."""
    kind, ref = resolve(name_or_path)
    return "matpower" if kind == "library" or Path(ref).suffix.lower() == ".m" else "pandapower"


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
        if kind == "library" or path.suffix.lower() == ".m":
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
    """`GridModel` of a case or grid file: for a MATPOWER file (library or user) the file's own
    arrays with MATPOWER's semantics (`grid_from_m`), else `grid_from_net(load_net(x), name)`."""
    return load_grid_with_notes(name_or_path)[0]


def load_grid_with_notes(name_or_path: str | Path) -> tuple[Any, list[str]]:
    """`(GridModel, notes)`: `load_grid` and what the MATPOWER conversion left out (see
    `grid_from_m`; no notes for the other grids)."""
    from gridtune.grids.model import grid_from_net

    if formulation(name_or_path) == "matpower":
        from gridtune.grids.matpower import grid_from_m

        return grid_from_m(resolve(name_or_path)[1], grid_name(name_or_path))
    return grid_from_net(load_net(name_or_path), grid_name(name_or_path)), []


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
        if formulation(name_or_path) == "matpower":  # solved by gridtune's own OPF code
            for module in ("model.py", "opf.py", "ipopt_opf.py"):
                h.update((here / module).read_bytes())
    return h.hexdigest()[:16]


def _cache_path(name_or_path: str | Path) -> Path:
    return cache_root() / "cases" / f"{grid_name(name_or_path)}-{content_key(name_or_path)}.json"


def _compute_row(name_or_path: str | Path, *, solve: bool = True) -> dict[str, Any]:
    """A `gridtune cases` row: sizes and, with `solve`, the nominal AC-OPF (key `nominal`)."""
    kind, ref = resolve(name_or_path)
    name = grid_name(name_or_path)
    form = formulation(name_or_path)
    if form == "matpower":
        grid, notes = load_grid_with_notes(name_or_path)
        on = grid.branch_in_service
        row = {"name": name, "source": str(Path(ref).resolve()), "formulation": form,
               "buses": grid.n_bus, "branches": int(on.sum()),
               "generators": int(grid.gen_in_service.sum()),
               "load_mw": float(grid.pd_mw.sum()), "limited_branches": int((on & (grid.rate_a_mva > 0)).sum()),
               "angle_limited_branches": int((on & grid.angle_limited).sum()),
               "repairs": 0, "repair_kinds": [], "notes": notes}
        if solve:
            row["nominal"] = dataclasses.asdict(solve_nominal_grid(grid))
        return row
    net, fixes = load_net_with_repairs(name_or_path)
    branches = len(net.line) + len(net.trafo) + len(net.get("impedance", []))
    row = {
        "name": name,
        "source": "pandapower.networks" if kind == "case" else str(Path(ref).resolve()),
        "formulation": form,
        "buses": int(len(net.bus)),
        "branches": int(branches),
        "generators": _dispatchable_generators(net),
        "load_mw": float(net.load.p_mw[net.load.in_service].sum()),
        "repairs": len(fixes),
        "repair_kinds": sorted({r.kind for r in fixes}),
    }
    if solve:
        result = solve_nominal(net, published_objective=PUBLISHED_OBJECTIVES.get(str(name_or_path)))
        row["nominal"] = dataclasses.asdict(result)
    return row


def solve_nominal_grid(grid: Any, *, inits: tuple[str, ...] = MATPOWER_INITS) -> NominalOpf:
    """Nominal AC-OPF of a `GridModel` in its own formulation (no cache): each of
    `MATPOWER_INITS` in turn until one converges."""
    from gridtune.grids.opf import solve_ac_opf
    from gridtune.grids.scenarios import uniform_scenario

    bad = [i for i in inits if i not in MATPOWER_INITS]
    if bad:
        raise CaseError(f"unknown OPF init `{bad[0]}`; valid: {choices_text(MATPOWER_INITS)}")
    scenario = uniform_scenario(grid, 1.0)
    start = time.perf_counter()
    failures = []
    for init in inits:
        try:
            with _quiet():
                if init == "ipopt-flat":
                    from gridtune.grids.ipopt_opf import MAX_ITERATIONS_COLD, IpoptOpf

                    result = IpoptOpf(grid, warm=False).solve(scenario,
                                                             max_iterations=2 * MAX_ITERATIONS_COLD)
                elif init == "pips-flat":
                    result = solve_ac_opf(grid, scenario)
                else:
                    result = solve_ac_opf(grid, scenario, init=_case_point(grid))
        except Exception as exc:  # solver failures on bad data: reported, the next init tried
            failures.append(f"{init}: {type(exc).__name__}: {exc}")
            continue
        if result.converged:
            return NominalOpf(True, result.objective, None, time.perf_counter() - start,
                              f"converged with init `{init}`", init)
        failures.append(f"{init}: {result.message or 'not converged'}")
    return NominalOpf(False, None, None, time.perf_counter() - start,
                      "AC-OPF did not converge (" + "; ".join(failures) + ")", None)


def _case_point(grid: Any) -> dict[str, Any]:
    """The operating point stored in a case file (bus Vm / Va, generator Pg / Qg)."""
    from pandapower.pypower.idx_bus import VA, VM
    from pandapower.pypower.idx_gen import PG, QG

    bus, gen = grid.ppc["bus"], grid.ppc["gen"]
    return {"vm_pu": bus[:, VM].copy(), "va_degree": bus[:, VA].copy(), "pg_mw": gen[:, PG].copy(),
            "qg_mvar": gen[:, QG].copy()}


def _dispatchable_generators(net: Any) -> int:
    """Units the OPF dispatches: ext_grids, gens and controllable sgens (as in `to_ppc`'s gen
    table); fixed sgens are negative loads (e.g. case300's 8 buses with negative demand)."""
    sgen = net.sgen
    controllable = sgen["controllable"].fillna(False).astype(bool) if "controllable" in sgen else False
    return int(len(net.ext_grid) + len(net.gen) + int((sgen.in_service & controllable).sum()))


def _row(name_or_path: str | Path, *, refresh: bool = False, solve: bool = True) -> dict[str, Any]:
    path = _cache_path(name_or_path)
    if path.is_file() and not refresh:
        try:
            row = json.loads(path.read_text())
            if "refused" in row:  # a file gridtune cannot model: the same error, instantly
                raise CaseError(row["refused"])
            if "nominal" in row or not solve:
                return row
        except (OSError, json.JSONDecodeError):
            pass  # a torn or foreign file: recompute and overwrite
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        row = _compute_row(name_or_path, solve=solve)
    except CaseError as exc:
        if formulation(name_or_path) != "matpower":
            raise
        row = {"refused": str(exc)}  # cached by the file's content like any row
        _write_row(path, row)
        raise
    _write_row(path, row)
    return row


def _write_row(path: Path, row: dict[str, Any]) -> None:
    from gridtune.files import atomic_write_text

    atomic_write_text(path, json.dumps(row, indent=1))  # concurrent readers never see half a file


def nominal_opf(name_or_path: str | Path, *, refresh: bool = False) -> NominalOpf:
    """Nominal AC-OPF of a case or grid file (cached by content, see `content_key`)."""
    return NominalOpf(**_row(name_or_path, refresh=refresh)["nominal"])


def case_info(name_or_path: str | Path, *, refresh: bool = False, solve: bool = True) -> dict[str, Any]:
    """One row of `gridtune cases`: sizes, formulation, repairs and the nominal AC-OPF.

    Keys: name, source, formulation, buses, branches, generators, load_mw, repairs,
    repair_kinds, converged, objective, published_objective, relative_difference, init,
    solve_time_s, message; MATPOWER grids add limited_branches, angle_limited_branches and
    notes. Without `solve` the nominal keys are None (and `message` says it was not solved).
    """
    row = _row(name_or_path, refresh=refresh, solve=solve)
    out = {k: v for k, v in row.items() if k != "nominal"}
    if "nominal" not in row:
        out.update(converged=None, objective=None, published_objective=None,
                   relative_difference=None, init=None, solve_time_s=None, message="not solved")
        return out
    nominal = NominalOpf(**row["nominal"])
    out.update(converged=nominal.converged, objective=nominal.objective,
               published_objective=nominal.published_objective,
               relative_difference=nominal.relative_difference, init=nominal.init,
               solve_time_s=nominal.solve_time_s, message=nominal.message)
    return out


def case_table(grids: list[str | Path] | None = None, *, refresh: bool = False,
               workers: int | None = None, library: str | None = None, solve: bool = True,
               max_buses: int | None = None) -> list[dict[str, Any]]:
    """`case_info` of each grid, solved in parallel where not cached.

    Args:
        grids: case names, `matpower:<case>` references or grid files (default: the default
            cases, or the whole library with `library`).
        library: add every case of a case library (`"matpower"`).
        solve: solve the nominal AC-OPF (default: True); False lists sizes only.
        max_buses: keep only grids with at most this many buses (sizes are read first).

    A bad name or missing file fails before any solve; a grid whose facts cannot be computed
    raises `CaseError` naming it.
    """
    from gridtune.grids.library import library_refs
    from gridtune.parallel import check_workers

    refs = [str(g) for g in grids] if grids else ([] if library else list(CASE_NAMES))
    if library:
        refs += library_refs(library)
    # a library listing shows the cases gridtune refuses as rows; a case named itself fails
    listed = set(library_refs(library)) - {str(g) for g in grids or []} if library else set()
    for ref in refs:
        resolve(ref)
    if max_buses is not None:
        if max_buses < 1:
            raise CaseError(f"--max-buses must be at least 1, got `{max_buses}`")
        refs = [ref for ref in refs if _bus_rows(ref) <= max_buses]
    if not refs:
        return []
    return _run_rows(refs, refresh=refresh, solve=solve, workers=min(check_workers(workers), len(refs)),
                     listed=listed)


def _bus_rows(ref: str) -> int:
    """Buses of a grid as its file states them (a MATPOWER file's rows, read without building
    the grid), else from its cached or computed row."""
    if formulation(ref) == "matpower":
        from gridtune.grids.matpower import file_sizes

        path = Path(resolve(ref)[1]).resolve()
        stat = path.stat()
        key = f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
        store = cache_root() / "cases" / "file-sizes.json"
        try:
            known = json.loads(store.read_text())
        except (OSError, json.JSONDecodeError):
            known = {}
        if key not in known:
            known[key] = file_sizes(path)["buses"]
            store.parent.mkdir(parents=True, exist_ok=True)
            tmp = store.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(known))
            os.replace(tmp, store)
        return int(known[key])
    return int(case_info(ref, solve=False)["buses"])


def _run_rows(refs: list[str], *, refresh: bool, solve: bool, workers: int | None,
              listed: set[str]) -> list[dict[str, Any]]:
    """Rows of `refs`; an error of a ref in `listed` becomes a `refused_row`, any other raises."""
    from gridtune.parallel import check_workers, run_tasks

    rows: list[Any] = [None] * len(refs)
    for i, row in run_tasks(_case_task, [(r, refresh, solve) for r in refs],
                            workers=min(check_workers(workers), len(refs))):
        rows[i] = row
    for ref, row in zip(refs, rows):
        if isinstance(row, str) and ref not in listed:
            raise CaseError(row)
    return [refused_row(ref, row) if isinstance(row, str) else row for ref, row in zip(refs, rows)]


def refused_row(ref: str, message: str) -> dict[str, Any]:
    """The row of a library case gridtune refuses: the file's sizes, `refused` = the reason.

    A library listing shows such cases instead of stopping at the first; a user who names one
    gets the `CaseError` itself."""
    from gridtune.grids.matpower import file_sizes

    _, path = resolve(ref)
    return {"name": grid_name(ref), "source": str(path), "formulation": "matpower",
            **file_sizes(path), "load_mw": None, "repairs": 0, "repair_kinds": [], "notes": [],
            "refused": message, "converged": None, "objective": None, "published_objective": None,
            "relative_difference": None, "init": None, "solve_time_s": None,
            "message": f"refused: {message}"}


def _case_task(item: tuple[str, bool, bool]) -> dict[str, Any] | str:
    ref, refresh, solve = item
    try:
        return case_info(ref, refresh=refresh, solve=solve)
    except GridtuneError as exc:  # reported by the parent as one line
        return str(exc)
