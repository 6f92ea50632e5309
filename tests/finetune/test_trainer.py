"""The generic training loop: learns a known rule, early-stops, restores the best weights."""

import pytest
import torch
from torch import nn

from gridtune.errors import SpecError, TrainingError
from gridtune.finetune.tasks import ClassificationTask
from gridtune.finetune.trainer import TrainConfig, fit, make_loader, predict


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
