"""`replay`: the source term by hand, the settings it refuses, and rehearsal keeping a source task
that plain fine-tuning on a shifted target forgets (any model: a two-layer MLP on points)."""

import pytest
import torch

from gridtune.core.adapt import adapt
from gridtune.core.registry import make_strategy
from gridtune.core.tasks import ClassificationTask
from gridtune.core.trainer import TrainConfig, evaluate, make_loader
from gridtune.errors import GridtuneError
from tests.core.toy_models import TinyMLP


def blobs(n, seed, shift=0.0):
    """Two classes split by the line x0 + x1 = shift (the target moves the boundary)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g) * 1.5
    y = (x.sum(1) > shift).long()
    return list(zip(x, y, strict=True))


def test_extra_loss_is_the_weighted_task_loss_on_the_next_source_batch():
    task = ClassificationTask()
    source = make_loader(blobs(8, 0), 4, shuffle=False)
    model = TinyMLP(dims=(8,))
    strategy = make_strategy("replay", source=source, loss=task.loss, weight=0.5)
    model = strategy.prepare(model)
    batches = list(source)
    for k in range(3):  # cycles: batch 0, 1, then 0 again
        b = batches[k % 2]
        expected = 0.5 * task.loss(model(b), b).detach()
        assert float(strategy.extra_loss(model, None, k).detach()) == pytest.approx(float(expected))
    assert len(strategy.history) == 3


def test_refuses_what_it_cannot_run():
    with pytest.raises(GridtuneError, match="needs the source's labelled data and the task's loss"):
        make_strategy("replay").prepare(TinyMLP(dims=(8,)))
    with pytest.raises(GridtuneError, match="weight must be >= 0, got `-1`"):
        make_strategy("replay", weight=-1)
    with pytest.raises(GridtuneError, match="the source data are empty"):
        s = make_strategy("replay", source=[], loss=ClassificationTask().loss)
        s.extra_loss(s.prepare(TinyMLP(dims=(8,))), None, 0)


def test_rehearsal_keeps_the_source_task_that_fine_tuning_forgets():
    """Pre-train on the source boundary, fine-tune on 16 labels of a shifted one: replaying the
    source keeps source accuracy far above plain fine-tuning's, at equal target steps."""
    task = ClassificationTask()
    src_train, src_test = blobs(400, 1), make_loader(blobs(400, 2), 400, shuffle=False)
    torch.manual_seed(0)
    base = TinyMLP(dims=(16,))
    base, _ = adapt(base, make_strategy("full"), make_loader(src_train, 32, shuffle=True), None, task,
                    TrainConfig(epochs=30, lr=1e-2))
    state = {k: v.clone() for k, v in base.state_dict().items()}
    target = make_loader(blobs(16, 3, shift=3.0), 8, shuffle=True)
    scores = {}
    for name, opts in (("full", {}), ("replay", {"source": make_loader(src_train, 32, shuffle=True),
                                                  "loss": task.loss})):
        model = TinyMLP(dims=(16,))
        model.load_state_dict(state)
        torch.manual_seed(0)
        model, _ = adapt(model, make_strategy(name, **opts), target, None, task,
                         TrainConfig(epochs=100, lr=1e-2))
        scores[name] = evaluate(model, src_test, task)["accuracy"]
    assert scores["replay"] > scores["full"] + 0.1, scores
