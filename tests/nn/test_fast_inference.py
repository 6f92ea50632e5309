"""The fast inference path: batched inputs equal the per-graph reference, the `fast` preset
trains, saves and reloads to the same predictions."""

import numpy as np
import pytest
import torch
from synthetic import graphs  # noqa: I001
from torch_geometric.data import Batch

from gridtune.errors import GridtuneError, SpecError
from gridtune.grids.view import task_graphs
from gridtune.nn.batching import collate_inputs, input_batches
from gridtune.nn.model import (
    MODEL_PRESETS,
    ModelConfig,
    _batch_vector,
    _dc_flows,
    build_model,
    model_preset,
)
from gridtune.nn.normalizer import Normalizer
from gridtune.nn.stress import linear_flows, stress_features


def test_collate_inputs_equals_pyg_batching_on_the_model_inputs():
    gs = graphs("case14", 7, seed=3)
    ours, ref = collate_inputs(gs), Batch.from_data_list(gs)
    for key in ("x", "edge_index", "edge_attr", "nominal_load_pu", "batch", "ptr"):
        assert torch.equal(ours[key], ref[key]), key
    assert ours.num_graphs == 7 and not hasattr(ours, "y_opf")
    sizes = [b.num_graphs for b in input_batches(gs, 3)]
    assert sizes == [3, 3, 1]
    with pytest.raises(ValueError, match="empty"):
        collate_inputs([])


def test_batched_flows_equal_each_graph_solved_alone():
    """P and Q in one grouped product (several topologies in one batch) give what one graph at a
    time gives, column by column; the stress columns are unchanged by passing the Q flow in."""
    gs = graphs("case14", 12, seed=5)  # about half with one branch out: several B-theta matrices
    b = collate_inputs(gs)
    idx = _batch_vector(b)
    theta, flow, loading, q_flow = _dc_flows(b.x, b.edge_index, b.edge_attr, idx, reactive=True)
    for i, g in enumerate(gs):
        one = torch.zeros(g.num_nodes, dtype=torch.long)
        t1, f1, l1, q1 = _dc_flows(g.x, g.edge_index, g.edge_attr, one, reactive=True)
        nodes, rows = slice(b.ptr[i], b.ptr[i + 1]), slice(i * g.edge_index.shape[1], (i + 1) * g.edge_index.shape[1])
        torch.testing.assert_close(theta[nodes], t1, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(flow[rows], f1, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(q_flow[rows], q1, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(loading[rows], l1, atol=1e-6, rtol=1e-5)
    # the two-column solve equals two one-column solves (phase shifters on P only)
    x, ei, ea, i_np = (t.double().numpy() for t in (b.x, b.edge_index, b.edge_attr, idx))
    ei, i_np = ei.astype(np.int64), i_np.astype(np.int64)
    inj = np.random.default_rng(0).standard_normal((x.shape[0], 2))
    th2, fl2 = linear_flows(x, ei, ea, i_np, inj, shift=(True, False))
    for k, shift in enumerate((True, False)):
        th1, fl1 = linear_flows(x, ei, ea, i_np, inj[:, k], shift=shift)
        np.testing.assert_allclose(th2[:, k], th1, atol=1e-10)
        np.testing.assert_allclose(fl2[:, k], fl1, atol=1e-10)
    given = stress_features(b.x, b.edge_index, b.edge_attr, b.nominal_load_pu, idx, flow, q_flow)
    solved = stress_features(b.x, b.edge_index, b.edge_attr, b.nominal_load_pu, idx, flow)
    for a, c in zip(given, solved, strict=True):
        torch.testing.assert_close(a, c)


def test_fast_preset_and_its_option_form():
    cfg = model_preset("fast")
    assert (cfg.hidden, cfg.layers, cfg.edge_readout, cfg.loadability_cuts) == (16, 2, False, True)
    assert not (cfg.dc_flow or cfg.stress_features) and cfg.dc_loadability  # the loadability alone
    assert model_preset("fast", hidden=32).hidden == 32
    with pytest.raises(GridtuneError, match="unknown model preset `quick`; valid: `fast`"):
        model_preset("quick")
    from gridtune.workflows.configs import parse_model_options

    assert ModelConfig(**parse_model_options(["preset=fast"])) == cfg
    assert parse_model_options(["preset=fast", "layers=3"])["layers"] == 3
    with pytest.raises(SpecError, match="`preset=quick` is not a preset; valid: `fast`"):
        parse_model_options(["preset=quick"])
    assert set(MODEL_PRESETS["fast"]) <= {f for f in ModelConfig.__dataclass_fields__}


def test_fast_model_trains_saves_and_predicts_the_same_after_reload(tmp_path):
    from gridtune.nn.checkpoint import load_checkpoint

    gs = graphs("case14", 60, seed=2)
    import gridtune

    m = gridtune.pretrain(gs, tmp_path, task="feasibility", model=model_preset("fast"),
                          train=gridtune.TrainConfig(epochs=3, batch_size=16)).to_dict()
    assert m["model"]["loadability_cuts"] is True and m["test"]["model"]["auroc"] is not None
    model, _ = load_checkpoint(tmp_path)
    assert model.config == model_preset("fast") and len(model.cuts) > 0  # the cut table travelled
    test = task_graphs(gs[:20], "feasibility")
    fresh = build_model(model.config, "feasibility", Normalizer().fit(test)).eval()
    with torch.no_grad():
        out = model(collate_inputs(test))
        again, _ = load_checkpoint(tmp_path)
        torch.testing.assert_close(again(collate_inputs(test)), out)
        torch.testing.assert_close(model(Batch.from_data_list(test)), out)  # the same on a PyG batch
        assert not torch.allclose(fresh(collate_inputs(test)), out)  # the trained weights were loaded


def test_cut_table_answers_like_the_stored_cuts_and_solves_only_unseen_topologies():
    """A `CutTable` filled from solved graphs gives `basis_lp.bound_group`'s answer (exact on the
    graphs whose cuts it holds), survives a state-dict round trip, and leaves a topology it never
    saw to the LP."""
    from gridtune.nn import basis_lp
    from gridtune.nn.cut_table import CutTable
    from gridtune.nn.loadability import (
        cut_bounds,
        loadability_features,
        solved_topologies,
        uncached,
    )

    gs = graphs("case14", 24, seed=7)
    seen, unseen = gs[:16], gs[16:]
    basis_lp.clear()  # cuts other tests' solves left on the same topologies would join the reference
    table = CutTable().fill(solved_topologies(seen))
    assert len(table) >= 2  # intact and outage topologies
    b, u = collate_inputs(seen), collate_inputs(unseen + seen[:2])
    with cut_bounds():  # the reference: the same cuts, read from the LP module's own state
        reference, reference_u = (loadability_features(x.x, x.edge_index, x.edge_attr, x.batch) for x in (b, u))
    with uncached():
        exact = loadability_features(b.x, b.edge_index, b.edge_attr, b.batch)
        solves = basis_lp.stats()["solves"]
        answered = loadability_features(b.x, b.edge_index, b.edge_attr, b.batch, table)
        assert basis_lp.stats()["solves"] == solves  # no LP solved
        from_table = loadability_features(u.x, u.edge_index, u.edge_attr, u.batch, table)
    # dc_overload is exact on graphs whose cuts the table holds; the branch loadings are those of
    # the solve that found the binding cut
    torch.testing.assert_close(answered[0], exact[0], atol=1e-5, rtol=1e-5)
    for ours, ref in zip((*answered, *from_table), (*reference, *reference_u), strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)
    copy = CutTable()
    copy.load_state_dict(table.state_dict())
    assert len(copy) == len(table) and torch.equal(copy.w, table.w) and torch.equal(copy.keys, table.keys)
    with uncached():
        torch.testing.assert_close(loadability_features(b.x, b.edge_index, b.edge_attr, b.batch, copy)[0],
                                   answered[0])
    with pytest.raises(GridtuneError, match="`loadability_cuts` .* needs `dc_loadability=true`"):
        ModelConfig(dc_loadability=False, loadability_cuts=True)


def test_fine_tuning_a_fast_model_stores_the_targets_cuts(tmp_path):
    """A `fast` model fine-tuned on another grid answers that grid's topologies from cuts of the
    target's training split (labels not needed), not from the source's; so does its scratch twin."""
    import gridtune
    from gridtune.nn.checkpoint import load_checkpoint

    gridtune.pretrain(graphs("case14", 40, seed=2), tmp_path / "src", task="feasibility",
                      model=model_preset("fast"), train=gridtune.TrainConfig(epochs=2, batch_size=16))
    source, _ = load_checkpoint(tmp_path / "src")
    assert set(source.cuts.sizes[:, 0].tolist()) == {14}
    gridtune.finetune(tmp_path / "src", graphs("case30", 60, seed=4), tmp_path / "ft", labels=12,
                      strategy="full", train=gridtune.TrainConfig(epochs=2, batch_size=8),
                      conformal_alpha=None)
    tuned, _ = load_checkpoint(tmp_path / "ft")
    assert len(tuned.cuts) > 0 and set(tuned.cuts.sizes[:, 0].tolist()) == {30}
