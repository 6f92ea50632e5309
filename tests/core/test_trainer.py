"""The generic training loop: learns a known rule, early-stops, restores the best weights."""

import pytest
import torch
from torch import nn

from gridtune.core.tasks import ClassificationTask
from gridtune.core.trainer import TrainConfig, fit, make_loader, predict
from gridtune.errors import SpecError, TrainingError


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()  # known linear rule
    return list(zip(x, y, strict=True))


def _model():
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))


class _XY(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _model()

    def forward(self, batch):
        return self.net(batch[0])


def test_fit_learns_linear_rule_and_is_deterministic():
    train, val = _data(200, 0), _data(100, 1)
    cfg = TrainConfig(epochs=30, lr=1e-2, batch_size=32, patience=30)
    task = ClassificationTask()
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = _XY()
        res = fit(model, make_loader(train, 32, shuffle=True, seed=0),
                  make_loader(val, 64, shuffle=False), task, cfg)
        runs.append((res, model))
    res, model = runs[0]
    assert res.best_val["accuracy"] > 0.9
    assert res.epochs_run == 30
    assert runs[0][0].history == [
        {k: v for k, v in h.items()} for h in runs[1][0].history]
    out, tgt = predict(model, make_loader(val, 64, shuffle=False), task)
    assert out.shape == (100, 2) and tgt.shape == (100,)
    # best weights restored: their validation accuracy is the recorded best
    assert task.metrics(out, tgt)["accuracy"] == pytest.approx(res.best_val["accuracy"])


def test_early_stopping_and_extra_loss():
    train, val = _data(64, 0), _data(32, 1)
    model = _XY()
    calls = []

    def extra(m, batch, step):
        calls.append(step)
        return torch.zeros(())

    # a learning rate too small to change accuracy: stops after `patience` stale epochs
    cfg = TrainConfig(epochs=50, lr=1e-9, patience=3)
    res = fit(model, make_loader(train, 16, shuffle=True), make_loader(val, 32, shuffle=False),
              ClassificationTask(), cfg, extra_loss=extra)
    assert res.epochs_run == 4 and res.best_epoch == 0
    assert calls == list(range(16))


def test_nan_loss_and_bad_config_are_errors():
    with pytest.raises(SpecError, match="lr must be a positive number, got `-1"):
        TrainConfig(lr=-1)

    def nan_loss(m, batch, step):
        return torch.tensor(float("nan"))

    with pytest.raises(TrainingError, match="loss became `nan` at epoch 0"):
        fit(_XY(), make_loader(_data(8, 0), 4, shuffle=False), None, ClassificationTask(),
            TrainConfig(epochs=2), extra_loss=nan_loss)


def _scripted_violation(values):
    """A `val_violation` hook that returns `values[epoch]` (one call per epoch)."""
    calls = []

    def check(model, loader):
        calls.append(1)
        return values[len(calls) - 1]

    return check


def test_constrained_selection_keeps_best_epoch_within_target():
    train, val = _data(200, 0), _data(100, 1)
    cfg = TrainConfig(epochs=10, lr=1e-2, batch_size=32, patience=50)
    nan = float("nan")
    # within target only at epochs 2 and 4: the late, better-scoring epochs violate
    viol = [nan, 0.3, 0.0, 0.2, 0.0, 0.5, 0.5, 0.5, 0.5, 0.5]
    torch.manual_seed(0)
    model = _XY()
    res = fit(model, make_loader(train, 32, shuffle=True, seed=0),
              make_loader(val, 64, shuffle=False), ClassificationTask(), cfg,
              val_violation=_scripted_violation(viol))
    scores = [h["val_score"] for h in res.history]
    assert [h["val_violation"] for h in res.history][1:] == viol[1:]
    # the unconstrained rule would keep a later epoch: the test is about the constrained one
    assert max(range(10), key=lambda e: (scores[e], -e)) > 4
    assert res.best_epoch == (2 if scores[2] > scores[4] else 4)
    out, tgt = predict(model, make_loader(val, 64, shuffle=False), ClassificationTask())
    assert ClassificationTask().metrics(out, tgt)["accuracy"] == pytest.approx(
        res.best_val["accuracy"])


def test_constrained_selection_falls_back_to_least_violation_and_waits_for_warmup():
    train, val = _data(64, 0), _data(32, 1)
    nan = float("nan")
    # no epoch within target: the least violating one is kept (epoch 6), whatever its score
    viol = [nan, nan, nan, nan, 0.9, 0.5, 0.1, 0.4, 0.4, 0.4, 0.4, 0.4]
    cfg = TrainConfig(epochs=12, lr=1e-9, patience=3)
    res = fit(_XY(), make_loader(train, 16, shuffle=True), make_loader(val, 32, shuffle=False),
              ClassificationTask(), cfg, val_violation=_scripted_violation(viol))
    assert res.best_epoch == 6
    # the score never moves (lr 1e-9): without the warm-up rule patience 3 would stop at epoch 3;
    # it counts from the first enforced epoch instead, and stops 3 stale epochs after epoch 6
    assert res.epochs_run == 10


def test_constrained_patience_waits_until_the_target_is_first_missed():
    train, val = _data(64, 0), _data(32, 1)
    # within target from the start (a plateau): patience starts at epoch 6, the first miss
    viol = [0.0] * 6 + [0.5] * 10
    cfg = TrainConfig(epochs=16, lr=1e-9, patience=3)
    res = fit(_XY(), make_loader(train, 16, shuffle=True), make_loader(val, 32, shuffle=False),
              ClassificationTask(), cfg, val_violation=_scripted_violation(viol))
    assert res.best_epoch == 0  # feasible epochs still beat the violating ones
    assert res.epochs_run == 9
