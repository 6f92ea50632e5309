"""Typed loading of TOML specs (recipes, constraints, studies).

Specs are validated once, at the edge: a TOML table becomes a frozen dataclass; unknown keys,
wrong types and bad values raise `SpecError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from gridtune.errors import SpecError, choices_text

T = TypeVar("T")


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing file or a syntax error raises `SpecError` with the line."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file `{path}` does not exist")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:  # message carries "(at line N, column M)"
        raise SpecError(f"{path}: malformed TOML: {exc}") from exc


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(annotation)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_type_ok(v, a) for v, a in zip(value, args))
        inner = args[0] if args else Any
        return all(_type_ok(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def from_table(cls: type[T], table: dict[str, Any], *, where: str) -> T:
    """Build dataclass `cls` from a TOML table, rejecting unknown keys and wrong types.

    Nested dataclass fields are built recursively from sub-tables. `where` names the file (and
    table) for messages, e.g. ``"case14.toml [loads]"``.
    """
    if not isinstance(table, dict):
        raise SpecError(f"{where}: expected a table, got `{table!r}`")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(table) - set(fields)
    if unknown:
        key = sorted(unknown)[0]
        raise SpecError(f"{where}: unknown key `{key}`; valid keys: {choices_text(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in table.items():
        ann = hints[name]
        if dataclasses.is_dataclass(ann):
            kwargs[name] = from_table(ann, value, where=f"{where} [{name}]")
            continue
        if not _type_ok(value, ann):
            raise SpecError(f"{where}: key `{name}` has bad value `{value!r}`; expected {_describe(ann)}")
        value = _coerce(value, ann)
        kwargs[name] = value
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise SpecError(f"{where}: missing required key `{missing[0]}`")
    try:
        return cls(**kwargs)
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None


def _coerce(value: Any, annotation: Any) -> Any:
    """ints where floats are expected become floats; lists where tuples are expected, tuples."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None) and _type_ok(value, arg):
                return _coerce(value, arg)
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(annotation)
        if args and args[-1] is not Ellipsis:
            return tuple(_coerce(v, a) for v, a in zip(value, args))
        return tuple(_coerce(v, args[0] if args else Any) for v in value)
    if origin is list and isinstance(value, list):
        args = typing.get_args(annotation)
        return [_coerce(v, args[0] if args else Any) for v in value]
    return value


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + choices_text([str(a) for a in typing.get_args(annotation)])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "nothing"
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def to_table(obj: Any) -> dict[str, Any]:
    """Dataclass -> plain dict suitable for TOML / JSON (tuples become lists, None dropped)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            v = to_table(v)
        elif isinstance(v, tuple):
            v = [to_table(x) if dataclasses.is_dataclass(x) else x for x in v]
        if v is not None:
            out[f.name] = v
    return out


RESOURCES = Path(__file__).resolve().parent / "resources"
"""The data files shipped inside the package: `gridtune/resources/<kind>/<name>.toml`."""

SHIPPED_KINDS = ("datasets", "constraints", "studies")
"""`datasets`: recipes of the default cases (and variants such as `case30_rerated`);
`constraints`: constraint sets; `studies`: study specs (`quickstart`, ...)."""


def _check_kind(kind: str) -> None:
    if kind not in SHIPPED_KINDS:
        raise ValueError(f"unknown kind of shipped file `{kind}`; valid: {choices_text(SHIPPED_KINDS)}")


def shipped_path(kind: str, name: str) -> Path | None:
    """The file shipped as `<kind>/<name>.toml` inside the package (e.g. ``shipped_path(
    "constraints", "monotone_load")``); None when `name` is not a shipped name of that kind.

    Reads only the package's own `resources` directory, so a source checkout and an installed
    wheel resolve the same names to the same files.
    """
    _check_kind(kind)
    name = str(name)
    if not name or name != Path(name).name or name.startswith(".") or name.endswith(".toml"):
        return None
    path = RESOURCES / kind / f"{name}.toml"
    return path if path.is_file() else None


def shipped_names(kind: str) -> list[str]:
    """Sorted names of the files shipped under `kind` (the valid choices in error messages)."""
    _check_kind(kind)
    root = RESOURCES / kind
    return sorted(p.stem for p in root.glob("*.toml")) if root.is_dir() else []


def resolve_spec_file(kind: str, ref: str | Path, *, base_dir: str | Path | None = None) -> Path:
    """A spec file named by the user: their own file when it exists (relative to `base_dir`
    when given), else the shipped `<kind>` file named `ref`, else the user's path unchanged
    (so that reading it reports the missing file). A user's file always wins over a shipped
    name."""
    path = Path(ref)
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    if path.is_file():
        return path
    shipped = shipped_path(kind, str(ref))
    return shipped if shipped is not None else path
