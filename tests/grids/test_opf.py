"""AC-OPF through pandapower's PIPS on the GridModel arrays, and the independent re-check."""

from __future__ import annotations

import copy
import dataclasses
import warnings

import numpy as np
import pytest

from gridtune.grids.labeller import uniform_scenario
from gridtune.grids.model import grid_hash
from gridtune.grids.opf import recheck, solve_ac_opf


@pytest.fixture(scope="module")
def case14_nominal(case14_grid):
    return solve_ac_opf(case14_grid, uniform_scenario(case14_grid, 1.0))


def test_case14_nominal_matches_published_matpower_objective(case14_nominal):
    # MATPOWER's published case14 AC-OPF cost is 8081.53 $/h; pandapower's case14 carries the same data
    assert case14_nominal.converged
    assert case14_nominal.objective == pytest.approx(8081.53, abs=0.01)
    assert case14_nominal.pg_mw.sum() > 259.0  # load 259 MW plus losses


def test_case9_matches_runopp(case9_grid):
    """Same formulation and options as `pandapower.runopp`, so the same optimum (case9: 5311.9,
    pandapower's value; MATPOWER publishes 5296.69 for its own case9, whose limits differ)."""
    import pandapower as pp
    import pandapower.networks as pn

    net = pn.case9()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runopp(net)
    res = solve_ac_opf(case9_grid, uniform_scenario(case9_grid, 1.0))
    assert res.converged
    assert res.objective == pytest.approx(net.res_cost, rel=1e-6)
    pp_pg = np.r_[net.res_ext_grid.p_mw.values, net.res_gen.p_mw.values]
    np.testing.assert_allclose(res.pg_mw, pp_pg, atol=1e-3)


def test_solution_rechecks_and_perturbations_are_caught(case14_grid, case14_nominal):
    scn = uniform_scenario(case14_grid, 1.0)
    assert recheck(case14_grid, scn, case14_nominal) == {}

    bumped = dataclasses.replace(case14_nominal, vm_pu=case14_nominal.vm_pu.copy())
    bumped.vm_pu[5] += 0.01  # breaks the power balance at bus 5 and its neighbours
    assert "mismatch_mva" in recheck(case14_grid, scn, bumped)

    too_much = dataclasses.replace(case14_nominal, pg_mw=case14_nominal.pg_mw.copy())
    too_much.pg_mw[0] = case14_grid.max_p_mw[0] + 5.0
    bad = recheck(case14_grid, scn, too_much)
    assert bad["pg_mw"] == pytest.approx(5.0, abs=1e-6)

    low_v = dataclasses.replace(case14_nominal, vm_pu=case14_nominal.vm_pu * 0.5)
    assert "vm_pu" in recheck(case14_grid, scn, low_v)


def test_loading_limit_is_checked(case9_grid):
    """case9 at load scale 2 is line-limited: the optimum sits at 100% loading, re-rated it fails."""
    scn = uniform_scenario(case9_grid, 2.0)
    res = solve_ac_opf(case9_grid, scn)
    assert res.converged
    assert res.loading_percent.max() == pytest.approx(100.0, abs=0.1)
    tighter = case9_grid.with_ratings(case9_grid.rate_a_mva * 0.9)
    assert recheck(tighter, scn, res)["loading_percent"] > 5.0


def test_outages_are_applied_without_mutating_the_grid(case14_grid):
    before = grid_hash(case14_grid)
    ppc_before = copy.deepcopy(case14_grid.ppc)
    gen = 1
    res = solve_ac_opf(case14_grid, uniform_scenario(case14_grid, 1.0, branch_out=(3,), gen_out=(gen,)))
    assert res.converged
    assert res.branch_flow_mva[3] == 0 and res.loading_percent[3] == 0
    assert res.pg_mw[gen] == 0 and res.qg_mvar[gen] == 0
    assert res.objective > 8081.53  # losing the second cheapest unit costs money
    assert grid_hash(case14_grid) == before
    for k in ppc_before:
        np.testing.assert_array_equal(np.asarray(case14_grid.ppc[k]), np.asarray(ppc_before[k]))


def test_beyond_capacity_does_not_converge(case14_grid):
    res = solve_ac_opf(case14_grid, uniform_scenario(case14_grid, 3.0))
    assert not res.converged
    assert np.isnan(res.objective)
    assert res.message


@pytest.mark.parametrize("scale, branch_out", [(1.0, ()), (1.3, (3,))])
def test_fast_callbacks_give_pandapowers_iterates(case14_grid, scale, branch_out):
    """The vectorised PIPS callbacks are the same maths as pandapower's: same iterations, same point."""
    scn = uniform_scenario(case14_grid, scale, branch_out=branch_out)
    fast = solve_ac_opf(case14_grid, scn, fast=True)
    slow = solve_ac_opf(case14_grid, scn, fast=False)
    assert fast.converged and slow.converged
    assert fast.iterations == slow.iterations
    assert fast.objective == pytest.approx(slow.objective, rel=1e-10)
    np.testing.assert_allclose(fast.vm_pu, slow.vm_pu, atol=1e-9)
    np.testing.assert_allclose(fast.qg_mvar, slow.qg_mvar, atol=1e-6)


def test_fast_callbacks_on_a_line_limited_case(case9_grid):
    scn = uniform_scenario(case9_grid, 2.0)  # binding current limits exercise the branch Hessian
    fast, slow = solve_ac_opf(case9_grid, scn), solve_ac_opf(case9_grid, scn, fast=False)
    assert fast.iterations == slow.iterations
    assert fast.objective == pytest.approx(slow.objective, rel=1e-10)


def test_cost_scale_scales_the_objective(case9_grid):
    """Scaling every generator's cost polynomial by 2 doubles the optimum, same dispatch."""
    base = uniform_scenario(case9_grid, 1.0)
    doubled = dataclasses.replace(base, cost_scale=np.full(case9_grid.n_gen, 2.0))
    a, b = solve_ac_opf(case9_grid, base), solve_ac_opf(case9_grid, doubled)
    assert b.objective == pytest.approx(2 * a.objective, rel=1e-6)
    np.testing.assert_allclose(a.pg_mw, b.pg_mw, atol=1e-3)
    cheaper_gen1 = dataclasses.replace(base, cost_scale=np.array([1.0, 0.5, 1.0]))
    assert solve_ac_opf(case9_grid, cheaper_gen1).pg_mw[1] > a.pg_mw[1]
