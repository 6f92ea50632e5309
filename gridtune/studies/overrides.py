"""Command-line overrides of a study spec: `--set KEY=VALUE`, dotted keys for sub-tables.

    table = apply_overrides(read_toml(path), dict([parse_assignment("data.samples=100")]))

The overridden table is then validated like the file (`gridtune.studies.spec.load_study`).
"""

from __future__ import annotations

import tomllib
from typing import Any

from gridtune.errors import SpecError


def parse_assignment(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` from the command line (`--set data.samples=100`); VALUE is a TOML value, and
    a bare word is a string (`--set task=opf`)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"--set `{text}`: expected KEY=VALUE, e.g. `seeds=[0, 1]`")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.strip(), parsed


def apply_overrides(table: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`table` with each dotted key of `overrides` replaced (sub-tables created as needed);
    tuples become lists, as TOML would give them. `table` is changed in place and returned."""
    for key, value in overrides.items():
        value = list(value) if isinstance(value, tuple) else value
        *parents, leaf = key.split(".")
        node = table
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SpecError(f"override `{key}`: `{part}` is not a table")
        node[leaf] = value
    return table
