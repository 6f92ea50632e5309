"""A result does not depend on what the process computed before it.

Where the DC loadability LP's optimum is not unique (one bottleneck leaves the other units free:
usual on a re-rated case118), the branch loadings it gives are those of the vertex the warm start
reaches, which depends on the topology's previous solve. Every workflow therefore starts from
fresh LP state (`gridtune.nn.loadability.fresh_state`), so a study cell gives the same numbers
whichever cells its worker ran before.
"""

import numpy as np
from synthetic import grid, make_label, tiny_checkpoint

from gridtune.core.trainer import TrainConfig
from gridtune.grids.features import to_graph
from gridtune.grids.rating import rerate
from gridtune.grids.scenarios import Scenario
from gridtune.nn import loadability
from gridtune.nn.batching import collate_inputs
from gridtune.workflows import transfer


def rated_graphs(n: int, seed: int) -> list:
    """case118 re-rated as the shipped recipe does, load noise and single-branch outages;
    labelled by a load-scale rule."""
    g, _ = rerate(grid("case118"), 1.3, 5.0)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        s = rng.uniform(0.8, 1.6)
        noise = 1 + 0.05 * rng.standard_normal(g.n_bus)
        outage = (int(rng.integers(20)),) if rng.random() < 0.6 else ()
        sc = Scenario(i, s, g.pd_mw * s * noise, g.qd_mvar * s * noise, outage)
        out.append(to_graph(g, sc, make_label(g, sc, "feasible" if s < 1.2 else "infeasible")))
    return out


def loadability_inputs(graphs: list) -> list:
    b = collate_inputs(graphs)
    return loadability.loadability_features(b.x, b.edge_index, b.edge_attr, b.batch)


def test_the_loadability_inputs_depend_on_the_warm_start_history():
    """Why the workflows reset: the same graphs after other solves get other branch loadings."""
    graphs, others = rated_graphs(40, 3), rated_graphs(40, 11)
    loadability.fresh_state()
    first = loadability_inputs(graphs)
    loadability.fresh_state()
    loadability_inputs(others)
    loadability._CACHE.clear()  # keep the warm starts, forget the per-graph answers
    again = loadability_inputs(graphs)
    assert float((first[0] - again[0]).abs().max()) < 1e-9  # lam is unique
    assert float((first[1] - again[1]).abs().max()) > 1e-3  # the vertex is not


def test_a_result_does_not_depend_on_earlier_work_in_the_process(tmp_path):
    tiny_checkpoint(tmp_path / "src", name="case118", n=40, epochs=1)
    target = rated_graphs(120, 5)
    kw = dict(labels=16, strategy="full", train=TrainConfig(epochs=2, patience=2), with_scratch=False,
              save=False)
    loadability.fresh_state()
    first = transfer.finetune(tmp_path / "src", target, tmp_path / "a", seed=1, **kw).to_dict()
    loadability.fresh_state()
    transfer.finetune(tmp_path / "src", target, tmp_path / "b", seed=2, **kw)  # another order
    again = transfer.finetune(tmp_path / "src", target, tmp_path / "c", seed=1, **kw).to_dict()
    assert again["zero_shot"] == first["zero_shot"] and again["metrics"] == first["metrics"]
