"""A generic, modality-agnostic training loop with early stopping.

`fit` trains any `nn.Module` on whatever batches a loader yields; a `Task` says how a model output
and a batch make a loss, a target and metrics. Nothing here knows about graphs, images or text.
Strategies (gridtune.core.strategies) plug in through three hooks:

- `param_groups`: optimizer parameter groups (discriminative learning rates; frozen parts left
  out or marked `requires_grad=False`).
- `extra_loss(model, batch, step) -> Tensor`: added to the task loss each step (domain
  adaptation, L2-SP, constraint formulations).
- `on_epoch_start(epoch, model)`: called after `model.train()` at the start of every epoch
  (gradual unfreezing; putting frozen modules back in eval mode so their normalisation
  statistics stay fixed).

Determinism: `fit` seeds torch with `config.seed` before building anything, so a loader that
shuffles with the global generator (or `make_loader` below) gives the same batches on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from gridtune.core.resume import FitResume, FitState
from gridtune.errors import SpecError, TrainingError

ExtraLoss = Callable[[nn.Module, Any, int], Tensor]
EpochHook = Callable[[int, nn.Module], None]
ValViolation = Callable[[nn.Module, Any], float]


LR_SCHEDULES = (None, "cosine")


@dataclass
class TrainConfig:
    """Optimisation settings shared by every strategy.

    Args:
        epochs: maximum number of passes over the training data.
        lr: base learning rate (AdamW).
        weight_decay: decoupled weight decay (AdamW).
        batch_size: used by callers that build loaders (`make_loader`).
        patience: stop after this many epochs without a better validation score.
        seed: seeds torch (weights of new layers, dropout, shuffling).
        grad_clip_norm: clip the global gradient norm to this value; `None` disables clipping.
        lr_schedule: `None` (constant, the default) or `cosine`: every group's learning rate
            follows a half cosine from its start value to 0 over `epochs` (Loshchilov and
            Hutter 2017, SGDR, without restarts), stepped once an epoch.
    """

    epochs: int = 200
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    patience: int = 20
    seed: int = 0
    grad_clip_norm: float | None = 5.0
    lr_schedule: str | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SpecError(f"TrainConfig.{name} must be a positive integer, got `{value}`")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SpecError(f"TrainConfig.lr must be a positive number, got `{self.lr}`")
        if self.weight_decay < 0:
            raise SpecError(f"TrainConfig.weight_decay must be >= 0, got `{self.weight_decay}`")
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise SpecError(f"TrainConfig.grad_clip_norm must be > 0 or None, got "
                            f"`{self.grad_clip_norm}`")
        if self.lr_schedule not in LR_SCHEDULES:
            raise SpecError(f"TrainConfig.lr_schedule must be one of "
                            f"{', '.join(repr(v) for v in LR_SCHEDULES)}, got `{self.lr_schedule}`")


@runtime_checkable
class Task(Protocol):
    """How outputs and batches become a loss, targets and metrics (modality-agnostic)."""

    name: str

    def loss(self, output: Tensor, batch: Any) -> Tensor: ...

    def target(self, batch: Any) -> Tensor: ...

    def metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, float]: ...

    def val_score(self, metrics: dict[str, float]) -> float: ...


@dataclass
class FitResult:
    """What `fit` returns.

    history: one dict per epoch: `epoch`, `train_loss`, `extra_loss`, `val_score` and the task's
        validation metrics prefixed `val_` (and `val_violation` under constrained selection).
    best_epoch: the epoch whose weights were restored (0-based).
    best_val: the validation metrics of that epoch (empty without a validation loader).
    wall_time_s: wall-clock time of the whole fit.
    epochs_run: epochs actually run (early stopping may cut them short).
    trainable_parameters: scalar parameters the optimizer updated (set by `fit`; strategies that
        merge their parameters afterwards, like LoRA, keep the count of what trained).
    auxiliary_parameters: of those, parameters outside the model (a domain discriminator); set by
        `gridtune.core.adapt.adapt` and not included in `trainable_parameters`.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val: dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0
    epochs_run: int = 0
    trainable_parameters: int = 0
    auxiliary_parameters: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trainable_parameters(model: nn.Module) -> int:
    """Number of scalar parameters with `requires_grad`."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with `n` torch intra-op threads (None: unchanged), restoring the setting after.

    Small models gain nothing from intra-op parallelism, and on a shared 2-core machine a second
    thread measured up to 40x slower per step (0.93 s against 0.023 s, case14, batch 64), so
    gridtune trains on one thread unless told otherwise.
    """
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_loader(data: Sequence[Any], batch_size: int, *, shuffle: bool, seed: int = 0
                ) -> torch.utils.data.DataLoader:
    """A seeded loader: PyG's for graph data (batches graphs), torch's for anything else.

    The one place that looks at the data type; strategies and `fit` never do.
    """
    gen = torch.Generator().manual_seed(seed)
    first = data[0] if len(data) else None
    try:
        from torch_geometric.data.data import BaseData
        is_graph = isinstance(first, BaseData)
    except ImportError:  # pragma: no cover - torch_geometric is a dependency
        is_graph = False
    if is_graph:
        from torch_geometric.loader import DataLoader as GraphLoader
        return GraphLoader(list(data), batch_size=batch_size, shuffle=shuffle, generator=gen)
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=gen)


@torch.no_grad()
def predict(model: nn.Module, loader: Any, task: Task) -> tuple[Tensor, Tensor]:
    """Outputs and targets over a whole loader, in eval mode, without gradients.

    Shapes:
        outputs: batches' outputs concatenated along dim 0; targets likewise.
    """
    was_training = model.training
    model.eval()
    outs: list[Tensor] = []
    tgts: list[Tensor] = []
    try:
        for batch in loader:
            out = model(batch)
            tgt = task.target(batch)
            if out.shape[0] != tgt.shape[0]:
                raise TrainingError(f"task `{task.name}`: model output has `{out.shape[0]}` rows "
                                    f"but the target has `{tgt.shape[0]}`")
            outs.append(out.detach())
            tgts.append(tgt.detach())
    finally:
        model.train(was_training)
    if not outs:
        raise TrainingError(f"task `{task.name}`: the loader yielded no batches")
    return torch.cat(outs), torch.cat(tgts)


def evaluate(model: nn.Module, loader: Any, task: Task) -> dict[str, float]:
    """The task's metrics over a loader."""
    return task.metrics(*predict(model, loader, task))


def fit(
    model: nn.Module,
    train_loader: Any,
    val_loader: Any | None,
    task: Task,
    config: TrainConfig,
    *,
    param_groups: list[dict[str, Any]] | None = None,
    extra_loss: ExtraLoss | None = None,
    on_epoch_start: EpochHook | None = None,
    score_penalty: Callable[[nn.Module, Any], float] | None = None,
    val_violation: ValViolation | None = None,
    progress: bool = False,
    resume: FitResume | None = None,
) -> FitResult:
    """Train `model` with AdamW and early stopping on `task.val_score` (higher is better).

    The best weights (by validation score) are restored at the end; without a validation loader
    the last weights are kept. A NaN or infinite loss raises `TrainingError` naming the epoch.

    Args:
        model: any module; `model(batch)` gives the output `task.loss` expects.
        train_loader, val_loader: iterables of batches (re-iterated each epoch).
        task: loss / target / metrics / score.
        config: optimisation settings.
        param_groups: optimizer parameter groups (each a dict with `params` and optionally `lr`,
            `weight_decay`); default: every parameter with `requires_grad`.
        extra_loss: `extra_loss(model, batch, step)` added to the task loss.
        on_epoch_start: `on_epoch_start(epoch, model)` after `model.train()` each epoch.
        score_penalty: `score_penalty(model, val_loader)` subtracted from the validation score
            when choosing the best epoch (e.g. a formulation's Lagrangian on the validation
            split, so that early stopping does not pick an epoch before constraints took hold).
        val_violation: constrained model selection. `val_violation(model, val_loader)` says how
            far the model is from meeting its constraints on held-out data: 0 (or less) when
            within target, > 0 by how much it misses, NaN while they are not enforced yet (a
            formulation's warm-up). The kept epoch is the best-scoring one among epochs within
            target; until there is one, the least violating one; enforced epochs beat warm-up
            ones. Patience counts from the first epoch that misses the target (after any
            warm-up): until then the constraint has not shaped training, and a fine-tuned model
            that starts within target sits on a plateau for its first epochs (monotonicity benchmark,
            seed 2: 15 flat epochs, the run stopped before learning started). Once an epoch met the
            target, only better epochs within target reset it. Selecting on the score alone kept epochs
            from before the multipliers had grown (monotonicity benchmark: best epoch 13-22 of
            constrained runs; held-out violations 3x the target). This is the "best feasible iterate" rule
            of constrained learning (Cotter et al. 2019, "Two-player games for efficient
            non-convex constrained optimization", section 5; Chamon and Ribeiro 2020).
        progress: show a tqdm bar over epochs.
        resume: write the training state to `resume.path` after every epoch and, when a state
            written under the same `resume.key` is there, continue after its epoch
            (`gridtune.core.resume`); the result equals an uninterrupted fit's. Only for fits
            without hooks: a hook's own state (a Lagrange multiplier, a teacher) is not saved.
    """
    if resume is not None and any(h is not None for h in (extra_loss, on_epoch_start, score_penalty,
                                                          val_violation)):
        raise TrainingError(f"task `{task.name}`: a resumable fit takes no hooks (their state "
                            "is not saved); pass resume=None")
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    if param_groups is None:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise TrainingError(f"task `{task.name}`: the model has no trainable parameters")
        param_groups = [{"params": params}]
    # Parameters frozen now but unfrozen later (gradual) may be in the groups: AdamW skips any
    # parameter whose grad is None, weight decay included, so they stay exactly unchanged.
    optimizer = torch.optim.AdamW(param_groups, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
                 if config.lr_schedule == "cosine" else None)
    result = FitResult()
    all_params = [p for g in optimizer.param_groups for p in g["params"]]
    trained: dict[int, int] = {}  # position -> numel of every parameter trainable in some epoch
    # epochs are ranked by a tuple key; unconstrained: (score, tie_break), constrained:
    # (tier, ...) with tier 2 = within target, 1 = violating, 0 = not enforced yet
    best_key: tuple[float, ...] = (-math.inf, -math.inf)
    best_state: dict[str, Tensor] | None = None
    since_best = 0
    binding = val_violation is None  # constrained: has an epoch missed the target yet?
    step = 0
    first_epoch, spent_s = 0, 0.0
    shuffling = _loader_generator(train_loader)
    state = FitState.load(resume) if resume is not None else None
    if state is not None:
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        if scheduler is not None and state.scheduler is not None:
            scheduler.load_state_dict(state.scheduler)
        best_state, best_key, since_best = state.best_state, tuple(state.best_key), state.since_best
        binding, step, trained, spent_s = state.binding, state.step, dict(state.trained), state.wall_time_s
        result.history, result.best_epoch = list(state.history), state.best_epoch
        result.best_val, result.epochs_run = dict(state.best_val), state.epoch + 1
        torch.set_rng_state(state.torch_rng)
        if state.loader_rng is not None and shuffling is not None:
            shuffling.set_state(state.loader_rng)
        first_epoch = config.epochs if state.stopped else state.epoch + 1
        print(f"gridtune: resuming training after epoch {state.epoch + 1} of {config.epochs} "
              f"({resume.path})", file=sys.stderr)
    epochs: Any = range(first_epoch, config.epochs)
    if progress:
        from tqdm import tqdm
        epochs = tqdm(epochs, desc=f"fit {task.name}", unit="epoch")
    for epoch in epochs:
        model.train()
        if on_epoch_start is not None:
            on_epoch_start(epoch, model)
        trained.update({i: p.numel() for i, p in enumerate(all_params) if p.requires_grad})
        total = extra_total = 0.0
        n_batches = 0
        for batch in train_loader:
            optimizer.zero_grad(set_to_none=True)
            loss = task.loss(model(batch), batch)
            extra = extra_loss(model, batch, step) if extra_loss is not None else None
            full = loss if extra is None else loss + extra
            if not torch.isfinite(full):
                raise TrainingError(f"task `{task.name}`: loss became `{full.item()}` at epoch "
                                    f"{epoch}, step {step}; lower the learning rate "
                                    f"(`{config.lr}`) or check the data")
            full.backward()
            if config.grad_clip_norm is not None:
                nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                         config.grad_clip_norm)
            optimizer.step()
            total += float(loss.detach())
            extra_total += float(extra.detach()) if extra is not None else 0.0
            n_batches += 1
            step += 1
        if n_batches == 0:
            raise TrainingError(f"task `{task.name}`: the training loader yielded no batches")
        if scheduler is not None:
            scheduler.step()
        row: dict[str, float] = {"epoch": epoch, "train_loss": total / n_batches,
                                 "extra_loss": extra_total / n_batches}
        result.epochs_run = epoch + 1
        if val_loader is not None:
            val = evaluate(model, val_loader, task)
            score = float(task.val_score(val))
            if score_penalty is not None:
                penalty = float(score_penalty(model, val_loader))
                row["val_penalty"] = penalty
                score -= penalty
            row.update({f"val_{k}": float(v) for k, v in val.items()})
            row["val_score"] = score
            # NaN scores (e.g. AUROC of a one-class split) never count as an improvement. A
            # rank score (AUROC) on a small validation split ties often: ties go to the lower
            # validation loss when the task reports one.
            tie_break = -float(val.get("log_loss", val.get("loss", math.nan)))
            key: tuple[float, ...] = (score, tie_break)
            enforced = True
            if val_violation is not None:
                viol = float(val_violation(model, val_loader))
                row["val_violation"] = viol
                enforced = not math.isnan(viol)
                binding = binding or (enforced and viol > 0)
                key = ((0.0, score, tie_break) if not enforced else
                       (2.0, score, tie_break) if viol <= 0 else (1.0, -viol, score))
            if key > best_key:
                best_key, result.best_epoch, result.best_val = key, epoch, dict(val)
                best_state = copy.deepcopy(model.state_dict())
                since_best = 0
            elif enforced and binding:
                since_best += 1
            else:  # patience starts once the constraints are enforced and have missed the target
                since_best = 0
        result.history.append(row)
        if progress:
            epochs.set_postfix(loss=f"{row['train_loss']:.4f}", val=f"{row.get('val_score', 0):.4f}")
        stop = val_loader is not None and since_best >= config.patience
        if resume is not None:
            FitState(key=resume.key, epoch=epoch, stopped=stop, model=model.state_dict(),
                     optimizer=optimizer.state_dict(),
                     scheduler=scheduler.state_dict() if scheduler is not None else None,
                     best_state=best_state, best_key=best_key, best_epoch=result.best_epoch,
                     best_val=result.best_val, history=result.history, since_best=since_best,
                     binding=binding, step=step, trained=trained, torch_rng=torch.get_rng_state(),
                     loader_rng=shuffling.get_state() if shuffling is not None else None,
                     wall_time_s=spent_s + time.perf_counter() - start).save(resume.path)
        if stop:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        result.best_epoch = result.epochs_run - 1
    model.train(False)
    result.trainable_parameters = sum(trained.values())
    result.wall_time_s = spent_s + time.perf_counter() - start
    return result


def _loader_generator(loader: Any) -> torch.Generator | None:
    """The generator a loader shuffles with (`make_loader` sets one), if any."""
    gen = getattr(loader, "generator", None)
    return gen if isinstance(gen, torch.Generator) else None
