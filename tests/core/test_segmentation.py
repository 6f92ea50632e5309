"""Dice and IoU metrics by hand, the soft Dice loss's smoothing and gradients, Dice + CE, and
`SegmentationTask` training a decoder on rare small structures through the core."""

import pytest
import torch
from torch import nn

from gridtune.core.adapt import adapt
from gridtune.core.registry import make_strategy
from gridtune.core.segmentation import (
    SegmentationTask,
    cross_entropy,
    dice_ce_loss,
    dice_score,
    hard_masks,
    iou_score,
    soft_dice_loss,
)
from gridtune.core.trainer import Task, TrainConfig, evaluate
from gridtune.errors import GridtuneError
from tests.core.toy_models import TinyCNN


def test_dice_and_iou_by_hand():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2, :2] = 1  # 4 pixels
    pred = torch.zeros(1, 4, 4, dtype=torch.long)
    pred[0, :2, :3] = 1  # 6 pixels, 4 overlap
    assert dice_score(pred, target) == pytest.approx(2 * 4 / (6 + 4))
    assert iou_score(pred, target) == pytest.approx(4 / 6)
    assert dice_score(target, target) == 1.0 and iou_score(target, target) == 1.0
    assert dice_score(torch.zeros_like(target), target) == 0.0
    # nothing to find and nothing found: perfect
    assert dice_score(torch.zeros_like(target), torch.zeros_like(target)) == 1.0


def test_pooled_and_per_image_dice():
    target = torch.zeros(3, 4, 4, dtype=torch.long)
    target[0, 0, 0] = 1
    target[1, :2, :2] = 1
    pred = target.clone()
    pred[0] = 0  # misses the one-pixel structure of image 0
    assert dice_score(pred, target) == pytest.approx(2 * 4 / (4 + 5))
    # image 0 scores 0, image 1 scores 1, image 2 (both empty) is skipped
    assert dice_score(pred, target, per_image=True) == pytest.approx(0.5)


def test_multiclass_dice_averages_foreground_classes():
    target = torch.tensor([[[0, 1], [2, 2]]])
    pred = torch.tensor([[[1, 1], [2, 0]]])
    # class 1: 2*1/(2+1); class 2: 2*1/(1+2)
    assert dice_score(pred, target, classes=3) == pytest.approx(2 / 3)


def test_soft_dice_smoothing_and_gradients():
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    logits = torch.full((2, 1, 8, 8), -20.0, requires_grad=True)
    # empty mask, empty prediction: the smoothing term makes the loss ~0, not 0/0
    loss = soft_dice_loss(logits, target, smooth=1.0)
    assert 0 <= float(loss.detach()) < 1e-3
    target[0, 3, 3] = 1
    loss = soft_dice_loss(logits, target, smooth=1.0)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and float(logits.grad[0, 0, 3, 3]) < 0
    with pytest.raises(GridtuneError, match="smooth"):
        soft_dice_loss(logits, target, smooth=-1)


def test_soft_dice_of_confident_correct_prediction_is_zero():
    target = torch.zeros(1, 6, 6, dtype=torch.long)
    target[0, 1:3, 1:3] = 1
    logits = (target.float() * 40 - 20).unsqueeze(1)
    assert float(soft_dice_loss(logits, target, smooth=0.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_dice_loss(-logits, target, smooth=0.0)) == pytest.approx(1.0, abs=1e-6)
    # binary logits with or without the channel axis agree; two-class softmax works too
    assert float(soft_dice_loss(logits[:, 0], target)) == pytest.approx(float(soft_dice_loss(logits, target)))
    two = torch.cat([torch.zeros_like(logits), logits], dim=1)
    assert float(soft_dice_loss(two, target, smooth=0.0)) == pytest.approx(0.0, abs=1e-6)


def test_dice_ce_is_the_weighted_sum():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 5, generator=g)
    target = torch.randint(0, 3, (2, 5, 5), generator=g)
    expected = 0.5 * soft_dice_loss(logits, target) + 2.0 * cross_entropy(logits, target)
    assert float(dice_ce_loss(logits, target, dice_weight=0.5, ce_weight=2.0)) == pytest.approx(float(expected))


def test_hard_masks_and_shape_errors():
    logits = torch.tensor([[[[1.0, -1.0]]]])  # (1, 1, 1, 2)
    assert hard_masks(logits).tolist() == [[[1, 0]]]
    with pytest.raises(GridtuneError, match="do not match"):
        soft_dice_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5, 5))
    with pytest.raises(GridtuneError, match="loss"):
        SegmentationTask(loss="focal")


def _rare_spots(n: int, seed: int):
    """8x8 noisy images; about half hold one bright 2x2 spot (6 % of the pixels) to segment."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, 1, 8, 8, generator=g)
    y = torch.zeros(n, 8, 8, dtype=torch.long)
    for i in range(n):
        if torch.rand(1, generator=g) < 0.5:
            r, c = (int(v) for v in torch.randint(0, 7, (2,), generator=g))
            x[i, 0, r:r + 2, c:c + 2] += 1.5
            y[i, r:r + 2, c:c + 2] = 1
    return list(zip(x, y))


def test_segmentation_task_trains_a_decoder_through_the_core():
    task = SegmentationTask(loss="dice+ce")
    assert isinstance(task, Task)
    train = torch.utils.data.DataLoader(_rare_spots(128, 0), batch_size=32, shuffle=True)
    val = torch.utils.data.DataLoader(_rare_spots(64, 1), batch_size=64)
    strategy = make_strategy("decoder", decoder=lambda c: nn.Conv2d(c, 1, 1), feature_dim=1)
    model, result = adapt(TinyCNN(), strategy, train, val, task,
                          TrainConfig(epochs=30, lr=1e-2, patience=30, seed=0))
    metrics = evaluate(model, val, task)
    assert set(metrics) == {"loss", "dice", "iou", "dice_per_image"}
    assert metrics["dice"] > 0.6 and metrics["iou"] <= metrics["dice"]
