"""Every strategy on two non-graph models (a CNN on images, a transformer on text).

The strategies never see the modality: the same objects adapt both models.
"""

import copy

import pytest
import torch
from torch import nn

from gridtune.core.adapt import adapt
from gridtune.core.lora import LoRALinear, apply_lora, merge_lora
from gridtune.core.registry import make_strategy, register, strategy_names
from gridtune.core.strategies.base import Strategy
from gridtune.core.tasks import ClassificationTask
from gridtune.core.trainer import TrainConfig, make_loader, trainable_parameters
from gridtune.errors import GridtuneError
from tests.core.toy_models import TinyCNN, TinyTransformer, image_data, text_data

CFG = TrainConfig(epochs=3, lr=3e-3, batch_size=16, patience=10)


def numel(m):
    return sum(p.numel() for p in m.parameters())


def _setup(kind):
    torch.manual_seed(0)
    if kind == "cnn":
        return TinyCNN(), image_data(48, 0), image_data(32, 1)
    return TinyTransformer(), text_data(48, 0), text_data(32, 1)


def _run(model, name, train, val, cfg=CFG, **options):
    strategy = make_strategy(name, **options)
    loaders = make_loader(train, 16, shuffle=True), make_loader(val, 32, shuffle=False)
    return adapt(model, strategy, *loaders, ClassificationTask(), cfg)


def test_cnn_trainable_counts_by_hand():
    # conv 1->8 (3x3) 80 + bn 16 | conv 8->16 (3x3) 1168 + bn 32 | head 16->2 34
    counts = {}
    for name, opts in [("full", {}), ("scratch", {}), ("linear-probe", {}),
                       ("partial", {"k": 1}), ("adapter", {"bottleneck": 4, "feature_dim": 1})]:
        model, train, val = _setup("cnn")
        model, _ = _run(model, name, train, val, cfg=TrainConfig(epochs=1), **opts)
        counts[name] = trainable_parameters(model)
    # adapters: 8->4->8 = 36 + 40, 16->4->16 = 68 + 80
    assert counts == {"full": 1330, "scratch": 1330, "linear-probe": 34, "partial": 1234,
                      "adapter": 76 + 148 + 34}


@pytest.mark.parametrize("kind", ["cnn", "text"])
@pytest.mark.parametrize("name", ["linear-probe", "adapter"])
def test_frozen_encoder_unchanged(kind, name):
    model, train, val = _setup(kind)
    before = copy.deepcopy(model.encoder.state_dict())  # BatchNorm running stats included
    opts = {"feature_dim": 1} if (name == "adapter" and kind == "cnn") else {}
    model, res = _run(model, name, train, val, **opts)
    after = model.encoder.state_dict()
    for key, value in before.items():
        key_after = key if key in after else key.replace("blocks.0.", "blocks.0.block.").replace(
            "blocks.1.", "blocks.1.block.")
        assert torch.equal(after[key_after], value), key
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"] + 1.0


@pytest.mark.parametrize("kind", ["cnn", "text"])
def test_full_learns_both_modalities(kind):
    model, train, val = _setup(kind)
    model, res = _run(model, "full", train, val, cfg=TrainConfig(epochs=25, lr=1e-2, patience=25))
    assert res.best_val["accuracy"] >= 0.8


def test_partial_trains_only_top_block():
    model, train, val = _setup("text")
    before = copy.deepcopy(model.state_dict())
    model, _ = _run(model, "partial", train, val, k=1)
    after = model.state_dict()
    changed = {k.split(".")[0] + "." + k.split(".")[1] + (("." + k.split(".")[2])
               if k.startswith("encoder.blocks") else "")
               for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"encoder.blocks.1", "head.weight", "head.bias"}
    with pytest.raises(GridtuneError, match="partial: k=`5` but the encoder has 2 blocks"):
        _run(_setup("text")[0], "partial", train, val, k=5)


def test_gradual_unfreezes_from_the_top():
    model, train, val = _setup("text")
    start = copy.deepcopy(model)
    model, _ = _run(model, "gradual", train, val, cfg=TrainConfig(epochs=2, patience=5), every=1)
    # epoch 0: head only; epoch 1: + block 1; block 0 and the embedding not yet
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))  # noqa: E731
    assert same(model.encoder.blocks[0], start.encoder.blocks[0])
    assert same(model.encoder.tok, start.encoder.tok)
    assert not same(model.encoder.blocks[1], start.encoder.blocks[1])
    assert not same(model.head, start.head)


def test_discriminative_learning_rates():
    model, _, _ = _setup("cnn")
    s = make_strategy("discriminative", decay=0.5)
    model = s.prepare(model)
    lrs = [g["lr"] for g in s.param_groups(model, TrainConfig(lr=0.1))]
    assert lrs == pytest.approx([0.1, 0.1 * 0.25, 0.1 * 0.5])  # head, block 0, block 1
    assert sum(numel_g for numel_g in [sum(p.numel() for p in g["params"])
               for g in s.param_groups(model, TrainConfig())]) == numel(model)


def test_l2sp_penalty_pulls_towards_pretrained():
    model, train, val = _setup("cnn")
    s = make_strategy("l2sp", alpha=1.0, beta=0.0)
    s.prepare(model)
    assert float(s.extra_loss(model, None, 0).detach()) == 0.0
    with torch.no_grad():
        model.encoder.blocks[0].conv.bias.add_(1.0)  # 8 entries moved by 1
    assert float(s.extra_loss(model, None, 0).detach()) == pytest.approx(0.5 * 8)

    drift = {}
    for alpha in (0.0, 10.0):
        model, train, val = _setup("cnn")
        w0 = [p.detach().clone() for p in model.encoder.parameters()]
        model, _ = _run(model, "l2sp", train, val, cfg=TrainConfig(epochs=5, lr=1e-2), alpha=alpha)
        drift[alpha] = sum(float(((p - q) ** 2).sum().detach()) for p, q in zip(model.encoder.parameters(), w0, strict=True))
    assert drift[10.0] < 0.5 * drift[0.0]


def test_lora_merge_equals_base_plus_low_rank_update():
    torch.manual_seed(0)
    lin = nn.Linear(6, 5)
    w_base = lin.weight.detach().clone()
    layer = LoRALinear(lin, rank=2, alpha=4.0)
    with torch.no_grad():
        layer.lora_b.normal_()
    x = torch.randn(7, 6)
    out_wrapped = layer(x)
    expected = w_base + (4.0 / 2) * layer.lora_b.detach() @ layer.lora_a.detach()
    holder = nn.Sequential(layer)
    assert merge_lora(holder) == 1
    assert isinstance(holder[0], nn.Linear)
    assert torch.allclose(holder[0].weight, expected)
    assert torch.allclose(holder[0](x), out_wrapped, atol=1e-6)


def test_lora_on_transformer_counts_and_merge():
    model, train, val = _setup("text")
    model, _ = _run(model, "lora", train, val, rank=2, merge=False)
    # per layer: out_proj 16x16, linear1 16->32, linear2 32->16 at rank 2
    per_layer = (2 * 16 + 16 * 2) + (2 * 16 + 32 * 2) + (2 * 32 + 16 * 2)
    assert trainable_parameters(model) == 2 * per_layer + 34
    batch = next(iter(make_loader(val, 32, shuffle=False)))
    model.eval()
    with torch.no_grad():
        before = model(batch)
        merge_lora(model)
        after = model(batch)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert torch.allclose(before, after, atol=1e-5)


def test_lora_without_linear_layers_is_an_error():
    with pytest.raises(GridtuneError, match="lora: `ConvEncoder` has no linear layers"):
        apply_lora(TinyCNN().encoder)


def test_head_swap_new_output_space():
    model, train, val = _setup("cnn")
    # 3 classes: the target rule split into thirds of the column index
    train3 = [(x, torch.tensor(int(x[0].sum(0).argmax()) // 3)) for x, _ in train]
    val3 = [(x, torch.tensor(int(x[0].sum(0).argmax()) // 3)) for x, _ in val]
    assert {int(y) for _, y in train3} == {0, 1, 2}
    model, res = _run(model, "head-swap", train3, val3, head=lambda d: nn.Linear(d, 3))
    assert model.head.out_features == 3
    assert "accuracy" in res.best_val


def test_decoder_gives_pixel_outputs():
    model, train, _ = _setup("cnn")
    # per-pixel target: is this the bright pixel
    pix = [(x, (x[0] > 1.0).float()) for x, _ in train]

    class PixelTask:
        name = "pixels"

        def target(self, batch):
            return batch[1]

        def loss(self, output, batch):
            return nn.functional.binary_cross_entropy_with_logits(output[:, 0], batch[1])

        def metrics(self, outputs, targets):
            return {"loss": float(nn.functional.binary_cross_entropy_with_logits(outputs[:, 0], targets))}

        def val_score(self, metrics):
            return -metrics["loss"]

    strategy = make_strategy("decoder", decoder=lambda c: nn.Conv2d(c, 1, 1), feature_dim=1)
    loader = make_loader(pix, 16, shuffle=True)
    model, res = adapt(model, strategy, loader, make_loader(pix, 48, shuffle=False), PixelTask(),
                       TrainConfig(epochs=15, lr=1e-2, patience=15))
    out = model(next(iter(loader)))
    assert out.shape == (16, 1, 8, 8)
    assert res.best_val["loss"] < 0.5 * res.history[0]["val_loss"] or res.best_val["loss"] < 0.1


def test_registry_errors():
    with pytest.raises(GridtuneError, match=r"unknown strategy `warp`; valid strategies:\n.*adapter .*freeze"):
        make_strategy("warp")
    with pytest.raises(GridtuneError, match="strategy name `full` is already registered"):
        @register
        class Again(Strategy):
            name = "full"
    with pytest.raises(GridtuneError, match="strategy `partial`: bad options .*valid options: `k`"):
        make_strategy("partial", depth=2)
    for name in ("scratch", "linear-probe", "full", "partial", "gradual", "discriminative",
                 "l2sp", "adapter", "lora", "head-swap", "decoder"):
        assert name in strategy_names()
