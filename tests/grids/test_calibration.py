"""Boundary calibration with either AC solver first, and the recipe key that chooses it."""

from __future__ import annotations

import warnings

import pytest

from gridtune.errors import SpecError
from gridtune.grids.calibration import REL_RESOLUTION, critical_scale
from gridtune.grids.model import grid_from_net
from gridtune.grids.recipe import Recipe, load_recipe
from gridtune.grids.scenarios import Topology


@pytest.fixture(scope="module")
def case9_grid():
    import pandapower.networks as pn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return grid_from_net(pn.case9(), "case9")


def test_ipopt_first_finds_the_boundary_pips_first_finds(case9_grid):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pips = critical_scale(case9_grid, Topology(), solver="pips")
        ipopt = critical_scale(case9_grid, Topology(), solver="ipopt")
    assert pips.topology is not None and ipopt.topology is not None
    a, b = pips.topology.critical_scale, ipopt.topology.critical_scale
    assert 1.0 < a < 4.0  # case9 carries its nominal load with room to spare
    # both bisect the same AC feasibility label to 1% of the bracket
    assert abs(a - b) <= 2 * REL_RESOLUTION * max(a, b)


def test_calibration_solver_is_validated_and_keys_only_when_not_the_default(tmp_path):
    def recipe(extra: str) -> Recipe:
        path = tmp_path / "r.toml"
        path.write_text(f'case = "case9"\n[loads]\nscale = "auto"\n{extra}')
        return load_recipe(path)

    plain = recipe("")
    assert plain.loads.calibration_solver == "pips"
    assert recipe('calibration_solver = "pips"\n').cache_key() == plain.cache_key()
    assert recipe('calibration_solver = "ipopt"\n').cache_key() != plain.cache_key()
    with pytest.raises(SpecError, match=r"key `calibration_solver` = `knitro` is not known; valid: `pips`, `ipopt`"):
        recipe('calibration_solver = "knitro"\n')
