"""Domain-adaptation losses and strategies on toy problems with a known answer."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from gridtune.core.adapt import adapt
from gridtune.core.domain import coral_loss, dann_lambda, mmd_loss, reverse_gradient
from gridtune.core.registry import make_strategy
from gridtune.core.tasks import ClassificationTask
from gridtune.core.trainer import TrainConfig, make_loader
from gridtune.errors import GridtuneError
from tests.core.toy_models import TinyMLP, shifted_data


def test_coral_zero_for_identical_covariances_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 5, generator=g)
    assert float(coral_loss(a, a[torch.randperm(200, generator=g)])) == pytest.approx(0, abs=1e-7)
    assert float(coral_loss(a, a + 3.0)) == pytest.approx(0, abs=1e-7)  # a mean shift is not seen
    scaled = a * torch.tensor([1.0, 1.0, 3.0, 1.0, 1.0])
    assert float(coral_loss(a, scaled)) > 0.05
    # by hand: C_t - C_s only differs in entry (2,2): 8 var, and row/col 2 off-diagonals: 2 cov
    cs = torch.cov(a.T)
    expected = ((cs[2, 2] * 8) ** 2 + 2 * ((cs[2] * 2) ** 2).sum() - 2 * (cs[2, 2] * 2) ** 2) / (4 * 25)
    assert float(coral_loss(a, scaled)) == pytest.approx(float(expected), rel=1e-4)


def test_mmd_zero_for_identical_sets_grows_with_shift():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(100, 3, generator=g)
    b = torch.randn(100, 3, generator=g)
    assert float(mmd_loss(a, a)) == pytest.approx(0, abs=1e-6)
    same, near, far = (float(mmd_loss(a, b + s)) for s in (0.0, 0.5, 2.0))
    assert same < near < far
    with pytest.raises(GridtuneError, match=r"mmd: expected two \(rows, D\) embeddings .*`\(100, 3\)` and `\(4,\)`"):
        mmd_loss(a, torch.ones(4))


def test_gradient_reversal_and_schedule():
    x = torch.ones(3, requires_grad=True)
    reverse_gradient(x, 0.5).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -0.5))
    assert dann_lambda(0, 100) == 0.0
    assert 0.99 < dann_lambda(100, 100) < 1.0
    assert dann_lambda(10, 100) < dann_lambda(50, 100)


def _domain_accuracy(model, source, target):
    with torch.no_grad():
        zs = model.embed((torch.stack([x for x, _ in source]),)).numpy()
        zt = model.embed((torch.stack([x for x, _ in target]),)).numpy()
    z = np.concatenate([zs, zt])
    d = np.r_[np.zeros(len(zs)), np.ones(len(zt))]
    clf = LogisticRegression(max_iter=2000)
    return float(cross_val_score(clf, z, d, cv=4).mean())


def test_dann_lowers_domain_classifier_accuracy():
    source, val = shifted_data(256, 0, 0.0), shifted_data(128, 1, 0.0)
    target = shifted_data(256, 2, 3.0)
    held_s, held_t = shifted_data(200, 3, 0.0), shifted_data(200, 4, 3.0)
    cfg = TrainConfig(epochs=40, lr=1e-2, patience=40)
    acc = {}
    task_acc = {}
    for name in ("full", "dann"):
        torch.manual_seed(0)
        model = TinyMLP()
        opts = {"unlabeled": make_loader(target, 32, shuffle=True, seed=1), "warmup_steps": 100,
                "weight": 1.0} if name == "dann" else {}
        model, res = adapt(model, make_strategy(name, **opts), make_loader(source, 32, shuffle=True),
                           make_loader(val, 128, shuffle=False), ClassificationTask(), cfg)
        acc[name] = _domain_accuracy(model, held_s, held_t)
        task_acc[name] = res.best_val["accuracy"]
    assert acc["full"] > 0.75  # without adaptation the shift is plain in the embedding
    assert acc["dann"] < min(acc["full"] - 0.15, 0.7), acc  # 0.5 = indistinguishable
    assert task_acc["dann"] > 0.85  # and the task is still solved


@pytest.mark.parametrize("name", ["coral", "mmd"])
def test_coral_and_mmd_strategies_reduce_their_discrepancy(name):
    source, val = shifted_data(128, 0, 0.0), shifted_data(64, 1, 0.0)
    target = shifted_data(128, 2, 3.0)
    loss_fn = coral_loss if name == "coral" else mmd_loss
    out = {}
    for strat in ("full", name):
        torch.manual_seed(0)
        model = TinyMLP()
        opts = {"unlabeled": make_loader(target, 32, shuffle=True), "weight": 5.0} if strat == name else {}
        model, _ = adapt(model, make_strategy(strat, **opts), make_loader(source, 32, shuffle=True),
                         make_loader(val, 64, shuffle=False), ClassificationTask(),
                         TrainConfig(epochs=30, lr=5e-3, patience=30))
        with torch.no_grad():
            zs = model.embed((torch.stack([x for x, _ in source]),))
            zt = model.embed((torch.stack([x for x, _ in target]),))
        out[strat] = float(loss_fn(zs, zt))
    assert out[name] < 0.5 * out["full"], out


def test_domain_strategy_without_unlabeled_data_is_an_error():
    with pytest.raises(GridtuneError, match="strategy `coral` needs unlabelled target data"):
        adapt(TinyMLP(), make_strategy("coral"), make_loader(shifted_data(8, 0, 0), 4, shuffle=False),
              None, ClassificationTask(), TrainConfig(epochs=1))
