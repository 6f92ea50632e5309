"""The MATPOWER case library: names, errors, `gridtune cases --library`, recipes on library cases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gridtune.errors import CaseError, SpecError
from gridtune.grids.cases import case_info, case_table, formulation, load_grid, resolve
from gridtune.grids.library import library_cases, library_path

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "import sys; from gridtune.cli import main; sys.exit(main())"]


def test_library_lists_cases_and_not_profiles_or_contingency_tables():
    names = library_cases()
    assert {"case9", "case30", "case_ACTIVSg200", "case_ACTIVSg2000", "case2869pegase"} <= set(names)
    assert not [n for n in names if n.startswith(("scenarios_", "contab_"))]
    assert library_path("matpower:case9").name == "case9.m"
    assert resolve("matpower:case_ACTIVSg200") == ("library", library_path("case_ACTIVSg200"))
    assert formulation("matpower:case9") == "matpower" and formulation("case9") == "pandapower"


def test_unknown_library_case_names_close_matches():
    with pytest.raises(CaseError, match=r"^unknown MATPOWER library case `case_ACTIVSg20`; close "
                                        r"matches: `matpower:case_ACTIVSg200`, "):
        resolve("matpower:case_ACTIVSg20")
    with pytest.raises(CaseError, match=r"unknown MATPOWER library case `zzz`; `gridtune cases "
                                        r"--library matpower --no-solve` lists all"):
        load_grid("matpower:zzz")


def test_library_case_is_solved_in_matpowers_formulation_to_its_published_optimum():
    row = case_info("matpower:case30")
    assert row["formulation"] == "matpower" and row["converged"]
    # MATPOWER's runopf on case30: 576.89 $/h with binding branch limits
    assert row["objective"] == pytest.approx(576.8923, rel=1e-5)
    assert (row["buses"], row["branches"], row["generators"], row["limited_branches"]) == (30, 41, 6, 41)
    assert row["init"] == "ipopt-flat"
    assert load_grid("matpower:case30").flow_limit == "apparent_power"
    assert load_grid("case30").flow_limit == "current"


def test_listing_without_solving_filters_by_size_and_shows_refused_cases():
    rows = case_table(library="matpower", solve=False, max_buses=9, workers=1)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"case4_dist", "case4gs", "case5", "case6ww", "case9", "case9Q", "case9target"}
    assert by_name["case9"]["converged"] is None and by_name["case9"]["message"] == "not solved"
    assert by_name["case9Q"]["refused"].endswith("valid: costs on active power only")
    assert "lacks `mpc.gencost`" in by_name["case4gs"]["refused"]
    with pytest.raises(CaseError, match="has reactive power costs"):  # named, it fails
        case_table(["matpower:case9Q"], workers=1)


def test_cli_lists_the_library_and_refuses_an_unknown_case_in_one_line(tmp_path):
    env = {"PYTHONPATH": str(REPO), "GRIDTUNE_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([*CLI, "cases", "--library", "matpower", "--max-buses", "6", "--json",
                           "--workers", "1"], capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == {"case4_dist", "case4gs", "case5", "case6ww"}
    assert rows["case5"]["converged"] and rows["case5"]["objective"] == pytest.approx(17551.89, rel=1e-5)
    proc = subprocess.run([*CLI, "cases", "matpower:case_ACTIVSg20"], capture_output=True, text=True,
                          cwd=REPO, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown MATPOWER library case `case_ACTIVSg20`" in lines[0]


def test_recipe_on_a_library_case_builds_with_the_grids_own_limits(tmp_path):
    from gridtune.grids.build import build_dataset
    from gridtune.grids.recipe import load_recipe

    recipe = tmp_path / "lib.toml"
    recipe.write_text('case = "matpower:case9"\nsamples = 6\nseed = 1\n[loads]\nscale = [0.9, 1.3]\n'
                      '[topology]\nn_minus_1 = 0.0\n[labels]\ndc = false\nsdp = false\n')
    out = tmp_path / "ds"
    build_dataset(load_recipe(recipe), out, workers=1, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    ratings = manifest["ratings"]
    assert ratings["rerated"] is False and ratings["branch_limits"] == "the grid's own"
    assert ratings["formulation"] == "matpower" and ratings["flow_limit"] == "apparent_power"
    assert ratings["own_rated_branches"] == 9
    assert manifest["grid"]["name"] == "case9" and sum(manifest["counts"].values()) == 6
    assert manifest["counts"].get("feasible", 0) >= 1
    grid = json.loads((out / "grid.json").read_text())["grid"]
    assert grid["flow_limit"] == "apparent_power"


def test_changes_keep_matpowers_limits_and_refuse_what_they_would_lose():
    from gridtune.grids.changes import ChangesSpec, changed_grid

    spec = ChangesSpec(scale_loads=({"buses": [5], "factor": 1.1},))
    grid = changed_grid("matpower:case9", spec, where="r.toml [changes]")
    assert grid.flow_limit == "apparent_power"
    assert grid.pd_mw.sum() == pytest.approx(load_grid("matpower:case9").pd_mw.sum() + 9.0)
    angle = str(REPO / "tests" / "data" / "mp_angle.m")
    with pytest.raises(SpecError, match=r"r.toml \[changes\]: `case` = `.*mp_angle.m` has "
                                        r"angle-difference limits on 1 branches, which \[changes\] would lose"):
        changed_grid(angle, ChangesSpec(scale_loads=({"buses": [3], "factor": 1.1},)), where="r.toml [changes]")
