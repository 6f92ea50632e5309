"""Property-based tests: generated recipes, study specs, constraint specs and small MATPOWER and
pandapower grid files, valid and invalid. Every input either loads or ends in one
`GridtuneError` line (exit 2 from the CLI); any other exception is a failure.

Inputs start from shipped files and are mutated: keys deleted, values replaced by values of other
types or out of range, unknown keys added, text cut short or spliced. The checks parse and
validate only (no solve), so 1000+ examples fit in the suite's budget.
"""

from __future__ import annotations

import copy
import json
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridtune.errors import GridtuneError

RESOURCES = Path(__file__).resolve().parents[1] / "gridtune" / "resources"
DATA = Path(__file__).resolve().parent / "data"
FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
COUNTS: dict[str, int] = {}


def fuzz(examples: int) -> settings:
    return settings(FUZZ, max_examples=examples)


def outcome(kind: str, fn, *args: Any) -> str:
    """`ok` or `error`; an error must be a GridtuneError of one non-empty line."""
    COUNTS[kind] = COUNTS.get(kind, 0) + 1
    try:
        fn(*args)
    except GridtuneError as exc:
        text = str(exc)
        assert text.strip() and "\n" not in text, f"{kind}: not one line: {text!r}"
        assert "Traceback" not in text
        return "error"
    return "ok"


# ---- mutations of TOML tables ------------------------------------------------------------------

scalars = st.one_of(
    st.integers(-3, 3), st.integers(-10**9, 10**9), st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from(["", "auto", "case9", "case14", "nowhere", "full", "penalty", "-1", "lagrangian",
                     "monotonic", "logit", "load", "feasibility", "opf", "x" * 40]),
    st.text(max_size=8))
values = st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(
    st.sampled_from(["a", "scale", "samples", "name", "factor", "zone"]), scalars, max_size=2))


def _paths(table: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in table.items():
        out.append((*prefix, k))
        if isinstance(v, dict):
            out += _paths(v, (*prefix, k))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for i, x in enumerate(v):
                out += _paths(x, (*prefix, k, i))
    return out


def _parent(table: Any, path: tuple) -> Any:
    for k in path[:-1]:
        table = table[k]
    return table


def _at(table: Any, path: tuple) -> Any:
    for k in path:
        table = table[k]
    return table


@st.composite
def mutated(draw, base: dict) -> dict:
    """`base` with 0-3 mutations (0 keeps it valid: shipped files must load)."""
    table = copy.deepcopy(base)
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(table)
        op = draw(st.sampled_from(["replace", "delete", "add"] if paths else ["add"]))
        if op == "add":
            holders = [()] + [p for p in paths if isinstance(_at(table, p), dict)]
            target = _at(table, draw(st.sampled_from(holders)))
            target[draw(st.sampled_from(["unknown_key", "samples", "seed", "scale", "name",
                                         "epochs", "kind", "factor"]))] = draw(values)
            continue
        path = draw(st.sampled_from(paths))
        parent = _parent(table, path)
        if op == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(values)
    return table


def _toml_text(table: dict) -> str:
    def clean(v: Any) -> Any:  # TOML has no null; lists of mixed tables and scalars are fine
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return tomli_w.dumps(clean(table))


@st.composite
def spliced(draw, text: str) -> str:
    """`text` cut short or with a few characters replaced (TOML syntax errors mostly)."""
    if draw(st.booleans()):
        return text[: draw(st.integers(0, len(text)))]
    chars = list(text)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(chars) - 1))
        chars[i] = draw(st.sampled_from(list("=[]{}\"'#,.\n0x-") + ["\u00e9", "\x00"]))
    return "".join(chars)


def _documents(kind: str, names: list[str]) -> list[tuple[str, dict]]:
    return [(n, tomllib.loads((RESOURCES / kind / f"{n}.toml").read_text())) for n in names]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


# ---- recipes -----------------------------------------------------------------------------------

RECIPES = _documents("datasets", ["case9", "case14", "case30_changed", "case118_changed"])


def _load_recipe(path: Path) -> None:
    from gridtune.grids.recipe import load_recipe

    recipe = load_recipe(path)
    recipe.cache_key()


@fuzz(700)
@given(data=st.data())
def test_fuzzed_recipes_load_or_fail_in_one_line(tmp_path, data):
    name, base = data.draw(st.sampled_from(RECIPES))
    text = _toml_text(data.draw(mutated(base)))
    if data.draw(st.integers(0, 9)) == 0:
        text = data.draw(spliced(text))
    outcome("recipe", _load_recipe, _write(tmp_path, "recipe.toml", text))


def test_shipped_recipes_stay_valid(tmp_path):
    for name, base in RECIPES:
        assert outcome("recipe", _load_recipe, _write(tmp_path, f"{name}.toml", _toml_text(base))) == "ok"


# ---- constraint specs --------------------------------------------------------------------------

CONSTRAINTS = _documents("constraints", ["monotone_load", "monotone_cost", "power_balance",
                                         "nodal_balance", "bounds"])
TASKS = ("feasibility", "opf", "cost")


def _load_constraints(path: Path, task: str) -> None:
    from gridtune.constraints.spec import load_constraint_set

    load_constraint_set(path, task)


@fuzz(150)
@given(data=st.data())
def test_fuzzed_constraint_specs_load_or_fail_in_one_line(tmp_path, data):
    name, base = data.draw(st.sampled_from(CONSTRAINTS))
    table = data.draw(mutated(base))
    table.pop("plugins", None)  # plugins execute Python files; they are tested by name elsewhere
    text = _toml_text(table)
    if data.draw(st.integers(0, 9)) == 0:
        text = data.draw(spliced(text))
    outcome("constraint", _load_constraints, _write(tmp_path, "c.toml", text),
            data.draw(st.sampled_from(TASKS)))


# ---- study specs -------------------------------------------------------------------------------

STUDIES = _documents("studies", ["quickstart", "constraints", "changed_grid", "ieee_transfer"])


def _load_study(path: Path) -> None:
    from gridtune.studies.plan import make_plan
    from gridtune.studies.spec import load_study

    make_plan(load_study(path))


@fuzz(100)
@given(data=st.data())
def test_fuzzed_study_specs_load_or_fail_in_one_line(tmp_path, data):
    name, base = data.draw(st.sampled_from(STUDIES))
    text = _toml_text(data.draw(mutated(base)))
    if data.draw(st.integers(0, 9)) == 0:
        text = data.draw(spliced(text))
    outcome("study", _load_study, _write(tmp_path, "study.toml", text))


def test_fuzzed_study_specs_through_the_cli(tmp_path, capsys):
    """The same contract at the command line: exit 0 or one line and exit 2."""
    from gridtune.cli import main

    @fuzz(40)
    @given(data=st.data())
    def run(data):
        name, base = data.draw(st.sampled_from(STUDIES))
        path = _write(tmp_path, "study.toml", _toml_text(data.draw(mutated(base))))
        COUNTS["study-cli"] = COUNTS.get("study-cli", 0) + 1
        code = main(["study", "plan", str(path)])
        err = capsys.readouterr().err
        assert (code, err) == (0, "") or (code == 2 and err.count("\n") == 1
                                          and err.startswith("gridtune study: error: ")), err

    run()


# ---- MATPOWER files ----------------------------------------------------------------------------

TINY4 = (DATA / "tiny4.m").read_text()
FIELDS = ("bus", "gen", "branch", "gencost")


def _matrices(text: str) -> dict[str, list[list[str]]]:
    from gridtune.grids.matpower import _strip_comments

    out = {}
    body = _strip_comments(text)
    for field in FIELDS:
        block = body.split(f"mpc.{field} = [")[1].split("];")[0]
        out[field] = [r.split() for r in block.replace(";", "\n").splitlines() if r.split()]
    return out


def _m_text(matrices: dict[str, list[list[str]]], base_mva: str, drop: str | None) -> str:
    lines = ["function mpc = fuzz", "mpc.version = '2';", f"mpc.baseMVA = {base_mva};"]
    for field in FIELDS:
        if field == drop:
            continue
        lines.append(f"mpc.{field} = [")
        lines += ["\t" + "\t".join(r) + ";" for r in matrices[field]]
        lines.append("];")
    return "\n".join(lines) + "\n"


numbers = st.one_of(st.sampled_from(["0", "1", "2", "3", "4", "5", "-1", "1e9", "Inf", "-Inf",
                                     "NaN", "0.5", "abc", "1,2"]),
                    st.floats(-1e4, 1e4, allow_nan=False).map(lambda x: f"{x:.6g}"))


@st.composite
def matpower_texts(draw) -> str:
    m = {k: [list(r) for r in v] for k, v in _matrices(TINY4).items()}
    for _ in range(draw(st.integers(0, 4))):
        field = draw(st.sampled_from(FIELDS))
        rows = m[field]
        op = draw(st.sampled_from(["value", "value", "value", "drop_row", "drop_column", "dup_row"]))
        if op == "value" and rows:
            r = draw(st.integers(0, len(rows) - 1))
            c = draw(st.integers(0, len(rows[r]) - 1))
            rows[r][c] = draw(numbers)
        elif op == "drop_row" and rows:
            rows.pop(draw(st.integers(0, len(rows) - 1)))
        elif op == "drop_column" and rows:
            m[field] = [r[:-1] for r in rows]
        elif op == "dup_row" and rows:
            rows.append(list(rows[draw(st.integers(0, len(rows) - 1))]))
    drop = draw(st.sampled_from([None] * 8 + list(FIELDS)))
    text = _m_text(m, draw(st.sampled_from(["100", "100", "0", "-5", "NaN"])), drop)
    if draw(st.integers(0, 9)) == 0:
        text = draw(spliced(text))
    return text


def _load_grid(path: Path) -> None:
    from gridtune.grids.cases import load_grid

    load_grid(str(path))


@fuzz(50)
@given(text=matpower_texts())
def test_fuzzed_matpower_files_load_or_fail_in_one_line(tmp_path, text):
    outcome("matpower", _load_grid, _write(tmp_path, "fuzz.m", text))


def test_the_unmutated_matpower_file_loads(tmp_path):
    m = _matrices(TINY4)
    assert outcome("matpower", _load_grid, _write(tmp_path, "ok.m", _m_text(m, "100", None))) == "ok"


# ---- pandapower JSON files ---------------------------------------------------------------------

def _case5_json() -> dict:
    """pandapower's case5, written by the installed pandapower (so its format version loads)."""
    import pandapower as pp
    import pandapower.networks as pn

    return json.loads(pp.to_json(pn.case5()))


BASE_NET = _case5_json()
ELEMENTS = ("bus", "line", "load", "gen", "ext_grid", "poly_cost")


@st.composite
def pandapower_texts(draw) -> str:
    doc = copy.deepcopy(BASE_NET)
    objects = doc["_object"]
    for _ in range(draw(st.integers(0, 3))):
        element = draw(st.sampled_from([e for e in ELEMENTS if e in objects] or ["bus"]))
        op = draw(st.sampled_from(["value", "value", "empty", "delete", "garble"]))
        if element not in objects:
            continue
        entry = objects[element]
        if op == "delete":
            del objects[element]
            continue
        if not isinstance(entry, dict) or "_object" not in entry:
            continue
        try:
            frame = json.loads(entry["_object"])
        except ValueError:  # garbled by an earlier mutation
            continue
        if op == "empty":
            frame["data"], frame["index"] = [], []
        elif op == "garble":
            entry["_object"] = entry["_object"][: draw(st.integers(0, len(entry["_object"])))]
            continue
        elif frame["data"]:
            r = draw(st.integers(0, len(frame["data"]) - 1))
            c = draw(st.integers(0, len(frame["data"][r]) - 1))
            frame["data"][r][c] = draw(st.one_of(
                st.sampled_from([None, -1, 0, 7, 1e9, "x", True]),
                st.floats(-1e3, 1e3, allow_nan=False)))
        entry["_object"] = json.dumps(frame)
    text = json.dumps(doc)
    if draw(st.integers(0, 9)) == 0:
        text = draw(spliced(text))
    return text


@fuzz(25)
@given(text=pandapower_texts())
def test_fuzzed_pandapower_files_load_or_fail_in_one_line(tmp_path, text):
    outcome("pandapower", _load_grid, _write(tmp_path, "fuzz.json", text))


def test_the_unmutated_pandapower_file_loads(tmp_path):
    assert outcome("pandapower", _load_grid, _write(tmp_path, "ok.json", json.dumps(BASE_NET))) == "ok"


def test_zz_at_least_1000_examples_ran():
    """Runs last in this module (pytest keeps file order): the kinds together reach 1000."""
    if len(COUNTS) < 5:
        pytest.skip("run with the whole module to count examples")
    assert sum(COUNTS.values()) >= 1000, COUNTS
    print("fuzz examples:", COUNTS, "total", sum(COUNTS.values()))


_ = math  # floats above include nan / inf through hypothesis
