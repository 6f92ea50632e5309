"""Registry of the default IEEE cases and user grid files (pandapower JSON, MATPOWER .m).

Preliminary version: stock cases by name, user files by path. Repairs and the cached nominal
AC-OPF follow.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from gridtune.errors import CaseError, choices_text

CASE_NAMES: tuple[str, ...] = ("case9", "case14", "case24_ieee_rts", "case30", "case39", "case57",
                               "case118", "case300")
CASES = CASE_NAMES  # alias used by gridtune.studies.spec


def grid_name(name_or_path: str | Path) -> str:
    """The case name, or the stem of a user grid file."""
    text = str(name_or_path)
    if text in CASE_NAMES:
        return text
    return Path(text).stem


def load_net(name_or_path: str | Path) -> Any:
    """A fresh pandapower net: a default case by name, or a user `.json` / `.m` file by path."""
    import pandapower.networks as pn

    text = str(name_or_path)
    if text in CASE_NAMES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return getattr(pn, text)()
    raise CaseError(f"unknown case `{text}`; valid: {choices_text(CASE_NAMES)}, "
                    "or a path to a pandapower `.json` or MATPOWER `.m` file")


def load_grid(name_or_path: str | Path) -> Any:
    """`GridModel` of a case or grid file (see `load_net`)."""
    from gridtune.grids.model import grid_from_net

    return grid_from_net(load_net(name_or_path), grid_name(name_or_path))
