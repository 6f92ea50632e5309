"""Constraint specs (TOML) -> `ConstraintSet`.

A spec declares one or more constraints and, optionally, formulation settings:

    plugins = ["my_constraints.py"]      # optional: Python files (relative to the spec) that
                                         # register user constraint kinds
    [formulation]
    name = "lagrangian"                  # used when the command line names none
    [formulation.lagrangian]             # settings per formulation (see formulations.py)
    dual_lr = 0.1

    [[constraint]]
    kind = "monotonic"                   # a registered kind
    name = "monotone_load"               # default: the kind
    output = "p_infeasible"
    direction = "load"
    tolerance = 1e-4

Every key of a `[[constraint]]` table other than `kind` is a field of that kind's dataclass;
unknown keys, wrong types and bad values raise `SpecError` naming the file and the table.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import gridtune.constraints.builtin  # noqa: F401  (registers the built-in kinds)
from gridtune.constraints.base import Constraint, ConstraintSet
from gridtune.constraints.formulations import FORMULATIONS
from gridtune.constraints.registry import resolve_constraint
from gridtune.errors import SpecError, choices_text
from gridtune.specs import from_table, read_toml, resolve_spec_file, shipped_names

TOP_KEYS = ("plugins", "formulation", "constraint")


def load_plugin(path: Path) -> None:
    """Import a Python file so that the constraint kinds it registers become available."""
    if not path.is_file():
        raise SpecError(f"constraint plugin `{path}` does not exist")
    module_name = f"gridtune_plugin_{path.stem}_{abs(hash(str(path.resolve())))}"
    if module_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise SpecError(f"constraint plugin `{path}` cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SpecError:
        raise
    except Exception as exc:  # a user's file may fail in any way; report it as one line
        del sys.modules[module_name]
        raise SpecError(f"constraint plugin `{path}` failed to import: "
                        f"{type(exc).__name__}: {exc}") from exc


def _formulation_table(table: Any, where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise SpecError(f"{where}: expected a table, got `{table!r}`")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key == "name":
            if value not in FORMULATIONS:
                raise SpecError(f"{where}: unknown formulation `{value}`; valid formulations: "
                                f"{choices_text(FORMULATIONS)}")
        elif key in FORMULATIONS:
            if not isinstance(value, dict):
                raise SpecError(f"{where}: `{key}` must be a table of settings, got `{value!r}`")
        else:
            raise SpecError(f"{where}: unknown key `{key}`; valid keys: "
                            f"{choices_text(('name', *FORMULATIONS))}")
        out[key] = value
    return out


def build_constraint(table: dict[str, Any], *, where: str) -> Constraint:
    """One `[[constraint]]` table -> a `Constraint` of its kind."""
    if not isinstance(table, dict):
        raise SpecError(f"{where}: expected a table, got `{table!r}`")
    if "kind" not in table:
        raise SpecError(f"{where}: missing required key `kind`")
    rest = dict(table)
    kind = rest.pop("kind")
    if not isinstance(kind, str):
        raise SpecError(f"{where}: key `kind` has bad value `{kind!r}`; expected a string")
    try:
        cls = resolve_constraint(kind)
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None
    rest.setdefault("name", kind)
    return from_table(cls, rest, where=where)


def load_constraint_set(spec: str | Path, task: str) -> ConstraintSet:
    """Read a constraint spec and check every constraint applies to `task`.

    Args:
        spec: path of the TOML file, or the name of a shipped constraint set
            (``"monotone_load"``; see `shipped_names("constraints")`) when no such file exists.
        task: `feasibility`, `opf` or `cost` (or any task a user constraint declares).

    Raises:
        SpecError: unknown kind / output / direction / formulation / key, bad value, or a
            constraint that does not apply to `task` (named, with the tasks it applies to).
    """
    path = resolve_spec_file("constraints", spec)
    if not path.is_file() and path.suffix != ".toml":
        raise SpecError(f"constraint spec `{spec}` is neither a file nor a shipped constraint set; "
                        f"shipped: {choices_text(shipped_names('constraints'))}")
    doc = read_toml(path)
    unknown = set(doc) - set(TOP_KEYS)
    if unknown:
        raise SpecError(f"{path}: unknown key `{sorted(unknown)[0]}`; valid keys: "
                        f"{choices_text(TOP_KEYS)}")
    plugins = doc.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise SpecError(f"{path}: key `plugins` has bad value `{plugins!r}`; expected a list of "
                        "file paths")
    for p in plugins:
        load_plugin((path.parent / p) if not Path(p).is_absolute() else Path(p))
    formulation = _formulation_table(doc.get("formulation", {}), f"{path} [formulation]")
    tables = doc.get("constraint", [])
    if not isinstance(tables, list):
        raise SpecError(f"{path}: `constraint` must be an array of tables ([[constraint]])")
    constraints = [build_constraint(t, where=f"{path} [[constraint]] #{i + 1}")
                   for i, t in enumerate(tables)]
    try:
        return ConstraintSet(constraints, task, formulation=formulation, source=str(path))
    except SpecError as exc:
        msg = str(exc)
        raise SpecError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
