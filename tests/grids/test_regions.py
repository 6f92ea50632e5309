"""Regions of a grid: only the region's loads vary, the rest stay nominal; named by zone or buses."""

import dataclasses

import numpy as np
import pytest

from gridtune.errors import SpecError
from gridtune.grids.cases import load_grid, load_net
from gridtune.grids.recipe import load_recipe, recipe_for
from gridtune.grids.regions import region_mask
from gridtune.grids.scenarios import Topology, sample_scenario, uniform_scenario


def _region(recipe, **loads):
    return dataclasses.replace(recipe, loads=dataclasses.replace(recipe.loads, **loads))


def test_a_zone_selects_the_loaded_buses_of_that_zone():
    net, grid = load_net("case30"), load_grid("case30")
    mask = region_mask(_region(recipe_for("case30"), zone=3), grid)
    zone3 = set(net.bus.index[net.bus.zone == 3])
    loaded = set(net.load.bus[net.load.in_service]) & zone3
    assert {int(b) for b in grid.bus_ids[mask]} == loaded and len(loaded) >= 5
    assert region_mask(recipe_for("case30"), grid) is None  # no region: every load varies


def test_a_zone_the_grid_lacks_names_the_valid_ones():
    with pytest.raises(SpecError, match=r"key `zone` = `7` names no bus zone of the base grid; "
                                        r"valid zones: `1`, `2`, `3`"):
        region_mask(_region(recipe_for("case30"), zone=7), load_grid("case30"))
    with pytest.raises(SpecError, match=r"key `buses` names `99`, which is not an in-service bus"):
        region_mask(_region(recipe_for("case9"), buses=(4, 99)), load_grid("case9"))
    with pytest.raises(SpecError, match="a region is one of `zone` and `buses`, not both"):
        _region(recipe_for("case30"), zone=1, buses=(2,))


def test_only_the_region_varies_with_the_draws_of_the_whole_grid(case14_grid):
    g = case14_grid
    vary = np.zeros(g.n_bus, dtype=bool)
    vary[[3, 4, 8]] = True
    args = dict(seed=3, n_minus_1=0.0, gen_outages=0.0, scale=(0.8, 1.2), band=0.08,
                load_noise=0.05, cost_noise=0.0)
    whole = sample_scenario(g, [Topology()], 5, **args)
    region = sample_scenario(g, [Topology()], 5, vary=vary, **args)
    assert np.array_equal(region.pd_mw[~vary], g.pd_mw[~vary])
    assert np.array_equal(region.qd_mvar[~vary], g.qd_mvar[~vary])
    assert np.allclose(region.pd_mw[vary], whole.pd_mw[vary])
    expected = (g.pd_mw[~vary].sum() + whole.load_scale * g.pd_mw[vary].sum()) / g.pd_mw.sum()
    assert region.load_scale == pytest.approx(expected)
    at = uniform_scenario(g, 1.5, vary=vary)  # calibration scales the region alone
    assert np.allclose(at.pd_mw, np.where(vary, 1.5, 1.0) * g.pd_mw)


def test_each_region_is_its_own_dataset_and_the_whole_grid_keeps_its_key():
    base = recipe_for("case30")
    keys = {base.cache_key(), _region(base, zone=1).cache_key(), _region(base, zone=2).cache_key(),
            _region(base, buses=(2, 3)).cache_key()}
    assert len(keys) == 4
    assert base.cache_key() == _region(base, zone=None).cache_key() == "e012f0b455a76425"


def test_a_built_region_dataset_holds_nominal_loads_outside_the_region(tmp_path):
    from gridtune.grids.dataset import open_dataset

    recipe = tmp_path / "case9_bus4.toml"
    recipe.write_text('case = "case9"\nsamples = 6\n[loads]\nscale = [0.9, 1.3]\nbuses = [4]\n'
                      '[topology]\nn_minus_1 = 0.0\n[labels]\nsolutions = false\ndc = false\nsdp = false\n')
    assert load_recipe(recipe).loads.buses == (4,)
    ds = open_dataset(recipe, workers=1, progress=False, cache_dir=tmp_path / "data")
    grid = load_grid("case9")
    at4 = grid.bus_ids == 4
    pd_mw = np.stack([np.asarray(p) for p in ds.frame["pd_mw"]])
    assert np.allclose(pd_mw[:, ~at4], grid.pd_mw[~at4])
    assert np.ptp(pd_mw[:, at4]) > 1.0  # the region's load moves between scenarios (MW)
