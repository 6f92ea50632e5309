"""The branch physics of the graph schema against the AC-OPF solver's own flows."""

import numpy as np
import torch

from gridtune.grids.features import to_graph
from gridtune.grids.opf import solve_ac_opf
from gridtune.grids.physics import branch_loading
from gridtune.grids.scenarios import Scenario


def test_branch_loading_matches_the_solver_flows_branch_by_branch(case9_grid):
    grid = case9_grid
    scenario = Scenario(0, 1.0, grid.pd_mw * 1.1, grid.qd_mvar * 1.1, branch_out=(2,))
    result = solve_ac_opf(grid, scenario)
    assert result.converged
    g = to_graph(grid, scenario)
    loading, branch = branch_loading(torch.tensor(result.vm_pu), torch.tensor(np.deg2rad(result.va_degree)),
                                     g.edge_index, g.edge_attr.double())
    rated = [b for b in range(grid.n_branch) if b != 2 and grid.rate_a_mva[b] > 0]
    assert branch.tolist() == rated  # the outaged branch is left out, the others keep their number
    expected = 100.0 * result.branch_flow_mva[rated] / grid.rate_a_mva[rated]
    # features are float32: loadings agree to single precision
    assert np.allclose(loading.numpy(), expected, rtol=1e-5, atol=1e-4)
    assert loading.max() > 20.0  # a loaded grid, not a trivial zero
