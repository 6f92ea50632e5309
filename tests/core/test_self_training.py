"""Self-training (mean-teacher pseudo-labels) on unlabelled data: the loss by hand, the teacher
update by hand, and a two-moons task where 12 labels plus unlabelled points beat 12 labels alone."""

import math

import pytest
import torch
from torch import nn

from gridtune.core.adapt import adapt
from gridtune.core.registry import make_strategy
from gridtune.core.strategies.self_training import ema_update, pseudo_label_loss
from gridtune.core.tasks import ClassificationTask
from gridtune.core.trainer import TrainConfig, evaluate, make_loader
from gridtune.errors import GridtuneError
from tests.core.toy_models import TinyMLP


def test_pseudo_label_loss_by_hand():
    student = torch.zeros(2)
    teacher = torch.tensor([3.0, 0.1])  # sigmoid 0.953 (confident), 0.525 (not)
    assert float(pseudo_label_loss(student, teacher, 0.9)) == pytest.approx(math.log(2) / 2)
    assert float(pseudo_label_loss(student, torch.tensor([0.1, -0.1]), 0.9)) == 0.0
    multi = pseudo_label_loss(torch.zeros(2, 3), torch.tensor([[5.0, 0, 0], [0, 0, 0]]), 0.9)
    assert float(multi) == pytest.approx(math.log(3) / 2)  # one confident row of two
    assert float(pseudo_label_loss(torch.ones(2, 4), torch.zeros(2, 4), 0.9, "regression")) == 1.0


def test_ema_update_by_hand():
    t, s = nn.Linear(1, 1), nn.Linear(1, 1)
    with torch.no_grad():
        t.weight.fill_(1.0)
        s.weight.fill_(3.0)
    ema_update(t, s, 0.75)
    assert float(t.weight.detach()) == pytest.approx(0.75 * 1 + 0.25 * 3)


def moons(n, seed, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    t = torch.rand(n, generator=g) * math.pi
    x = torch.stack([torch.cos(t), torch.sin(t)], 1)
    x[y == 1] = torch.stack([1 - torch.cos(t[y == 1]), 0.5 - torch.sin(t[y == 1])], 1)
    x += noise * torch.randn(n, 2, generator=g)
    return list(zip(x, y, strict=True))


@pytest.mark.slow
def test_unlabelled_points_help_on_two_moons():
    test = make_loader(moons(500, 99), 500, shuffle=False)
    acc = {"full": [], "self-training": []}
    for seed in (1, 2, 3):
        labelled, unlabelled = moons(12, seed), moons(500, 100 + seed)
        for name in acc:
            torch.manual_seed(0)
            opts = {"unlabeled": make_loader(unlabelled, 64, shuffle=True), "threshold": 0.8,
                    "warmup_steps": 25, "ema": 0.9} if name == "self-training" else {}
            strategy = make_strategy(name, **opts)
            model, _ = adapt(TinyMLP(dims=(32, 32)), strategy, make_loader(labelled, 12, shuffle=True),
                             None, ClassificationTask(), TrainConfig(epochs=150, lr=2e-2))
            acc[name].append(evaluate(model, test, ClassificationTask())["accuracy"])
        assert strategy.confident_share[-1] > 0.5  # most unlabelled points end up pseudo-labelled
    assert sum(acc["self-training"]) / 3 > sum(acc["full"]) / 3 + 0.02, acc
    assert all(s >= f for s, f in zip(acc["self-training"], acc["full"], strict=True)), acc


def test_bad_settings():
    with pytest.raises(GridtuneError, match=r"threshold must be in \[0.5, 1\), got `0.2`"):
        make_strategy("self-training", threshold=0.2)
    with pytest.raises(GridtuneError, match="unknown kind `ranking`; valid: `classification`, `regression`"):
        make_strategy("self-training", kind="ranking")
