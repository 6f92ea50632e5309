"""The Ipopt AC-OPF backend: derivatives, agreement with PIPS, the second-solver rule, the recipe key."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gridtune.errors import SpecError
from gridtune.grids.ipopt_opf import IpoptOpf
from gridtune.grids.labeller import Labeller, uniform_scenario
from gridtune.grids.opf import AcOpfResult, recheck, solve_ac_opf
from gridtune.grids.scenarios import Scenario, connectivity_safe_branches

pytest.importorskip("cyipopt")


@pytest.fixture(scope="module")
def case30_grid():
    import warnings

    import pandapower.networks as pn

    from gridtune.grids.model import grid_from_net

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return grid_from_net(pn.case30(), "case30")


def _noisy(grid, scale: float, seed: int, branch_out: tuple[int, ...] = ()) -> Scenario:
    rng = np.random.default_rng(seed)
    f = scale * np.clip(1 + 0.05 * rng.standard_normal(grid.n_bus), 0, None)
    return Scenario(seed, scale, grid.pd_mw * f, grid.qd_mvar * f, branch_out=branch_out)


def test_derivatives_match_finite_differences(case9_grid):
    """Jacobian and Hessian of the Lagrangian against central differences (one outage, so the
    structures of a changed topology are exercised)."""
    ip = IpoptOpf(case9_grid)
    scn = _noisy(case9_grid, 1.1, 3, branch_out=(connectivity_safe_branches(case9_grid)[0],))
    ip.solve(scn)
    tp = ip._topology(scn)
    cb = tp.callbacks
    rng = np.random.default_rng(0)
    x = tp.x0 + 0.05 * rng.standard_normal(cb.nx)
    x[cb.nb: 2 * cb.nb] = 1 + 0.05 * rng.standard_normal(cb.nb)
    lam = rng.standard_normal(cb.m)
    sigma = 0.7
    jac = np.zeros((cb.m, cb.nx))
    jac[cb.jac_rows, cb.jac_cols] = cb.jacobian(x)
    hess_l = np.zeros((cb.nx, cb.nx))
    hess_l[cb.h_rows, cb.h_cols] = cb.hessian(x, lam, sigma)
    assert np.all(cb.h_rows >= cb.h_cols)
    hess = hess_l + np.tril(hess_l, -1).T
    eps = 1e-6
    num_j, num_h = np.zeros_like(jac), np.zeros_like(hess)
    for k in range(cb.nx):
        dx = np.zeros(cb.nx)
        dx[k] = eps
        num_j[:, k] = (cb.constraints(x + dx) - cb.constraints(x - dx)) / (2 * eps)
        grad_l = [sigma * cb.gradient(x + s * dx) + (jac_at(cb, x + s * dx).T @ lam) for s in (1, -1)]
        num_h[:, k] = (grad_l[0] - grad_l[1]) / (2 * eps)
    np.testing.assert_allclose(jac, num_j, atol=1e-5 * max(1.0, np.abs(jac).max()))
    np.testing.assert_allclose(hess, num_h, atol=1e-4 * max(1.0, np.abs(hess).max()))


def jac_at(cb, x):
    out = np.zeros((cb.m, cb.nx))
    out[cb.jac_rows, cb.jac_cols] = cb.jacobian(x)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case, scales", [("case9", (1.0, 1.6, 2.2, 2.6)),
                                          ("case14", (1.0, 1.3, 1.45, 1.9)),
                                          ("case30", (0.9, 1.0, 1.03, 1.1, 1.3))])
def test_ipopt_and_pips_agree_across_the_boundary(case, scales, request):
    """Same statuses and optima (1e-4 relative) as PIPS on noisy scenarios with and without an
    outage on both sides of the boundary; every Ipopt solution passes the independent re-check."""
    grid = request.getfixturevalue(f"{case}_grid")
    ip = IpoptOpf(grid)
    safe = connectivity_safe_branches(grid)
    decided = 0
    for i, scale in enumerate(scales):
        for out in ((), (safe[i % len(safe)],)):
            scn = _noisy(grid, scale, 10 + i, out)
            a, b = solve_ac_opf(grid, scn), ip.solve(scn)
            assert a.converged == b.converged, (case, scale, out, a.message, b.message)
            if b.converged:
                decided += 1
                assert recheck(grid, scn, b) == {}
                assert b.objective == pytest.approx(a.objective, rel=1e-4)
                np.testing.assert_allclose(b.pg_mw, a.pg_mw, atol=0.05 * max(1.0, np.abs(a.pg_mw).max()))
    assert decided >= 3


@pytest.mark.slow
def test_labels_agree_with_the_pips_path(case30_grid):
    scns = [_noisy(case30_grid, s, k) for k, s in enumerate((0.8, 1.0, 1.02, 1.06, 1.2, 1.6))]
    ipopt = Labeller(case30_grid, dc=False, sdp=False, solver="ipopt")
    pips = Labeller(case30_grid, dc=False, sdp=False, solver="pips")
    statuses = set()
    for scn in scns:
        a, b = pips.label(scn), ipopt.label(scn)
        assert a.status == b.status, (scn.load_scale, a.reason, b.reason)
        statuses.add(b.status)
        if b.objective is not None:
            assert b.certificate == "ac-opf"
            assert b.objective == pytest.approx(a.objective, rel=1e-4)
    assert {"feasible", "infeasible"} <= statuses


def _failed(grid) -> AcOpfResult:
    z = np.zeros
    return AcOpfResult(False, float("nan"), z(grid.n_gen), z(grid.n_gen), np.ones(grid.n_bus),
                       z(grid.n_bus), z(grid.n_branch), z(grid.n_branch), 7, 0.0, "forced failure")


@pytest.mark.parametrize("primary", ["ipopt", "pips"])
def test_second_solver_settles_what_the_first_misses(case14_grid, primary, monkeypatch):
    """A scenario is not `unknown` while the other solver can solve it."""
    lab = Labeller(case14_grid, dc=False, sdp=False, solver=primary)
    real = lab.solve_ac
    monkeypatch.setattr(lab, "solve_ac", lambda scn, solver: _failed(case14_grid)
                        if solver == primary else real(scn, solver))
    label = lab.label(_noisy(case14_grid, 1.1, 1))
    assert (label.status, label.certificate) == ("feasible", "ac-opf")
    assert lab.solved_by["second"] == 1
    assert lab.solved_by["pips" if primary == "ipopt" else "ipopt"] == 1


def test_unknown_only_after_both_solvers_fail(case14_grid, monkeypatch):
    lab = Labeller(case14_grid, dc=False, sdp=False, solver="ipopt")
    monkeypatch.setattr(lab, "solve_ac", lambda scn, solver: _failed(case14_grid))
    monkeypatch.setattr(lab, "_recover", lambda scn, soc: False)
    label = lab.label(_noisy(case14_grid, 1.1, 1))
    assert (label.status, label.certificate) == ("unknown", "ac-failed")
    assert "Ipopt" in label.reason and "PIPS" in label.reason


def test_infeasible_scenarios_stop_early(case30_grid):
    """Beyond the boundary (SOC still feasible) Ipopt stops on stalled infeasibility, well before
    its iteration limit."""
    res = IpoptOpf(case30_grid).solve(uniform_scenario(case30_grid, 1.1))
    assert not res.converged and res.iterations < 40


def test_labels_are_deterministic_for_a_seed(case14_grid):
    scns = [_noisy(case14_grid, s, k) for k, s in enumerate((0.9, 1.2, 1.35, 1.5))]
    first = [Labeller(case14_grid, dc=False, solver="ipopt").label(s) for s in scns]
    lab = Labeller(case14_grid, dc=False, solver="ipopt")
    second = {s.scenario_id: lab.label(s) for s in reversed(scns)}  # another order, one instance
    for s, a in zip(scns, first):
        b = second[s.scenario_id]
        assert (a.status, a.certificate) == (b.status, b.certificate)
        for field in ("objective", "pg_mw", "qg_mvar", "vm_pu", "va_degree"):
            va, vb = getattr(a, field), getattr(b, field)
            if va is None:
                assert vb is None
            else:
                np.testing.assert_array_equal(va, vb)


def test_labeller_pickles_with_its_solver(case9_grid):
    import pickle

    lab = pickle.loads(pickle.dumps(Labeller(case9_grid, dc=False, solver="ipopt")))
    assert lab.solver == "ipopt"
    assert lab.label(uniform_scenario(case9_grid, 1.0)).status == "feasible"
    with pytest.raises(ValueError, match="`ipopt`, `pips`"):
        Labeller(case9_grid, solver="ipoptt")


def test_recipe_solver_key_validates(tmp_path):
    from gridtune.grids.recipe import load_recipe

    path = tmp_path / "r.toml"
    path.write_text('case = "case9"\n[labels]\nsolver = "ipoptt"\n')
    with pytest.raises(SpecError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert "`solver`" in msg and "`ipoptt`" in msg.replace("'", "") and "`ipopt`, `pips`" in msg
    path.write_text('case = "case9"\n[labels]\nsolver = "ipopt"\n')
    recipe = load_recipe(path)
    assert recipe.labels.solver == "ipopt"
    other = dataclasses.replace(recipe, labels=dataclasses.replace(recipe.labels, solver="pips"))
    assert recipe.cache_key() != other.cache_key()


@pytest.mark.slow
def test_ipopt_dataset_is_the_same_on_one_and_two_workers(tmp_path):
    """The recipe key reaches the build, and warm starts never depend on the order of work."""
    from gridtune.grids.build import build_dataset
    from gridtune.grids.recipe import load_recipe
    from gridtune.grids.storage import read_rows

    path = tmp_path / "r.toml"
    path.write_text('case = "case14"\nsamples = 12\nseed = 3\n[loads]\nscale = [1.0, 1.6]\n'
                    '[topology]\nn_minus_1 = 0.5\ncandidates = 5\n'
                    '[labels]\nsolver = "ipopt"\nsdp = false\n')
    recipe = load_recipe(path)
    one = build_dataset(recipe, tmp_path / "one", workers=1, progress=False)
    two = build_dataset(recipe, tmp_path / "two", workers=2, progress=False)
    import json

    hashes = [json.loads((d / "manifest.json").read_text())["content_hash"] for d in (one, two)]
    assert hashes[0] == hashes[1]
    rows = read_rows(one)
    assert (rows["certificate"] == "ac-opf").sum() >= 5


def test_an_interrupt_during_a_solve_is_delivered_after_it(case14_grid, monkeypatch):
    """A signal that arrives inside Ipopt's callbacks waits for the solve to end (raised inside a
    callback it can crash the process): the solve finishes and the interrupt follows."""
    import os
    import signal

    from gridtune.grids import ipopt_opf

    scenario = uniform_scenario(case14_grid, 1.0)
    expected = IpoptOpf(case14_grid).solve(scenario, warm=False)
    assert expected.converged
    iterations = []
    intermediate = ipopt_opf._Callbacks.intermediate

    def interrupting(self, alg_mod, iter_count, *args):
        iterations.append(iter_count)
        if iter_count == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return intermediate(self, alg_mod, iter_count, *args)

    def handler(signum, frame):
        raise KeyboardInterrupt

    monkeypatch.setattr(ipopt_opf._Callbacks, "intermediate", interrupting)
    opf = IpoptOpf(case14_grid)  # built after the patch: cyipopt binds the callbacks then
    old = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            opf.solve(scenario, warm=False)
    finally:
        signal.signal(signal.SIGTERM, old)
    assert max(iterations) == expected.iterations  # every iteration ran before the interrupt
