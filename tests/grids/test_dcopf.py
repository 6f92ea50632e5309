"""DC-OPF built once with Parameters: agrees with pandapower's rundcopp, outages as parameters."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from gridtune.grids.dcopf import DcOpf
from gridtune.grids.labeller import uniform_scenario


@pytest.mark.parametrize("name", ["case9", "case14"])
def test_matches_rundcopp(name, request):
    import pandapower as pp
    import pandapower.networks as pn

    grid = request.getfixturevalue(f"{name}_grid")
    net = getattr(pn, name)()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.rundcopp(net)
    res = DcOpf(grid).solve(uniform_scenario(grid, 1.0))
    assert res.status == "optimal"
    assert res.objective == pytest.approx(net.res_cost, rel=1e-6)
    pp_pg = np.r_[net.res_ext_grid.p_mw.values, net.res_gen.p_mw.values]
    np.testing.assert_allclose(res.pg_mw, pp_pg, atol=1e-2)


def _flows_mw(grid, res):
    b = 1.0 / (grid.x_pu * grid.tap_ratio)
    return b * np.deg2rad(res.va_degree[grid.f_bus] - res.va_degree[grid.t_bus]) * grid.base_mva


def test_balance_limits_and_reference(case9_grid):
    """Lossless: generation equals load; a line re-rated below its flow binds at its new rating."""
    scn = uniform_scenario(case9_grid, 1.5)
    res = DcOpf(case9_grid).solve(scn)
    assert res.pg_mw.sum() == pytest.approx(scn.pd_mw.sum() + case9_grid.gs_mw.sum(), abs=1e-4)
    assert res.va_degree[case9_grid.bus_type == 3][0] == pytest.approx(0.0, abs=1e-8)
    flow = _flows_mw(case9_grid, res)
    assert np.all(np.abs(flow) <= case9_grid.rate_a_mva + 1e-3)
    k = int(np.argmax(np.abs(flow)))
    rating = case9_grid.rate_a_mva.copy()
    rating[k] = 0.8 * abs(flow[k])
    tight = case9_grid.with_ratings(rating)
    res2 = DcOpf(tight).solve(scn)
    assert abs(_flows_mw(tight, res2)[k]) == pytest.approx(rating[k], rel=1e-4)
    assert res2.objective > res.objective


def test_outage_parameter_equals_removing_the_branch(case14_grid):
    k = 2
    ppc = {key: np.array(v, copy=True) if key != "baseMVA" else v for key, v in case14_grid.ppc.items()}
    ppc["branch"] = np.delete(ppc["branch"], k, axis=0)
    without = dataclasses.replace(case14_grid, ppc=ppc)
    dc = DcOpf(case14_grid)
    via_param = dc.solve(uniform_scenario(case14_grid, 1.4, branch_out=(k,)))
    rebuilt = DcOpf(without).solve(uniform_scenario(without, 1.4))
    assert via_param.objective == pytest.approx(rebuilt.objective, rel=1e-6)
    np.testing.assert_allclose(via_param.va_degree, rebuilt.va_degree, atol=1e-3)


def test_infeasible_beyond_capacity_and_gen_outage(case9_grid):
    dc = DcOpf(case9_grid)
    total_capacity = case9_grid.max_p_mw.sum()
    scale = 1.01 * total_capacity / case9_grid.pd_mw.sum()
    assert dc.solve(uniform_scenario(case9_grid, scale)).status == "infeasible"
    res = dc.solve(uniform_scenario(case9_grid, 1.0, gen_out=(1,)))
    assert res.status == "optimal" and res.pg_mw[1] == pytest.approx(0.0, abs=1e-6)
