"""Every strategy on the grid GNN (all three message-passing families), on synthetic graphs:
the same strategy objects the CNN and transformer tests use."""

import copy
import re

import pytest
import torch

from gridtune.core.adapt import adapt
from gridtune.core.lora import LoRALinear
from gridtune.core.registry import make_strategy
from gridtune.core.trainer import TrainConfig, make_loader
from gridtune.nn.model import ModelConfig, build_model
from gridtune.nn.normalizer import Normalizer
from gridtune.nn.tasks import make_task
from tests.nn.synthetic import graphs


@pytest.fixture(scope="module")
def data():
    return graphs("case9", 24, seed=0), graphs("case14", 24, seed=1)


def _model(source, conv="gine"):
    torch.manual_seed(0)
    return build_model(ModelConfig(conv=conv, hidden=8, layers=2, heads=2, head_hidden=8),
                       "feasibility", Normalizer().fit(source))


def _run(model, name, target, **opts):
    return adapt(model, make_strategy(name, **opts), make_loader(target[:16], 8, shuffle=True),
                 make_loader(target[16:], 8, shuffle=False), make_task("feasibility"),
                 TrainConfig(epochs=2, lr=1e-2))


@pytest.mark.parametrize("name", ["scratch", "linear-probe", "full", "partial", "gradual",
                                  "discriminative", "l2sp", "adapter", "lora", "dann", "coral", "mmd",
                                  "self-training"])
def test_every_strategy_trains_the_grid_gnn(data, name):
    source, target = data
    model = _model(source)
    start = copy.deepcopy(model)
    opts = {"unlabeled": make_loader(graphs("case14", 8, seed=9, labelled=False), 4, shuffle=True)} \
        if name in ("dann", "coral", "mmd", "self-training") else {}
    model, res = _run(model, name, target, **opts)
    assert res.epochs_run == 2 and res.trainable_parameters > 0
    before = dict(start.named_parameters())
    # adapters wrap blocks (`blocks.i.block.`), LoRA wraps layers (`.base.`): map names back
    plain = {re.sub(r"\.block\.|\.base\.", ".", n): p for n, p in model.named_parameters()
             if ".adapter." not in n and "lora_" not in n}
    assert set(plain) == set(before)
    moved = [n for n, p in plain.items() if not torch.equal(p, before[n])]
    assert moved, "nothing trained"
    first_block = [n for n in moved if n.startswith("encoder.blocks.0.")]
    if name in ("linear-probe", "adapter"):
        assert not [n for n in moved if n.startswith("encoder.")]
    if name == "lora":  # merged: encoder weights moved by the low-rank update only
        enc = [n for n in moved if n.startswith("encoder.")]
        assert enc and all(n.endswith("weight") for n in enc), enc
    if name == "partial":
        assert not first_block and [n for n in moved if n.startswith("encoder.blocks.1.")]


@pytest.mark.parametrize("conv", ["gine", "gatv2", "transformer"])
def test_lora_wraps_and_merges_every_conv_family(data, conv):
    source, target = data
    model = _model(source, conv)
    batch = next(iter(make_loader(target, 24, shuffle=False)))
    model, _ = _run(model, "lora", target, rank=2, merge=False)
    wrapped = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert wrapped
    model.eval()
    with torch.no_grad():
        before = model(batch)
        make_strategy("lora").finalize(model)
        after = model(batch)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert torch.allclose(before, after, atol=1e-5)
