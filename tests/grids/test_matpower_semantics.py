"""MATPOWER files keep MATPOWER's semantics: |S| limits at both ends, angle limits, statuses,
isolated buses, costs; the optimum equals PYPOWER's `runopf` on the same file."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest

from gridtune.errors import CaseError
from gridtune.grids.ipopt_opf import IpoptOpf
from gridtune.grids.matpower import grid_from_m, read_m
from gridtune.grids.model import grid_from_dict, grid_hash, grid_to_dict
from gridtune.grids.opf import recheck, solve_ac_opf
from gridtune.grids.scenarios import uniform_scenario

DATA = Path(__file__).resolve().parents[1] / "data"


def pypower_objective(path: Path) -> float:
    """PYPOWER's `runopf` (MATPOWER's formulation) on the file's arrays.

    The gen table is padded to MATPOWER's 21 columns: PYPOWER 5.1's `loadcase` reads a dict
    with fewer as format 1 and overwrites every ANGMIN / ANGMAX with -360 / 360.
    """
    pypower = pytest.importorskip("pypower.api")
    ppc = read_m(path)
    gen = ppc["gen"]
    ppc["gen"] = np.c_[gen, np.zeros((gen.shape[0], 21 - gen.shape[1]))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pypower.runopf(ppc, pypower.ppoption(VERBOSE=0, OUT_ALL=0))
    assert res["success"]
    return float(res["f"])


def both_solvers(grid):
    scenario = uniform_scenario(grid, 1.0)
    a = IpoptOpf(grid, warm=False).solve(scenario)
    b = solve_ac_opf(grid, scenario)
    assert a.converged and b.converged
    assert a.objective == pytest.approx(b.objective, rel=1e-6)
    return scenario, a


def without(grid, *, rates=False, angles=False):
    ppc = {k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v for k, v in grid.ppc.items()}
    if rates:
        ppc["branch"][:, 5] = 0
    if angles:
        ppc["branch"][:, 11], ppc["branch"][:, 12] = -360, 360
    return dataclasses.replace(grid, ppc=ppc)


def test_thermal_limits_bind_as_apparent_power_at_both_ends_and_match_pypower():
    grid, notes = grid_from_m(DATA / "mp_thermal.m")
    assert grid.flow_limit == "apparent_power" and notes == []
    scenario, res = both_solvers(grid)
    assert res.objective == pytest.approx(pypower_objective(DATA / "mp_thermal.m"), rel=1e-6)
    # both 60 MVA branches out of bus 1 carry exactly their rating, in MVA
    assert res.branch_flow_mva[:2] == pytest.approx([60.0, 60.0], abs=1e-3)
    assert res.loading_percent[:2] == pytest.approx([100.0, 100.0], abs=1e-3)
    assert recheck(grid, scenario, res) == {}
    free = IpoptOpf(without(grid, rates=True), warm=False).solve(scenario)
    assert free.objective < 0.5 * res.objective  # the limit is what makes the dear unit run
    # the same ratings read as current limits (pandapower's convention) give another optimum
    as_current = IpoptOpf(dataclasses.replace(grid, flow_limit="current"), warm=False).solve(scenario)
    assert abs(as_current.objective - res.objective) > 1e-4 * res.objective


def test_angle_difference_limit_binds_and_matches_pypower():
    grid, _ = grid_from_m(DATA / "mp_angle.m")
    assert grid.angle_limited.tolist() == [False, True, False]
    scenario, res = both_solvers(grid)
    assert res.objective == pytest.approx(pypower_objective(DATA / "mp_angle.m"), rel=1e-6)
    assert res.va_degree[0] - res.va_degree[2] == pytest.approx(3.0, abs=1e-4)
    free = IpoptOpf(without(grid, angles=True), warm=False).solve(scenario)
    assert free.objective < 0.5 * res.objective


def test_statuses_isolated_buses_taps_shifters_shunts_and_costs_match_pypower():
    grid, notes = grid_from_m(DATA / "mp_features.m")
    assert notes == ["1 isolated buses (type 4) left out, with 1 generators and 1 branches at them"]
    assert grid.bus_ids.tolist() == [10, 20, 30, 40, 60]  # MATPOWER's numbers, internal order
    assert (grid.n_bus, grid.n_branch, grid.n_gen) == (5, 6, 4)
    assert grid.gen_in_service.tolist() == [True, True, False, True]
    assert grid.branch_in_service.tolist() == [True, True, False, True, True, True]
    assert grid.gen_bus.tolist() == [0, 1, 1, 3]  # two units at bus 20
    # a cubic stated with a zero cubic term is a quadratic; a linear cost keeps c2 = 0
    assert grid.gen_cost()[[0, 3]].tolist() == [[0.02, 18.0, 100.0], [0.0, 35.0, 0.0]]
    _, res = both_solvers(grid)
    assert res.objective == pytest.approx(pypower_objective(DATA / "mp_features.m"), rel=1e-6)
    assert res.pg_mw[2] == 0.0  # the unit out of service stays off


def test_soc_relaxation_bounds_the_apparent_power_optimum_from_below():
    from gridtune.grids.relaxations import SocRelaxation

    grid, _ = grid_from_m(DATA / "mp_thermal.m")
    scenario, res = both_solvers(grid)
    bound = SocRelaxation(grid).solve(scenario)
    assert bound.status == "optimal"
    # a lower bound, loose on this meshed triangle (SOC drops the loop's angle condition)
    assert bound.objective <= res.objective * (1 + 1e-6)
    # the |S| limits are in the relaxation: without them the bound falls
    loose = SocRelaxation(without(grid, rates=True)).solve(scenario)
    assert loose.objective < 0.9 * bound.objective


def test_recheck_measures_loading_on_apparent_power():
    grid, _ = grid_from_m(DATA / "mp_thermal.m")
    scenario, res = both_solvers(grid)
    tighter = grid.with_ratings(grid.rate_a_mva * 0.9)
    assert "loading_percent" in recheck(tighter, scenario, res)


def test_flow_limit_travels_with_the_stored_grid_and_changes_its_hash():
    grid, _ = grid_from_m(DATA / "mp_thermal.m")
    back = grid_from_dict(grid_to_dict(grid))
    assert back.flow_limit == "apparent_power" and grid_hash(back) == grid_hash(grid)
    assert grid_hash(dataclasses.replace(grid, flow_limit="current")) != grid_hash(grid)
    assert "flow_limit" not in grid_to_dict(dataclasses.replace(grid, flow_limit="current"))


def test_matpower_unit_conversions_of_distribution_feeders_are_applied(tmp_path):
    """Feeders state loads in kW and impedances in ohms and convert them in MATLAB code; the
    two conversions MATPOWER's library uses are applied, so the grid equals the p.u. file."""
    text = (DATA / "mp_thermal.m").read_text()
    z_base = 230.0 ** 2 / 100.0
    kw = text.replace("150\t40\t0", "150000\t40000\t0")
    for r, x in (("0.01", "0.10"),):
        kw = kw.replace(f"\t{r}\t{x}\t", f"\t{float(r) * z_base:.6g}\t{float(x) * z_base:.6g}\t")
    kw += """
[PQ, PV, REF, NONE, BUS_I, BUS_TYPE, PD, QD, GS, BS, BUS_AREA, VM, ...
    VA, BASE_KV, ZONE, VMAX, VMIN, LAM_P, LAM_Q, MU_VMAX, MU_VMIN] = idx_bus;
Vbase = mpc.bus(1, BASE_KV) * 1e3;      %% in Volts
Sbase = mpc.baseMVA * 1e6;              %% in VA
mpc.branch(:, [BR_R BR_X]) = mpc.branch(:, [BR_R BR_X]) / (Vbase^2 / Sbase);
mpc.bus(:, [PD, QD]) = mpc.bus(:, [PD, QD]) / 1e3;
"""
    path = tmp_path / "feeder.m"
    path.write_text(kw)
    a, _ = grid_from_m(path)
    b, _ = grid_from_m(DATA / "mp_thermal.m")
    for key in ("bus", "branch"):
        assert np.allclose(a.ppc[key], b.ppc[key], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace(
        "mpc.gencost = [\n\t2\t0\t0\t3\t0.01\t10\t0;\n\t2\t0\t0\t3\t0.01\t50\t0;",
        "mpc.gencost = [\n\t1\t0\t0\t2\t0\t0\t250\t5000;\n\t2\t0\t0\t3\t0.01\t50\t0\t0;"),
     r"generator 1 has a piecewise-linear cost \(model 1\), which gridtune cannot model"),
    (lambda t: t.replace(
        "mpc.gencost = [\n\t2\t0\t0\t3\t0.01\t10\t0;\n\t2\t0\t0\t3\t0.01\t50\t0;",
        "mpc.gencost = [\n\t2\t0\t0\t4\t0.001\t0.01\t10\t0;\n\t2\t0\t0\t3\t0.01\t50\t0\t0;"),
     r"generator 1 has a cost polynomial of degree `3`, which gridtune cannot model"),
    (lambda t: t.replace("\t2\t0\t0\t3\t0.01\t50\t0;", "\t2\t0\t0\t3\t0.01\t50\t0;\n"
                         "\t2\t0\t0\t3\t0\t1\t0;\n\t2\t0\t0\t3\t0\t1\t0;"),
     r"has reactive power costs \(`mpc.gencost` rows 3-4\)"),
    (lambda t: t + "\nmpc.dcline = [\n\t1\t3\t1\t10\t0\t0\t0\t1\t1\t0\t50\t-10\t10\t-10\t10\t0\t0;\n];\n",
     r"has `mpc.dcline` \(DC lines\), which gridtune cannot model"),
    (lambda t: t + "\nmpc.bus(:, PD) = mpc.bus(:, PD) * 2;\n",
     r"changes its tables with MATLAB code \(`mpc.bus\(:, PD\) = mpc.bus\(:, PD\) \* 2;`\)"),
    (lambda t: t.replace("\t1\t3\t0\t0\t0\t0\t1", "\t1\t2\t0\t0\t0\t0\t1"),
     r"has no reference bus \(type 3\)"),
    (lambda t: t.replace("\t2\t50\t0\t150", "\t7\t50\t0\t150"), r"gen bus `7` is not in `mpc.bus`"),
], ids=["pwl", "cubic", "reactive", "dcline", "code", "no-ref", "gen-bus"])
def test_what_cannot_be_represented_is_refused_by_name(tmp_path, edit, message):
    text = (DATA / "mp_thermal.m").read_text()
    changed = edit(text)
    assert changed != text
    path = tmp_path / "bad.m"
    path.write_text(changed)
    with pytest.raises(CaseError, match=message):
        grid_from_m(path)


def test_recheck_flags_a_violated_angle_difference_limit():
    grid, _ = grid_from_m(DATA / "mp_angle.m")
    scenario, res = both_solvers(grid)
    assert recheck(grid, scenario, res) == {}
    ppc = {k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v for k, v in grid.ppc.items()}
    ppc["branch"][1, 11], ppc["branch"][1, 12] = -2.0, 2.0
    bad = recheck(dataclasses.replace(grid, ppc=ppc), scenario, res)
    assert bad["angle_degree"] == pytest.approx(1.0, abs=1e-3)


def test_zero_angle_bounds_mean_unlimited_in_the_relaxation_too():
    """MATPOWER writes ANGMIN = ANGMAX = 0 for "no limit" (the ACTIVSg grids); read as 0 degrees
    the SOC relaxation would certify every scenario infeasible."""
    from gridtune.grids.relaxations import SocRelaxation

    grid, _ = grid_from_m(DATA / "mp_thermal.m")
    scenario = uniform_scenario(grid, 1.0)
    ppc = {k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v for k, v in grid.ppc.items()}
    ppc["branch"][:, 11], ppc["branch"][:, 12] = 0.0, 0.0
    zero = dataclasses.replace(grid, ppc=ppc)
    assert not zero.angle_limited.any()
    a, b = SocRelaxation(grid).solve(scenario), SocRelaxation(zero).solve(scenario)
    assert b.status == "optimal" and b.objective == pytest.approx(a.objective, rel=1e-6)
    res = IpoptOpf(zero, warm=False).solve(scenario)
    assert res.objective == pytest.approx(IpoptOpf(grid, warm=False).solve(scenario).objective, rel=1e-8)
