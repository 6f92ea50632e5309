"""Grid changes as data: each `[changes]` operation, reference checks, islanding, hashing, builds."""

import dataclasses
import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from gridtune.errors import SpecError
from gridtune.grids.build import build_dataset, dataset_key
from gridtune.grids.cases import load_grid, load_net
from gridtune.grids.changes import ChangesSpec, ScaleLoads, apply_to_net, changed_grid, recipe_grid
from gridtune.grids.model import grid_hash
from gridtune.grids.recipe import Recipe, load_recipe, recipe_for
from gridtune.specs import from_table

DATA = Path(__file__).resolve().parents[1] / "data"

# case14 (pandapower indices): lines 0..14, transformers 0..4 (grid rows 15..19), generators
# 0..3 (gen table; the slack is ext_grid 0 at bus 0); trafo 3 (bus 6 - bus 7) is bus 7's only link.


def changes(**ops) -> ChangesSpec:
    return from_table(ChangesSpec, ops, where="[changes]")


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.fixture(scope="module")
def case14():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_grid("case14")


# ---- each operation --------------------------------------------------------------------------

def test_add_branch_like_copies_the_line_and_its_rating(case14):
    grid = changed_grid("case14", changes(add_branches=[{"from_bus": 5, "to_bus": 13, "like": 7}]))
    assert grid.n_branch == case14.n_branch + 1
    new = 15  # appended after the 15 lines, before the transformers
    assert (grid.f_bus[new], grid.t_bus[new]) == (5, 13)
    for attr in ("r_pu", "x_pu", "b_pu", "rate_a_mva"):
        assert getattr(grid, attr)[new] == pytest.approx(getattr(case14, attr)[7])
    # existing branches unchanged, transformers shifted by one row
    np.testing.assert_allclose(grid.x_pu[:15], case14.x_pu[:15])
    np.testing.assert_allclose(grid.x_pu[16:], case14.x_pu[15:])


def test_add_branch_from_parameters_in_pandapower_units():
    net = load_net("case14")
    spec = changes(add_branches=[{"from_bus": 1, "to_bus": 4, "r_ohm_per_km": 0.5,
                                  "x_ohm_per_km": 2.0, "c_nf_per_km": 10.0, "length_km": 30.0,
                                  "max_i_ka": 0.4, "parallel": 2, "name": "new 2-5"}])
    apply_to_net(net, spec)
    line = net.line.iloc[-1]
    assert (line.from_bus, line.to_bus, line.parallel, line["name"]) == (1, 4, 2, "new 2-5")
    assert (line.r_ohm_per_km, line.x_ohm_per_km, line.c_nf_per_km, line.length_km) == (0.5, 2.0, 10.0, 30.0)
    assert line.max_loading_percent == 100.0  # pandapower's default NaN would mean "no limit"
    grid = changed_grid("case14", spec)
    vn = float(net.bus.vn_kv[1])
    assert grid.rate_a_mva[15] == pytest.approx(0.4 * 2 * vn * math.sqrt(3))
    z_base = vn ** 2 / grid.base_mva
    assert grid.x_pu[15] == pytest.approx(2.0 * 30.0 / z_base / 2)  # two circuits in parallel


def test_add_branch_like_with_overrides_and_parallel(case14):
    grid = changed_grid("case14", changes(add_branches=[
        {"from_bus": 5, "to_bus": 13, "like": 7, "length_km": 2.0, "parallel": 2}]))
    assert grid.x_pu[15] == pytest.approx(case14.x_pu[7])  # 2x the length, 2 circuits
    assert grid.rate_a_mva[15] == pytest.approx(2 * case14.rate_a_mva[7])


def test_remove_branches_takes_lines_and_transformers_out(case14):
    grid = changed_grid("case14", changes(remove_branches=[{"line": 2}, {"trafo": 0}]))
    assert grid.n_branch == case14.n_branch - 2
    pairs = set(zip(grid.f_bus.tolist(), grid.t_bus.tolist()))
    assert (1, 2) not in pairs and (3, 6) not in pairs  # line 2 is bus 1-2, trafo 0 bus 3-6


def test_remove_and_add_generators(case14):
    grid = changed_grid("case14", changes(
        remove_generators=[{"gen": 1}],
        add_generators=[{"bus": 8, "min_p_mw": 5, "max_p_mw": 60, "min_q_mvar": -15,
                         "max_q_mvar": 25, "vm_pu": 1.02, "c2": 0.01, "c1": 30, "c0": 4}]))
    assert grid.n_gen == case14.n_gen  # one retired, one added
    assert 2 not in grid.gen_bus.tolist()  # gen 1 sat at bus 2
    g = int(np.flatnonzero(grid.gen_bus == 8)[0])
    assert [grid.min_p_mw[g], grid.max_p_mw[g], grid.min_q_mvar[g], grid.max_q_mvar[g]] == pytest.approx([5, 60, -15, 25])
    np.testing.assert_allclose(grid.gen_cost()[g], [0.01, 30, 4])
    assert grid.bus_type[8] == 2  # a PV bus now


def test_rerate_branches_scales_or_sets(case14):
    grid = changed_grid("case14", changes(rerate_branches=[{"line": 0, "factor": 0.5},
                                                           {"trafo": 1, "rate_mva": 42.0}]))
    assert grid.rate_a_mva[0] == pytest.approx(0.5 * case14.rate_a_mva[0])
    assert grid.rate_a_mva[16] == 42.0  # trafo 1 is grid row 15 + 1
    np.testing.assert_allclose(grid.rate_a_mva[1:16], case14.rate_a_mva[1:16])


def test_scale_loads_by_buses_multiplies_p_and_q(case14):
    grid = changed_grid("case14", changes(scale_loads=[{"buses": [3, 4], "factor": 1.2},
                                                       {"buses": [4], "factor": 1.5}]))
    factor = np.ones(case14.n_bus)
    factor[3], factor[4] = 1.2, 1.8  # entries apply in order: bus 4 is scaled twice
    np.testing.assert_allclose(grid.pd_mw, case14.pd_mw * factor)
    np.testing.assert_allclose(grid.qd_mvar, case14.qd_mvar * factor)


def test_scale_loads_by_zone():
    net = load_net("case30")
    zone3 = set(net.bus.index[net.bus.zone == 3])
    base, grid = load_grid("case30"), changed_grid("case30", changes(scale_loads=[{"zone": 3, "factor": 1.2}]))
    expect = np.where(np.isin(np.arange(base.n_bus), sorted(zone3)), 1.2, 1.0)
    np.testing.assert_allclose(grid.pd_mw, base.pd_mw * expect)


def test_existing_branches_keep_the_given_base_ratings(case14):
    """With `[limits] rating_factor` the base grid's re-rated ratings are passed in: every existing
    branch keeps its rating, a line added `like` another gets that line's."""
    rated = case14.with_ratings(np.arange(1.0, case14.n_branch + 1))
    grid = changed_grid("case14", changes(remove_branches=[{"line": 0}],
                                          add_branches=[{"from_bus": 5, "to_bus": 13, "like": 7},
                                                        {"from_bus": 1, "to_bus": 4, "like": 6,
                                                         "max_i_ka": 0.1}],
                                          rerate_branches=[{"line": 3, "factor": 2.0}]),
                        ratings=rated)
    # rows: lines 1..14, new line (like 7), new line (own rating), transformers 0..4
    assert grid.rate_a_mva[:14].tolist() == [2, 3, 8, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    assert grid.rate_a_mva[14] == 8  # like line 7: its rating
    assert grid.rate_a_mva[15] == pytest.approx(0.1 * 135 * math.sqrt(3))  # given: used as given
    assert grid.rate_a_mva[16:].tolist() == [16, 17, 18, 19, 20]


def test_in_a_rerated_recipe_a_like_line_is_rated_by_the_rerating_rule(case14):
    """rating_factor x the new line's own flow at the changed grid's nominal AC-OPF, not the
    copied line's re-rated rating (a flow it never carried)."""
    from gridtune.grids.rating import rerate

    spec = changes(add_branches=[{"from_bus": 5, "to_bus": 13, "like": 7}])
    rated, _ = rerate(case14, 1.3, 5.0)
    grid = changed_grid("case14", spec, ratings=rated, rerated=(1.3, 5.0))
    own, _ = rerate(changed_grid("case14", spec), 1.3, 5.0)
    assert grid.rate_a_mva[15] == pytest.approx(own.rate_a_mva[15])
    assert grid.rate_a_mva[15] != pytest.approx(rated.rate_a_mva[7])
    np.testing.assert_allclose(grid.rate_a_mva[:15], rated.rate_a_mva[:15])  # existing: base's
    np.testing.assert_allclose(grid.rate_a_mva[16:], rated.rate_a_mva[15:])


# ---- the table: keys, types, references -------------------------------------------------------

@pytest.mark.parametrize("table, message", [
    ({"add_branch": []}, r"\[changes\]: unknown key `add_branch`; valid keys: `add_branches`, "
                         r"`add_generators`, .*`scale_loads`"),
    ({"add_branches": [{"from_bus": 1, "to_bus": 4, "like": 2, "lenght_km": 3}]},
     r"add_branches entry 1: unknown key `lenght_km`; valid keys: .*`length_km`"),
    ({"add_branches": [{"from_bus": 1, "to_bus": 4}]},
     r"add_branches entry 1: missing key `r_ohm_per_km`; a new line needs `like = <line index>`"),
    ({"add_branches": [{"from_bus": 1, "to_bus": 1, "like": 0}]},
     r"`from_bus` and `to_bus` are both `1`"),
    ({"remove_branches": [{"line": 1, "trafo": 1}]}, r"name exactly one branch"),
    ({"remove_branches": [{"line": 1}, {"line": 1}]}, r"remove_branches entry 2: `line 1` is listed twice"),
    ({"rerate_branches": [{"line": 1}]}, r"exactly one of `factor` and `rate_mva`"),
    ({"rerate_branches": [{"line": 1, "factor": -2}]}, r"key `factor` = `-2.0` must be > 0"),
    ({"scale_loads": [{"factor": 1.2}]}, r"exactly one of `buses` and `zone`"),
    ({"add_generators": [{"bus": 3, "max_p_mw": 50, "min_q_mvar": 10, "max_q_mvar": -10, "c1": 3}]},
     r"must satisfy min_q_mvar <= max_q_mvar"),
    ({"add_generators": [{"bus": 3, "max_p_mw": 50, "min_q_mvar": -10, "max_q_mvar": 10}]},
     r"add_generators entry 1: missing required key `c1`"),
    ({"scale_loads": 1.2}, r"key `scale_loads` has bad value `1.2`"),
])
def test_bad_tables_are_refused_with_the_key(table, message):
    with pytest.raises(SpecError, match=message):
        changes(**table)


@pytest.mark.parametrize("table, message", [
    ({"add_branches": [{"from_bus": 3, "to_bus": 14, "like": 0}]},
     r"r.toml \[changes\] add_branches entry 1: key `to_bus` = `14` is not a bus of the base grid; "
     r"valid `bus` indices: 0..13"),
    ({"add_branches": [{"from_bus": 3, "to_bus": 4, "like": 15}]},
     r"add_branches entry 1: key `like` = `15` is not a line of the base grid; valid `line` indices: 0..14"),
    ({"add_branches": [{"from_bus": 3, "to_bus": 8, "like": 0}]},
     r"a line joins buses of one voltage level; bus `3` is `135` kV, bus `8` is `0.208` kV"),
    ({"remove_branches": [{"trafo": 5}]},
     r"remove_branches entry 1: key `trafo` = `5` is not a transformer of the base grid; valid `trafo` indices: 0..4"),
    ({"remove_generators": [{"gen": 4}]},
     r"remove_generators entry 1: key `gen` = `4` is not a generator of the base grid; valid `gen` indices: 0..3"),
    ({"add_generators": [{"bus": -1, "max_p_mw": 5, "min_q_mvar": 0, "max_q_mvar": 0, "c1": 1}]},
     r"add_generators entry 1: key `bus` = `-1` is not a bus"),
    ({"scale_loads": [{"buses": [2, 99], "factor": 1.1}]},
     r"scale_loads entry 1: key `buses` = `99` is not a bus of the base grid; valid `bus` indices: 0..13"),
    ({"scale_loads": [{"zone": 2, "factor": 1.1}]},
     r"scale_loads entry 1: key `zone` = `2` names no bus zone of the base grid; valid zones: `1`"),
    ({"scale_loads": [{"buses": [6], "factor": 1.1}]}, r"the selected buses carry no load"),
    ({"rerate_branches": [{"impedance": 0, "factor": 1.1}]},
     r"rerate_branches entry 1: key `impedance` = `0` is not a impedance branch of the base grid; "
     r"valid `impedance` indices: none"),
    ({"remove_branches": [{"line": 4}], "rerate_branches": [{"line": 4, "factor": 1.1}]},
     r"rerate_branches entry 1: `line 4` is out of service in the changed grid"),
])
def test_bad_references_name_the_key_the_value_and_the_valid_range(tmp_path, table, message):
    recipe = from_table(Recipe, {"case": "case14", "changes": table}, where="r.toml")
    recipe = dataclasses.replace(recipe, source=str(tmp_path / "r.toml"))
    with pytest.raises(SpecError, match=message):
        recipe_grid(recipe)


def test_recipe_file_errors_name_file_and_table(tmp_path):
    text = 'case = "case14"\n[[changes.add_branches]]\nfrom_bus = 1\nto_bus = 4\nlike = 2\nwhat = 1\n'
    with pytest.raises(SpecError, match=r"r.toml \[changes\]: add_branches entry 1: unknown key `what`"):
        load_recipe(write(tmp_path, text))


def test_a_single_table_is_one_entry(tmp_path):
    text = 'case = "case14"\n[changes.scale_loads]\nbuses = [3]\nfactor = 1.2\n'
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.changes.scale_loads == (ScaleLoads(factor=1.2, buses=(3,)),)
    assert recipe.to_dict()["changes"] == {"scale_loads": [{"factor": 1.2, "buses": [3]}]}


def test_a_change_that_islands_buses_is_refused_by_name():
    with pytest.raises(SpecError, match=r"remove_branches: `trafo 3` disconnects bus `\[7\]` from "
                                         r"every slack; a change may not island part of the grid"):
        changed_grid("case14", changes(remove_branches=[{"line": 0}, {"trafo": 3}]))
    # case9's ring cut twice: both removals named, every bus cut off listed
    with pytest.raises(SpecError, match=r"remove_branches: `line 1`, `line 4` disconnect buses "
                                        r"`\[2, 4, 5\]` from every slack"):
        changed_grid("case9", changes(remove_branches=[{"line": 1}, {"line": 4}]))
    # a new branch that reconnects the bus makes the removals acceptable (bus 11's two lines out)
    grid = changed_grid("case14", changes(remove_branches=[{"line": 8}, {"line": 13}],
                                          add_branches=[{"from_bus": 11, "to_bus": 10, "like": 8}]))
    assert grid.n_branch == 19 and 11 in grid.f_bus.tolist() + grid.t_bus.tolist()


def test_the_slack_generator_cannot_retire():
    net = load_net("case14")
    net.gen.loc[0, "slack"] = True
    with pytest.raises(SpecError, match=r"key `gen` = `0` is the slack generator"):
        apply_to_net(net, changes(remove_generators=[{"gen": 0}]))


# ---- hashing, recipes, datasets ----------------------------------------------------------------

BASE = 'case = "case14"\nsamples = 8\n[loads]\nscale = [0.9, 1.1]\n[topology]\nn_minus_1 = 0.25\ncandidates = 2\n'
CHANGES = ('[[changes.add_branches]]\nfrom_bus = 5\nto_bus = 13\nlike = 7\n'
           '[[changes.scale_loads]]\nbuses = [3, 4]\nfactor = 1.2\n')


def test_hashes_differ_with_changes_and_are_stable(tmp_path):
    base = load_recipe(write(tmp_path, BASE, "base.toml"))
    changed = load_recipe(write(tmp_path, BASE + CHANGES, "changed.toml"))
    reordered = ('[[changes.scale_loads]]\nfactor = 1.2\nbuses = [3, 4]\n'
                 '[[changes.add_branches]]\nlike = 7\nto_bus = 13\nfrom_bus = 5\n')
    again = load_recipe(write(tmp_path, BASE + reordered, "again.toml"))
    other = load_recipe(write(tmp_path, BASE + CHANGES.replace("1.2", "1.3"), "other.toml"))
    keys = [dataset_key(r) for r in (base, changed, again, other)]
    assert keys[0] != keys[1] == keys[2] != keys[3] != keys[0]
    assert grid_hash(recipe_grid(changed)) == grid_hash(recipe_grid(again)) != grid_hash(recipe_grid(base))
    # a recipe without changes (or with an empty table) hashes as before the table existed
    empty = load_recipe(write(tmp_path, BASE + "[changes]\n", "empty.toml"))
    assert "changes" not in base.to_dict() and empty.cache_key() == base.cache_key()
    assert dataset_key(empty) == keys[0] and grid_hash(recipe_grid(base)) == grid_hash(load_grid("case14"))


def test_changes_round_trip_through_the_recipe_table(tmp_path):
    recipe = load_recipe(write(tmp_path, BASE + CHANGES))
    table = recipe.to_dict()
    assert table["changes"] == {"add_branches": [{"from_bus": 5, "to_bus": 13, "like": 7, "parallel": 1}],
                                "scale_loads": [{"factor": 1.2, "buses": [3, 4]}]}
    again = from_table(Recipe, json.loads(json.dumps(table)), where="recipe.json")
    assert again.changes == recipe.changes and again.cache_key() == recipe.cache_key()


@pytest.mark.slow
def test_a_changed_recipe_builds_a_dataset_that_records_its_changes(tmp_path):
    recipe = load_recipe(write(tmp_path, BASE + CHANGES, "case14_grown.toml"))
    out = build_dataset(recipe, tmp_path / "ds", workers=1, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["samples"] == 8 and sum(manifest["counts"].values()) == 8
    assert manifest["recipe"]["changes"] == recipe.to_dict()["changes"]
    assert json.loads((out / "recipe.json").read_text())["recipe"]["changes"] == recipe.to_dict()["changes"]
    assert manifest["grid"]["name"] == "case14_grown" and manifest["grid"]["branches"] == 21
    assert manifest["grid"]["hash"] == grid_hash(recipe_grid(recipe))
    saved = json.loads((out / "grid.json").read_text())
    assert len(saved["grid"]["branch"]) == 21


def test_shipped_change_recipes_load_and_change_their_grids():
    for name, base in (("case30_changed", "case30"), ("case118_changed", "case118"),
                       ("case300_changed", "case300")):
        recipe = recipe_for(name)
        assert recipe.changes and recipe.case == base
        assert recipe.cache_key() != recipe_for(base).cache_key()
        assert grid_hash(recipe_grid(recipe)) != grid_hash(load_grid(base))
    spec = recipe_for("case118_changed").changes
    assert (len(spec.add_branches), len(spec.remove_generators), len(spec.scale_loads)) == (3, 1, 1)
    assert spec.scale_loads[0].factor == 1.2


# ---- user grid files as targets -------------------------------------------------------------------

def test_a_users_changed_matpower_file_with_changes(tmp_path):
    shutil.copy(DATA / "tiny4.m", tmp_path / "tiny4.m")
    text = ('case = "tiny4.m"\nsamples = 4\n[loads]\nscale = [0.8, 1.0]\n[topology]\nn_minus_1 = 0.0\n'
            '[[changes.add_branches]]\nfrom_bus = 1\nto_bus = 2\nlike = 0\n'
            '[[changes.scale_loads]]\nbuses = [4]\nfactor = 1.1\n')
    recipe = load_recipe(write(tmp_path, text, "tiny4_grown.toml"))
    assert recipe.case == str(tmp_path / "tiny4.m")  # relative to the recipe
    base = load_grid(tmp_path / "tiny4.m")
    grid = recipe_grid(recipe)
    assert grid.n_branch == base.n_branch + 1 and grid.pd_mw.sum() == pytest.approx(90 + 110)
    out = build_dataset(recipe, tmp_path / "ds", workers=1, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"].get("error", 0) == 0 and manifest["grid"]["branches"] == 5


def test_a_users_changed_pandapower_json_is_a_target_as_it_is(tmp_path):
    """An operator who edited the grid themselves passes the file: `case = "path"`."""
    import pandapower as pp

    net = load_net("case14")
    apply_to_net(net, changes(add_branches=[{"from_bus": 5, "to_bus": 13, "like": 7}]))
    pp.to_json(net, str(tmp_path / "mine.json"))
    recipe = recipe_for(write(tmp_path, 'case = "mine.json"\nsamples = 4\n', "mine.toml"))
    grid = load_grid(recipe.case)
    assert grid.name == "mine" and grid.n_branch == 21
    assert grid_hash(grid) == grid_hash(changed_grid("case14", changes(
        add_branches=[{"from_bus": 5, "to_bus": 13, "like": 7}])))
    assert dataset_key(recipe) != dataset_key(recipe_for("case14"))


def test_a_changed_matpower_library_grid_keeps_each_branch_rating_on_its_own_branch():
    """A MATPOWER file lists branches in its own order, pandapower's conversion lines first: the
    changed grid must read each rating from the same branch of the base grid."""
    import numpy as np

    from gridtune.grids.cases import load_grid
    from gridtune.grids.changes import recipe_grid, same_branches
    from gridtune.grids.recipe import recipe_for

    recipe = recipe_for("case_ACTIVSg200_changed")
    base = load_grid(recipe.case)
    changed = recipe_grid(recipe, ratings=base)
    assert changed.n_branch == base.n_branch + 1  # the new circuit
    rows = same_branches(base, changed)  # every base branch is still there, somewhere
    assert np.allclose(changed.rate_a_mva[rows], base.rate_a_mva)
    assert not np.array_equal(rows, np.arange(base.n_branch))  # the orders do differ
    assert np.allclose(changed.rate_a_mva, recipe_grid(recipe).rate_a_mva)
