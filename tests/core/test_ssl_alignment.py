"""Masked-feature pre-adaptation on a grid GNN and the paired-alignment prior on a toy model."""

import copy

import pytest
import torch

from gridtune.core.adapt import adapt
from gridtune.core.alignment import PairedAlignment, pairs_by_name
from gridtune.core.registry import make_strategy
from gridtune.core.ssl import pre_adapt
from gridtune.core.tasks import ClassificationTask
from gridtune.core.trainer import TrainConfig, make_loader
from gridtune.errors import GridtuneError
from gridtune.nn.model import ModelConfig, build_model
from gridtune.nn.normalizer import Normalizer
from tests.core.toy_models import TinyCNN, TinyMLP, image_data, shifted_data
from tests.nn.synthetic import graphs


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_masked_reconstruction_learns_on_unlabelled_grid_scenarios():
    torch.manual_seed(0)
    source = graphs("case9", 30, seed=0)
    model = build_model(ModelConfig(hidden=16, layers=2), "feasibility", Normalizer().fit(source))
    unl = graphs("case14", 16, seed=3, labelled=False)  # target scenarios: no OPF labels at all
    assert all(torch.isnan(g.y_infeasible).all() for g in unl)
    before = copy.deepcopy(model)
    for p in model.encoder.blocks[0].parameters():
        p.requires_grad_(False)
    res = pre_adapt(model, make_loader(unl, 8, shuffle=False), epochs=20, lr=3e-3, seed=0)
    assert res.history[-1] < 0.7 * res.history[0]
    assert _same(model.head, before.head)            # the head is left alone
    assert not _same(model.encoder, before.encoder)  # the encoder moved
    # trainability is restored as it was (the caller's freezing survives pre-adaptation)
    assert not any(p.requires_grad for p in model.encoder.blocks[0].parameters())
    assert all(p.requires_grad for p in model.encoder.blocks[1].parameters())
    # stage two runs from the pre-adapted encoder
    lab = graphs("case14", 40, seed=4)
    from gridtune.nn.tasks import make_task
    model, fit_res = adapt(model, make_strategy("full"), make_loader(lab[:30], 10, shuffle=True),
                           make_loader(lab[30:], 10, shuffle=False), make_task("feasibility"),
                           TrainConfig(epochs=2))
    assert fit_res.epochs_run == 2


def test_masked_reconstruction_refuses_pooled_or_image_representations():
    with pytest.raises(GridtuneError, match=r"one representation row per input row; .*`\(8, 16, 8, 8\)`"):
        pre_adapt(TinyCNN(), make_loader(image_data(16, 0), 8, shuffle=False), epochs=1)
    with pytest.raises(GridtuneError, match="mask_rate must be in \\(0, 1\\), got `1.5`"):
        pre_adapt(TinyMLP(), [], mask_rate=1.5)


def test_paired_alignment_pulls_paired_entities_together():
    torch.manual_seed(0)
    source_model = TinyMLP()
    src_x = torch.randn(12, 2)
    tgt_x = src_x[torch.arange(11, -1, -1)] + torch.tensor([0.0, 2.0])  # same entities, reversed, shifted
    pairs = pairs_by_name([f"bus{i}" for i in range(12)], [f"bus{i}" for i in range(11, -1, -1)])
    assert pairs[0].tolist() == [11, 0]
    data, val = shifted_data(64, 0, 0.0), shifted_data(32, 1, 0.0)
    dist = {}
    for weight in (0.0, 5.0):
        torch.manual_seed(0)
        model = copy.deepcopy(source_model)
        term = PairedAlignment(source_model, (src_x,), (tgt_x,), pairs, weight=weight, level="embed")
        start = float(term.distance_to(model).detach())
        model, _ = adapt(model, make_strategy("full"), make_loader(data, 16, shuffle=True),
                         make_loader(val, 32, shuffle=False), ClassificationTask(),
                         TrainConfig(epochs=15, lr=1e-2, patience=15), extra_losses=[term])
        dist[weight] = float(term.distance_to(model).detach())
    assert start > 0
    assert dist[5.0] < 0.3 * dist[0.0]


def test_alignment_errors():
    m = TinyMLP()
    with pytest.raises(GridtuneError, match="unknown alignment level `nodes`; valid: `elements`, `embed`"):
        PairedAlignment(m, (torch.zeros(2, 2),), (torch.zeros(2, 2),), torch.tensor([[0, 0]]), level="nodes")
    with pytest.raises(GridtuneError, match="alignment pair source row `5` is out of range for `2` source rows"):
        PairedAlignment(m, (torch.zeros(2, 2),), (torch.zeros(2, 2),), torch.tensor([[5, 0]]), level="embed")
    with pytest.raises(GridtuneError, match="no entity name is shared"):
        pairs_by_name(["a"], ["b"])
