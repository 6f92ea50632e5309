"""Generator and voltage limits on hand-made predictions of case9."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.loader import DataLoader

from gridtune.constraints.bounds import GeneratorLimits, VoltageLimits
from gridtune.grids.features import BUS_FEATURES

X = {n: BUS_FEATURES.index(n) for n in BUS_FEATURES}


def inside(g) -> torch.Tensor:
    """A prediction at the middle of every limit."""
    s = torch.zeros(g.num_nodes, 4)
    s[:, 0] = (g.x[:, X["min_vm_pu"]] + g.x[:, X["max_vm_pu"]]) / 2
    s[:, 2] = (g.x[:, X["min_pg_pu"]] + g.x[:, X["max_pg_pu"]]) / 2
    s[:, 3] = (g.x[:, X["min_qg_pu"]] + g.x[:, X["max_qg_pu"]]) / 2
    return s


def test_inside_limits_is_zero_and_excursions_are_measured(case9_graphs):
    g = case9_graphs[0]
    s = inside(g)
    gen, volt = GeneratorLimits("gen"), VoltageLimits("volt")
    assert gen.violation(None, g, s, train=False).item() == 0.0
    assert volt.violation(None, g, s, train=False).item() == 0.0
    gen_bus = int(torch.nonzero(g.x[:, X["n_gen"]] > 0)[0])
    s2 = s.clone()
    s2[gen_bus, 2] = g.x[gen_bus, X["max_pg_pu"]] + 0.3
    s2[gen_bus, 3] = g.x[gen_bus, X["min_qg_pu"]] - 0.1
    s2[1, 0] = g.x[1, X["max_vm_pu"]] + 0.02
    assert gen.violation(None, g, s2, train=False).item() == pytest.approx(0.4, abs=1e-5)
    p_only = GeneratorLimits("p", include_q=False)
    assert p_only.violation(None, g, s2, train=False).item() == pytest.approx(0.3, abs=1e-5)
    assert volt.violation(None, g, s2, train=False).item() == pytest.approx(0.02, abs=1e-5)
    mean = VoltageLimits("vmean", reduce="mean")
    assert mean.violation(None, g, s2, train=False).item() == pytest.approx(0.02 / g.num_nodes,
                                                                         abs=1e-6)


def test_generation_at_a_bus_without_generator_violates(case9_graphs):
    g = case9_graphs[0]
    s = inside(g)
    load_bus = int(torch.nonzero(g.x[:, X["n_gen"]] == 0)[0])
    s[load_bus, 2] = 0.05
    assert GeneratorLimits("gen").violation(None, g, s, train=False).item() == pytest.approx(0.05)


def test_bounds_per_graph_in_a_batch(case9_graphs):
    g1, g2 = case9_graphs[:2]
    s1, s2 = inside(g1), inside(g2)
    s2[0, 0] = 0.5
    batch = next(iter(DataLoader([g1, g2], batch_size=2)))
    v = VoltageLimits("v").violation(None, batch, torch.cat([s1, s2]), train=False)
    assert v[0].item() == 0.0
    assert v[1].item() == pytest.approx(float(g2.x[0, X["min_vm_pu"]]) - 0.5, abs=1e-6)
