"""A fit interrupted after any epoch and run again continues there and ends exactly where an
uninterrupted fit ends: weights, history, best epoch (dropout, shuffling and a cosine schedule
make every piece of saved state matter)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gridtune.core.resume import FitResume, FitState
from gridtune.core.tasks import ClassificationTask
from gridtune.core.trainer import TrainConfig, fit, make_loader
from gridtune.errors import TrainingError

CONFIG = TrainConfig(epochs=8, lr=1e-2, batch_size=16, patience=8, lr_schedule="cosine", seed=3)


def _data(n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return list(zip(x, (x[:, 0] - x[:, 2] > 0).long(), strict=True))


class _Net(nn.Module):
    """Dropout draws from torch's generator; `stop_at` interrupts the forward pass that many
    training batches in, as a kill would."""

    def __init__(self, stop_at: int | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
        self.stop_at, self.calls = stop_at, 0

    def forward(self, batch):
        if self.training:
            self.calls += 1
            if self.stop_at is not None and self.calls == self.stop_at:
                raise KeyboardInterrupt
        return self.net(batch[0])


def _fit(model: nn.Module, resume: FitResume | None, config: TrainConfig = CONFIG):
    return fit(model, make_loader(_data(96, 0), 16, shuffle=True, seed=3),
               make_loader(_data(48, 1), 48, shuffle=False), ClassificationTask(), config,
               resume=resume)


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(),
                                                 strict=True))


@pytest.mark.parametrize("stop_at", [7, 20, 44])  # 6 batches an epoch: in epochs 2, 4 and 8
def test_an_interrupted_fit_resumes_to_the_uninterrupted_result(tmp_path, stop_at, capsys):
    whole = _Net()
    expected = _fit(whole, None)
    resume = FitResume(tmp_path / "state.pt", "run-a")
    with pytest.raises(KeyboardInterrupt):
        _fit(_Net(stop_at), resume)
    done = FitState.load(resume).epoch + 1
    assert done == (stop_at - 1) // 6
    again = _Net()
    got = _fit(again, resume)
    assert f"resuming training after epoch {done} of 8" in capsys.readouterr().err
    assert _same(again, whole)
    drop = ("wall_time_s",)
    assert ({k: v for k, v in got.to_dict().items() if k not in drop}
            == {k: v for k, v in expected.to_dict().items() if k not in drop})


def test_a_finished_or_early_stopped_state_trains_no_further(tmp_path):
    config = TrainConfig(epochs=40, lr=1e-2, batch_size=16, patience=2, seed=3)
    resume = FitResume(tmp_path / "state.pt", "run-a")
    first = _Net()
    result = _fit(first, resume, config)
    assert result.epochs_run < 40 and FitState.load(resume).stopped
    again = _Net(stop_at=1)  # any training step would interrupt it
    assert _fit(again, resume, config).epochs_run == result.epochs_run
    assert _same(again, first)


def test_a_foreign_or_damaged_state_is_ignored_with_a_line(tmp_path, capsys):
    resume = FitResume(tmp_path / "state.pt", "run-a")
    with pytest.raises(KeyboardInterrupt):
        _fit(_Net(stop_at=20), resume)
    other = _Net()
    _fit(other, FitResume(resume.path, "run-b"))
    assert "belongs to another run" in capsys.readouterr().err
    whole = _Net()
    _fit(whole, None)
    assert _same(other, whole)  # trained from epoch 0
    resume.path.write_bytes(resume.path.read_bytes()[:100])
    assert FitState.load(resume) is None
    assert "cannot be read" in capsys.readouterr().err


def test_a_resumable_fit_refuses_hooks(tmp_path):
    with pytest.raises(TrainingError, match="a resumable fit takes no hooks"):
        fit(_Net(), make_loader(_data(32, 0), 16, shuffle=True), None, ClassificationTask(), CONFIG,
            extra_loss=lambda m, b, s: torch.zeros(()), resume=FitResume(tmp_path / "s.pt", "k"))
