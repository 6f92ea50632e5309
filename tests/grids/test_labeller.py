"""Status logic on scenarios with a known answer."""

from __future__ import annotations

import dataclasses
import pickle
import warnings

import numpy as np
import pytest

from gridtune.grids.labeller import Labeller, recover_feasible_point, uniform_scenario
from gridtune.grids.model import grid_from_net
from gridtune.grids.opf import recheck, solve_ac_opf


@pytest.fixture(scope="module")
def case30_grid():
    import pandapower.networks as pn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return grid_from_net(pn.case30(), "case30")


@pytest.fixture(scope="module")
def case14_labeller(case14_grid):
    return Labeller(case14_grid)


@pytest.mark.parametrize("name, objective", [("case9", 5311.91), ("case14", 8081.53)])
def test_nominal_is_feasible_with_its_objective(name, objective, request):
    """case14: MATPOWER's published 8081.53; case9: pandapower's 5311.9 (MATPOWER's 5296.69 is
    for its own case9 data, see docs/data.md)."""
    grid = request.getfixturevalue(f"{name}_grid")
    label = Labeller(grid).label(uniform_scenario(grid, 1.0))
    assert (label.status, label.certificate) == ("feasible", "ac-opf")
    assert label.objective == pytest.approx(objective, abs=0.01)
    assert label.relaxation_objective <= label.objective
    assert label.pg_mw.shape == (grid.n_gen,) and label.vm_pu.shape == (grid.n_bus,)
    assert label.loading_percent.shape == (grid.n_branch,)
    assert label.dc_status == "optimal" and label.dc_objective < label.objective  # lossless DC
    assert label.solve_time_s > 0


def test_far_beyond_capacity_is_certified_by_soc(case14_labeller, case14_grid):
    label = case14_labeller.label(uniform_scenario(case14_grid, 3.0))
    assert (label.status, label.certificate) == ("infeasible", "soc-infeasible")
    assert label.objective is None and label.pg_mw is None


class CountingLabeller(Labeller):
    """A Labeller that records which AC solvers it ran."""

    def solve_ac(self, scenario, solver):
        self.ran = [*getattr(self, "ran", []), solver]
        return super().solve_ac(scenario, solver)


def test_case30_boundary_needs_a_relaxation_tighter_than_soc(case30_grid):
    """AC fails at 1.06 and SOC is still feasible there; the cycle relaxation certifies
    infeasibility after the first solver failed (so the second is not run), else the SDP.
    With neither the honest answer is `unknown`, never `infeasible`."""
    scn = uniform_scenario(case30_grid, 1.06)
    labeller = CountingLabeller(case30_grid, dc=False)
    label = labeller.label(scn)
    assert (label.status, label.certificate) == ("infeasible", "cycle-infeasible")
    assert labeller.ran == ["pips"]
    no_cycles = CountingLabeller(case30_grid, dc=False, cycles=False)
    label = no_cycles.label(scn)
    assert (label.status, label.certificate) == ("infeasible", "sdp-infeasible")
    assert no_cycles.ran == ["pips", "ipopt"]
    no_sdp = Labeller(case30_grid, dc=False, sdp=False, cycles=False).label(scn)
    assert (no_sdp.status, no_sdp.certificate) == ("unknown", "ac-failed")
    assert "AC-OPF did not converge" in no_sdp.reason
    assert no_sdp.relaxation_objective is not None  # SOC was feasible: no certificate from it


@pytest.mark.slow
def test_bound_tightening_is_the_last_certificate_before_unknown(case30_grid):
    """A case30 scenario just beyond the boundary that both AC solvers fail while the cycle
    relaxation and the chordal SDP stay feasible: `unknown` without bound tightening,
    `obbt-infeasible` with it (tests/grids/test_relaxations.py, `CASE30_GAP_FACTORS`)."""
    from tests.grids.test_relaxations import _gap_scenario

    scn = _gap_scenario(case30_grid, 0.994)
    without = Labeller(case30_grid, dc=False).label(scn)
    assert (without.status, without.certificate) == ("unknown", "ac-failed")
    labeller = Labeller(case30_grid, dc=False, obbt=True)
    label = labeller.label(scn)
    assert (label.status, label.certificate) == ("infeasible", "obbt-infeasible")
    assert pickle.loads(pickle.dumps(labeller)).use_obbt


def test_crash_gives_error_with_reason(case14_labeller, case14_grid):
    scn = uniform_scenario(case14_grid, 1.0)
    scn.pd_mw[4] = np.nan
    label = case14_labeller.label(scn)
    assert (label.status, label.certificate) == ("error", "crash")
    assert "pd_mw" in label.reason and "not finite" in label.reason and "[4]" in label.reason
    bad_index = dataclasses.replace(uniform_scenario(case14_grid, 1.0), branch_out=(99,))
    label = case14_labeller.label(bad_index)
    assert label.status == "error" and "branch_out" in label.reason


def test_labels_only_mode_recovers_a_checked_point(case9_grid):
    scn = uniform_scenario(case9_grid, 1.2)
    fast = Labeller(case9_grid, solutions=False, dc=False)
    label = fast.label(scn)
    assert (label.status, label.certificate) == ("feasible", "soc-recovered")
    assert label.objective is None  # only the label is known
    point = recover_feasible_point(case9_grid, scn, fast.soc.solve(scn))
    assert point is not None and recheck(case9_grid, scn, point) == {}
    ac = solve_ac_opf(case9_grid, scn)
    # a feasible point costs at least the optimum
    cost = case9_grid.gen_cost()
    point_cost = float((cost[:, 0] * point.pg_mw ** 2 + cost[:, 1] * point.pg_mw + cost[:, 2]).sum())
    assert point_cost >= ac.objective - 1e-3


def test_sweep_never_mislabels(case14_grid):
    """Across the case14 boundary (1.5-2.0): feasible exactly where the AC-OPF converges and
    re-checks; every other scenario is certified infeasible (SOC is tight on case14)."""
    fast = Labeller(case14_grid, solutions=False, dc=False)
    for scale in (1.4, 1.7, 1.9, 2.2):
        scn = uniform_scenario(case14_grid, scale)
        label = fast.label(scn)
        ac = solve_ac_opf(case14_grid, scn)
        ac_ok = ac.converged and not recheck(case14_grid, scn, ac)
        assert (label.status == "feasible") == ac_ok, (scale, label)
        if not ac_ok:
            assert label.status == "infeasible"


def test_pickles_and_labels_the_same(case9_grid):
    lab = Labeller(case9_grid, solutions=False, dc=False)
    clone = pickle.loads(pickle.dumps(lab))
    scn = uniform_scenario(case9_grid, 3.0)
    assert clone.label(scn).status == lab.label(scn).status == "infeasible"


def test_uniform_scenario(case14_grid):
    scn = uniform_scenario(case14_grid, 1.5, branch_out=(2,), gen_out=(1,))
    np.testing.assert_allclose(scn.pd_mw, 1.5 * case14_grid.pd_mw)
    np.testing.assert_allclose(scn.qd_mvar, 1.5 * case14_grid.qd_mvar)
    assert scn.branch_out == (2,) and scn.gen_out == (1,)


def test_power_flow_matches_pandapower_runpp(case14_grid):
    """The Newton-Raphson used for recovery solves the same power flow as `pandapower.runpp`."""
    import pandapower as pp
    import pandapower.networks as pn
    from pandapower.pypower.makeYbus import makeYbus

    from gridtune.grids.labeller import solve_power_flow
    from gridtune.grids.opf import scenario_ppc

    net = pn.case14()
    pp.runpp(net)
    grid = case14_grid
    ppc, _, _ = scenario_ppc(grid, uniform_scenario(grid, 1.0))

    ybus = makeYbus(ppc["baseMVA"], ppc["bus"], ppc["branch"])[0]
    ref = np.flatnonzero(grid.bus_type == 3)
    pv = np.setdiff1d(np.unique(grid.gen_bus), ref)
    pq = np.setdiff1d(np.arange(grid.n_bus), np.r_[ref, pv])
    vm = np.ones(grid.n_bus)
    vm[grid.gen_bus] = grid.vg_pu
    p_spec = -grid.pd_mw / grid.base_mva
    np.add.at(p_spec, grid.gen_bus, grid.ppc["gen"][:, 1] / grid.base_mva)
    v = solve_power_flow(ybus, vm, np.zeros(grid.n_bus), p_spec, -grid.qd_mvar / grid.base_mva,
                         ref, pv, pq)
    assert v is not None
    order = grid.bus_ids
    np.testing.assert_allclose(np.abs(v), net.res_bus.vm_pu.values[order], atol=1e-6)
    np.testing.assert_allclose(np.rad2deg(np.angle(v)) + net.res_bus.va_degree.values[order][ref[0]],
                               net.res_bus.va_degree.values[order], atol=1e-5)


def test_labels_only_mode_without_soc_recovery(case14_grid):
    """case14 at nominal load: the SOC point is not realisable (its slack Q), so label-only mode
    certifies feasibility from an early-stopped AC-OPF whose polished point re-checks."""
    label = Labeller(case14_grid, solutions=False, dc=False).label(uniform_scenario(case14_grid, 1.0))
    assert label.status == "feasible"
    assert label.certificate in ("ac-recovered", "soc-recovered")
    assert label.objective is None
