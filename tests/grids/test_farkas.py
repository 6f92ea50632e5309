"""Farkas rays: sound re-use of infeasibility certificates across scenarios."""

from __future__ import annotations

import types
import warnings

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp

from gridtune.grids.farkas import (
    FarkasRays,
    _cone_blocks,
    matrix_to_svec,
    project_dual,
    svec_to_matrix,
)
from gridtune.grids.labeller import Labeller
from gridtune.grids.model import grid_from_net
from gridtune.grids.relaxations import CycleRelaxation, SocRelaxation
from gridtune.grids.scenarios import Scenario, connectivity_safe_branches


def _dims(zero=0, nonneg=0, soc=(), psd=()):
    return types.SimpleNamespace(zero=zero, nonneg=nonneg, soc=list(soc), psd=list(psd), exp=0, p3d=[])


@pytest.fixture(scope="module")
def case30_grid():
    import pandapower.networks as pn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return grid_from_net(pn.case30(), "case30")


def _scenarios(grid, scales, n, seed=0):
    """Noisy loads across `scales`, every other scenario with one branch out."""
    safe = connectivity_safe_branches(grid)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        scale = rng.uniform(*scales)
        f = scale * np.clip(1 + 0.05 * rng.standard_normal(grid.n_bus), 0, None)
        out.append(Scenario(i, scale, grid.pd_mw * f, grid.qd_mvar * f,
                            branch_out=(int(safe[i % len(safe)]),) if i % 2 else ()))
    return out


def test_a_ray_certifies_exactly_the_infeasible_right_hand_sides():
    """x >= 1 and x <= u (`A x + s = b`, s >= 0): the ray of u = 0 proves every u < 1 - margin
    infeasible and no u >= 1; an unbounded x with a nonzero A^T z certifies nothing."""
    a = sp.csc_matrix(np.array([[-1.0], [1.0]]))
    rays = FarkasRays(_dims(nonneg=2))
    lo, hi = np.array([-10.0]), np.array([10.0])
    assert rays.remember(np.array([0.7, 0.7]), a, np.array([-1.0, 0.0]), lo, hi)
    assert rays.certifies(a, np.array([-1.0, 0.5]), lo, hi)
    assert not rays.certifies(a, np.array([-1.0, 1.0]), lo, hi)      # x = 1 is feasible
    assert not rays.certifies(a, np.array([-1.0, 3.0]), lo, hi)
    # a perturbed matrix leaves r = A^T z != 0: the bound on x decides
    bent = sp.csc_matrix(np.array([[-1.0], [1.1]]))
    assert rays.certifies(bent, np.array([-1.0, 0.0]), lo, hi) is False  # 0.07 x >= -0.7 at x = -10
    assert rays.certifies(bent, np.array([-1.0, 0.0]), np.array([0.0]), hi)
    assert not rays.certifies(bent, np.array([-1.0, 0.0]), np.array([-np.inf]), hi)
    assert rays.hits == 2


def test_a_ray_that_is_not_a_certificate_is_not_kept():
    a = sp.csc_matrix(np.array([[-1.0], [1.0]]))
    rays = FarkasRays(_dims(nonneg=2))
    assert not rays.remember(np.array([1.0, 1.0]), a, np.array([-1.0, 2.0]), np.array([-5.0]),
                             np.array([5.0]))
    assert not rays.rays


def test_projection_lands_in_the_cone_and_keeps_its_points():
    rng = np.random.default_rng(1)
    dims = _dims(zero=2, nonneg=3, soc=[3, 4], psd=[3])
    blocks = _cone_blocks(dims)
    z = rng.standard_normal(2 + 3 + 7 + 6)
    p = project_dual(z, blocks)
    assert np.array_equal(p[:2], z[:2])                  # the zero cone's dual is free
    assert (p[2:5] >= 0).all()
    for start, n in ((5, 3), (8, 4)):
        assert p[start] >= np.linalg.norm(p[start + 1: start + n]) - 1e-12
    assert np.linalg.eigvalsh(svec_to_matrix(p[12:])).min() >= -1e-12
    assert np.allclose(project_dual(p, blocks), p)


def test_psd_layout_is_the_solvers(case30_grid):
    """The primal slack of a solved cycle relaxation is PSD in every block when read in our
    layout (Clarabel's: upper triangle by columns, off-diagonals times sqrt 2); in the lower
    triangle's layout it is not."""
    m = np.array([[2.0, 0.3, -0.1], [0.3, 1.0, 0.2], [-0.1, 0.2, 3.0]])
    assert np.allclose(svec_to_matrix(matrix_to_svec(m)), m)
    relaxation = CycleRelaxation(case30_grid)
    relaxation._set(_scenarios(case30_grid, (1.0, 1.0), 1)[0], 0.0)
    data, chain, inverse = relaxation.problem.get_problem_data(cp.CLARABEL)
    raw = chain.solve_via_data(relaxation.problem, data, False, False, {})
    assert str(raw.status) == "Solved"
    s = np.asarray(raw.s)
    psd = [(a, b) for kind, a, b in _cone_blocks(data["dims"]) if kind == "psd"]
    assert psd
    assert min(np.linalg.eigvalsh(svec_to_matrix(s[a:b])).min() for a, b in psd) > -1e-7

    def lower_layout(v):
        n = int(round((np.sqrt(8 * len(v) + 1) - 1) / 2))
        r, c = np.tril_indices(n)
        order = np.lexsort((r, c))  # lower triangle by columns
        out = np.zeros((n, n))
        out[r[order], c[order]] = v * np.where(r[order] == c[order], 1, 1 / np.sqrt(2))
        return out + np.tril(out, -1).T
    assert min(np.linalg.eigvalsh(lower_layout(s[a:b])).min() for a, b in psd) < -1e-3


@pytest.mark.parametrize("relaxation", [SocRelaxation, CycleRelaxation])
def test_rays_give_the_statuses_of_fresh_solves(case30_grid, relaxation):
    """Scenarios across case30's boundary, half with an outage: a relaxation that keeps its rays
    answers every scenario as a fresh solve does (statuses and optima), and settles some of
    the infeasible ones from a ray."""
    keeping = relaxation(case30_grid)
    fresh = relaxation(case30_grid)
    statuses = []
    for scn in _scenarios(case30_grid, (1.0, 1.6), 24):
        fresh._rays = None
        kept, new = keeping.solve(scn), fresh.solve(scn)
        statuses.append(new.status)
        assert kept.status == new.status, scn.scenario_id
        if new.status == "optimal":
            assert kept.objective == new.objective
    assert statuses.count("infeasible") >= 8
    assert keeping.settled_by_rays >= 4


def test_a_kept_cycle_ray_settles_a_scenario_before_any_ac_solve(case30_grid):
    """A labeller whose cycle relaxation proved one scenario infeasible settles the next such
    scenario as `cycle-infeasible` from the kept ray (no AC solver, no cycle solve), with the
    label a fresh labeller gives."""
    scenarios = _scenarios(case30_grid, (0.97, 1.1), 30, seed=3)
    fresh = [Labeller(case30_grid, dc=False, sdp=False).label(s) for s in scenarios]
    beyond = [s for s, lb in zip(scenarios, fresh, strict=True) if lb.certificate == "cycle-infeasible"]
    assert len(beyond) >= 3
    labeller = Labeller(case30_grid, dc=False, sdp=False)
    calls = []
    solve_ac = labeller.solve_ac
    labeller.solve_ac = lambda scn, solver: calls.append(scn.scenario_id) or solve_ac(scn, solver)
    labels = [labeller.label(s) for s in scenarios]
    assert [(lb.status, lb.certificate) for lb in labels] == [(lb.status, lb.certificate) for lb in fresh]
    assert labeller._cycles.settled_by_rays >= 1
    without_ac = [s.scenario_id for s in beyond if s.scenario_id not in calls]
    assert len(without_ac) == labeller._cycles.settled_by_rays
