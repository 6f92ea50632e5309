"""Fine-tune a grid checkpoint on target data with a label budget, beside a scratch baseline.

    result = finetune("ckpt/case30", "datasets/case118.toml", labels=100, strategy="adapter",
                      seed=0, unlabeled=500, out_dir=Path("runs/c30-c118"))

Protocol (the same for the strategy and for scratch, so the comparison is fair):
- the target data are split 70 / 15 / 15 by `split_indices(statuses, seed)`; the test split is
  never seen during fine-tuning;
- `labels` graphs with a target for the task are drawn (seeded, stratified by class for
  feasibility) from the training split; they are ALL the labels used: a fifth (at least 2) of
  them is held back for early stopping, the rest trains;
- scratch: the same architecture with fresh weights and normalisation statistics fitted on the
  same training labels (what `pretrain` would do on the target alone); fine-tuning keeps the
  checkpoint's statistics (they travel with the encoder);
- batches hold at most a quarter of the training labels (`label_batch_size`), so every epoch
  has at least four optimizer steps whatever the budget;
- feasibility logits are re-calibrated (Platt) on the held-back labels after training;
- metrics are the task's metrics on the target test split.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gridtune.errors import DataError, GridtuneError
from gridtune.finetune.trainer import TrainConfig

DOMAIN_STRATEGIES = ("dann", "coral", "mmd", "self-training")
RESULT = "finetune.json"


NORMALIZER_CHOICES = ("source", "target")


def sample_labels(graphs: list[Any], pool: np.ndarray, labels: int, task: str, seed: int
                  ) -> tuple[list[int], list[int]]:
    """Draw `labels` indices from `pool` (graphs with a target for `task`) and split them into
    (train, val); stratified by class for feasibility so both classes appear when they can."""
    from gridtune.nn.pretrain import task_graphs

    usable = [int(i) for i in pool if task_graphs([graphs[int(i)]], task)]
    if labels < 4:
        raise GridtuneError(f"--labels must be at least 4 (train + early-stopping split), got `{labels}`")
    if labels > len(usable):
        raise DataError(f"--labels `{labels}` exceeds the `{len(usable)}` labelled target graphs in "
                        f"the training split; use at most {len(usable)} or build more samples")
    rng = np.random.default_rng(seed)
    if task == "feasibility":
        cls = np.array([int(graphs[i].y_infeasible.item()) for i in usable])
    else:
        cls = np.zeros(len(usable), dtype=int)
    n_val = max(2, int(round(0.2 * labels)))
    train: list[int] = []
    val: list[int] = []
    for c in np.unique(cls):
        idx = np.array(usable)[cls == c]
        idx = idx[rng.permutation(idx.size)]
        take = int(round(labels * idx.size / len(usable)))
        take = max(take, min(2, idx.size))  # keep a rare class present in both parts
        chosen = idx[:take]
        k = int(round(n_val * idx.size / len(usable)))
        k = min(max(k, 1 if take >= 2 else 0), take - 1) if take > 1 else 0
        val += chosen[:k].tolist()
        train += chosen[k:].tolist()
    # rounding may over- or under-shoot the budget by a graph or two: trim / top up the train part
    extra = [i for i in usable if i not in set(train) | set(val)]
    extra = [extra[j] for j in rng.permutation(len(extra))]
    while len(train) + len(val) > labels:
        train.pop()
    while len(train) + len(val) < labels and extra:
        train.append(extra.pop())
    return sorted(train), sorted(val)


def label_batch_size(n_train: int, batch_size: int) -> int:
    """Batch size for `n_train` labelled graphs: at most `batch_size`, and small enough for at
    least four optimizer steps per epoch. With 20 labels and batches of 64 an epoch is one step,
    so `patience` epochs would be a few steps and early stopping would end training before it
    starts (seen on case30: best epoch 0 at every small budget)."""
    return max(1, min(batch_size, math.ceil(n_train / 4)))


OPF_POOL_DRAW_FACTOR = 4  # at most this many unlabelled draws per scenario kept for an OPF head


def unlabeled_pool(data: Any, spare: list[Any], n: int, seed: int, task: str) -> list[Any]:
    """`n` unlabelled target graphs: fresh draws of the dataset's recipe (`GridDataset.unlabeled`)
    or, for a plain list of graphs, the unused training graphs.

    For an `opf` head only scenarios the DC network can carry are kept (DC loadability
    `lam >= 1`, `gridtune.nn.loadability.dc_load_scale`; no OPF solve). The head is trained and
    scored on scenarios that have an OPF solution; a raw case118 draw is 57% infeasible, and its
    predictions there are extrapolations: a power-balance term fed with them saw violations of
    1-7 p.u. a batch, its multiplier climbed to 524 and the OPF MAEs grew 0.8-5.5x (seed 0, 200
    labels, session 4). Draws continue up to `OPF_POOL_DRAW_FACTOR x n`; fewer than `n` may
    come back.
    """
    if task != "opf":
        return data.unlabeled(n, seed) if hasattr(data, "unlabeled") else spare[:n]
    from gridtune.nn.loadability import dc_load_scale

    if not hasattr(data, "unlabeled"):
        return [g for g in spare if dc_load_scale(g) >= 1.0][:n]
    drawn = n
    while True:
        kept = [g for g in data.unlabeled(drawn, seed) if dc_load_scale(g) >= 1.0]
        if len(kept) >= n or drawn >= OPF_POOL_DRAW_FACTOR * n:
            return kept[:n]
        drawn = min(OPF_POOL_DRAW_FACTOR * n, int(drawn * n / max(len(kept), 1) * 1.1) + 1)


def _strategy_options(name: str, model: Any, unlabeled_loader: Any) -> dict[str, Any]:
    if name in DOMAIN_STRATEGIES:
        if unlabeled_loader is None:
            raise GridtuneError(f"strategy `{name}` needs unlabelled target data: pass `--unlabeled N`")
        if name == "self-training" and model.task != "feasibility":
            return {"unlabeled": unlabeled_loader, "kind": "regression"}
        return {"unlabeled": unlabeled_loader}
    if name == "head-swap":
        from gridtune.nn.heads import make_head
        return {"head": lambda d: make_head(model.task, d, model.config.head_hidden)}
    if name == "decoder":
        raise GridtuneError("strategy `decoder` needs a decoder module; use it from Python "
                            "(gridtune.finetune.strategies.decoder) rather than through `finetune`")
    return {}


def _train_one(model: Any, strategy_name: str, options: dict[str, Any], train: list[Any],
               val: list[Any], config: TrainConfig, extra: list[Any]) -> tuple[Any, Any, Any]:
    from gridtune.finetune.adapt import adapt
    from gridtune.finetune.registry import make_strategy
    from gridtune.finetune.trainer import make_loader
    from gridtune.nn.tasks import make_task, task_for_model

    task_opts: dict[str, Any] = {}
    if model.task == "feasibility":
        y = np.array([float(g.y_infeasible) for g in train])
        n_pos = int(y.sum())
        task_opts["pos_weight"] = float((y.size - n_pos) / n_pos) if 0 < n_pos < y.size else 1.0
        # training sees raw logits; the checkpoint's Platt scaling belongs to the source grid
        model.logit_scale.fill_(1.0)
        model.logit_bias.fill_(0.0)
    task = make_task("feasibility", **task_opts) if model.task == "feasibility" else task_for_model(model)
    strategy = make_strategy(strategy_name, **options)
    batch = label_batch_size(len(train), config.batch_size)
    model, result = adapt(model, strategy, make_loader(train, batch, shuffle=True, seed=config.seed),
                          make_loader(val, 256, shuffle=False), task, config, extra_losses=extra)
    return model, result, strategy


def _reliability_and_decisions(model: Any, val: list[Any], test: list[Any], out_dir: Path | None
                               ) -> dict[str, Any]:
    """Feasibility only, on raw logits: temperature scaling fitted on the held-back labels with
    ECE before / after on the test split, and the decision curve on the test split; then the
    model gets its Platt calibration (what the checkpoint carries). Figures go to `out_dir`."""
    from gridtune.finetune.calibration import calibrate, plot_reliability, probabilities
    from gridtune.finetune.decision import net_benefit, plot_decision_curve, useful_thresholds
    from gridtune.finetune.trainer import make_loader, predict
    from gridtune.nn.pretrain import platt_calibrate
    from gridtune.nn.tasks import make_task

    task = make_task("feasibility")
    val_logits, val_y = predict(model, make_loader(val, 256, shuffle=False), task)
    test_logits, test_y = predict(model, make_loader(test, 256, shuffle=False), task)
    report: dict[str, Any] = {}
    if len(set(val_y.tolist())) == 2:
        report["calibration"] = calibrate(val_logits, val_y, test_logits, test_y)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            plot_reliability(report["calibration"], out_dir / "reliability.png")
        probs = probabilities(test_logits, report["calibration"]["temperature"])
    else:
        report["calibration"] = {"skipped": "the held-back labels hold one class only"}
        probs = probabilities(test_logits)
    curve = net_benefit(probs, test_y.numpy())
    report["decision_curve"] = {**curve, "useful_thresholds": useful_thresholds(curve)}
    if out_dir is not None:
        plot_decision_curve(curve, out_dir / "decision_curve.png",
                            title="acting on predicted infeasibility vs always / never running OPF")
    platt_calibrate(model, val)
    return report


def _test_metrics(model: Any, test: list[Any]) -> dict[str, float]:
    from gridtune.finetune.trainer import make_loader, predict
    from gridtune.nn.tasks import make_task

    task = make_task(model.task)
    return task.metrics(*predict(model, make_loader(test, 256, shuffle=False), task))


def finetune(checkpoint: str | Path, data: Any, *, labels: int, strategy: str, seed: int = 0,
             unlabeled: int = 0, out_dir: str | Path, constraints: str | Path | None = None,
             formulation: str = "lagrangian", with_scratch: bool = True,
             train_config: TrainConfig | None = None, threads: int | None = 1,
             save: bool = True, pre_adapt_epochs: int = 0,
             normalizer: str = "source") -> dict[str, Any]:
    """Fine-tune `checkpoint` on `labels` target labels with `strategy`; see the module docstring.

    Args:
        checkpoint: a checkpoint directory (gridtune.nn.checkpoint).
        data: target data: recipe path, dataset directory, case name, `GridDataset` or graphs.
        labels: number of labelled target graphs used (training + early stopping).
        strategy: a registered strategy name (`gridtune finetune --list-strategies`).
        seed: seeds the split, the label draw, new weights and shuffling.
        unlabeled: unlabelled target scenarios for domain adaptation (`GridDataset.unlabeled`
            draws fresh ones; for a plain list of graphs, unused training graphs stand in; for an
            `opf` head only DC-feasible ones, see `unlabeled_pool`). With
            `constraints`, the constraint term is evaluated on four fifths of them instead of the
            labelled batches, and checkpoints are selected on the violations of the other fifth.
        out_dir: receives the checkpoint, `finetune.json` and `history.json`.
        constraints: a constraint spec (TOML) added as a training term; violations on the test
            split are reported.
        formulation: constraint formulation (`penalty`, `lagrangian`, `augmented-lagrangian`).
        with_scratch: also train the scratch baseline at the same labels and seed (ignored when
            `strategy` is `scratch`: that run is the baseline).
        train_config: optimisation settings (default: `TrainConfig(seed=seed)`).
        threads: torch threads while training (default 1; see `gridtune.nn.pretrain.pretrain`).
        save: write the fine-tuned checkpoint.
        pre_adapt_epochs: two-stage adaptation: first this many epochs of masked-feature
            reconstruction on the unlabelled target scenarios (`gridtune.finetune.ssl`), then the
            strategy. Needs `unlabeled > 0`. The scratch baseline is not pre-adapted.
        normalizer: input statistics of the adapted model: `source` keeps the checkpoint's (fitted
            on the source grid); `target` refits them on the target's labelled training graphs
            plus the unlabelled draw, so that standardised inputs have the distribution the
            encoder was trained on (the input-statistics analogue of AdaBN; Li et al. 2017,
            "Revisiting Batch Normalization For Practical Domain Adaptation"). Weights are kept.

    Returns: the dict written to `out_dir/finetune.json`: `metrics` (test split),
        `trainable_params`, `wall_time_s`, `scratch` (same fields), `transfer_gain`, settings.
    """
    from gridtune.nn.pretrain import torch_threads

    with torch_threads(threads):
        return _finetune(checkpoint, data, labels=labels, strategy=strategy, seed=seed,
                         unlabeled=unlabeled, out_dir=Path(out_dir), constraints=constraints,
                         formulation=formulation, with_scratch=with_scratch,
                         train_config=train_config, save=save,
                         pre_adapt_epochs=pre_adapt_epochs, normalizer=normalizer)


def _finetune(checkpoint: str | Path, data: Any, *, labels: int, strategy: str, seed: int,
              unlabeled: int, out_dir: Path, constraints: str | Path | None, formulation: str,
              with_scratch: bool, train_config: TrainConfig | None, save: bool,
              pre_adapt_epochs: int = 0, normalizer: str = "source") -> dict[str, Any]:
    from gridtune.finetune.registry import strategy_class
    from gridtune.finetune.trainer import make_loader
    from gridtune.nn.checkpoint import load_checkpoint
    from gridtune.nn.model import build_model
    from gridtune.nn.normalizer import Normalizer
    from gridtune.nn.pretrain import check_schema, resolve_data, split_indices, task_graphs

    strategy_class(strategy)  # an unknown name fails before any data is read
    if unlabeled < 0:
        raise GridtuneError(f"--unlabeled must be >= 0, got `{unlabeled}`")
    if normalizer not in NORMALIZER_CHOICES:
        raise GridtuneError(f"unknown normalizer `{normalizer}`; valid: {', '.join(NORMALIZER_CHOICES)}")
    if pre_adapt_epochs < 0 or (pre_adapt_epochs > 0 and unlabeled == 0):
        raise GridtuneError(f"--pre-adapt `{pre_adapt_epochs}` needs a non-negative number of "
                            "epochs and unlabelled target data (`--unlabeled N`)")
    start = time.perf_counter()
    model, meta = load_checkpoint(checkpoint)
    task = model.task
    if isinstance(data, (str, Path)):
        from gridtune.grids.dataset import open_dataset
        data = open_dataset(data)  # opened once: labels and unlabelled draws share it
    source_data = data
    view = resolve_data(data)
    check_schema(view, meta["schema_version"])
    config = train_config if train_config is not None else TrainConfig(seed=seed)
    config = dataclasses.replace(config, seed=seed)
    tr_idx, _, te_idx = split_indices(view.statuses, seed)
    train_i, val_i = sample_labels(view.graphs, tr_idx, labels, task, seed)
    train = [view.graphs[i] for i in train_i]
    val = [view.graphs[i] for i in val_i]
    test = task_graphs([view.graphs[i] for i in te_idx], task)
    if not test:
        raise DataError(f"data `{view.name}` has no test graphs with a `{task}` target")

    unlabeled_loader = None
    pool: list[Any] = []
    if unlabeled > 0:
        used = set(train_i) | set(val_i)
        spare = [view.graphs[int(i)] for i in tr_idx if int(i) not in used]
        pool = unlabeled_pool(source_data, spare, unlabeled, seed, task)
        if len(pool) < 2:
            raise DataError(f"only `{len(pool)}` unlabelled target graphs available; need at least 2")
        unlabeled_loader = make_loader(pool, min(config.batch_size, len(pool)), shuffle=True, seed=seed)

    def constraint_term() -> list[Any]:
        if constraints is None:
            return []
        from gridtune.constraints.api import training_term
        term = training_term(constraints, task, formulation)
        if pool:
            # constraints need no labels: the unlabelled draw feeds the constraint term (4/5)
            # and constrained checkpoint selection (1/5), so satisfaction is learnt and checked
            # beyond the few labelled graphs
            k = max(1, len(pool) // 5)
            term.use_data(make_loader(pool[k:], min(config.batch_size, len(pool) - k),
                                      shuffle=True, seed=seed),
                          make_loader(pool[:k], 256, shuffle=False))
        return [term]

    if normalizer == "target" and strategy != "scratch":
        model.normalizer = Normalizer().fit(train + list(pool))
    extra = constraint_term()
    options = _strategy_options(strategy, model, unlabeled_loader)
    pre_adapt_report = None
    if pre_adapt_epochs > 0:
        from gridtune.finetune.ssl import pre_adapt
        pre = pre_adapt(model, unlabeled_loader, epochs=pre_adapt_epochs, lr=config.lr, seed=seed)
        pre_adapt_report = {"epochs": pre_adapt_epochs, "loss": pre.history,
                            "wall_time_s": pre.wall_time_s}
    torch.manual_seed(seed)
    if strategy == "scratch":
        # the same baseline as `with_scratch`: target-fitted statistics, nothing from the source
        model = build_model(model.config, task, Normalizer().fit(train))
    model, fit_result, strat = _train_one(model, strategy, options, train, val, config, extra)
    decisions = (_reliability_and_decisions(model, val, test, out_dir if save else None)
                 if task == "feasibility" else {})
    result: dict[str, Any] = {
        "normalizer": normalizer, "checkpoint": str(checkpoint), "source": meta.get("data"), "target": view.name,
        "target_hash": view.content_hash, "task": task, "strategy": strategy,
        "strategy_config": strat.config(), "labels": labels, "n_train": len(train),
        "n_val": len(val), "n_test": len(test), "unlabeled": unlabeled, "unlabeled_used": len(pool), "seed": seed,
        "pre_adapt": pre_adapt_report,
        "train": dataclasses.asdict(config),
        "metrics": _test_metrics(model, test),
        "trainable_params": fit_result.trainable_params,
        "auxiliary_params": fit_result.auxiliary_params,
        "epochs_run": fit_result.epochs_run, "best_epoch": fit_result.best_epoch,
        "best_val": fit_result.best_val, "train_wall_time_s": fit_result.wall_time_s,
        **decisions,
    }
    if constraints is not None:
        from gridtune.constraints.api import constraint_report
        result["constraints"] = {
            "spec": str(constraints), "formulation": extra[0].summary(),
            "test": constraint_report(model, make_loader(test, 256, shuffle=False), constraints, task)}
        extra[0].write_history(out_dir)
    if with_scratch and strategy != "scratch":
        torch.manual_seed(seed)
        fresh = build_model(model.config, task, Normalizer().fit(train))
        fresh, scratch_fit, _ = _train_one(fresh, "scratch", {}, train, val, config, constraint_term())
        if task == "feasibility":
            from gridtune.nn.pretrain import platt_calibrate
            platt_calibrate(fresh, val)
        result["scratch"] = {"metrics": _test_metrics(fresh, test),
                             "trainable_params": scratch_fit.trainable_params,
                             "epochs_run": scratch_fit.epochs_run,
                             "train_wall_time_s": scratch_fit.wall_time_s}
        key = primary_metric(task)
        ours, base = result["metrics"].get(key), result["scratch"]["metrics"].get(key)
        sign = 1.0 if key == "auroc" else -1.0
        result["transfer_gain"] = {"metric": key, "value": sign * (ours - base)
                                   if ours is not None and base is not None else None,
                                   "higher_is_better_metric": key == "auroc"}
    result["wall_time_s"] = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    if save:
        from gridtune.nn.checkpoint import save_checkpoint
        save_checkpoint(model, out_dir, {"data_hash": view.content_hash, "data": view.name,
                                         "finetune": {"strategy": strategy,
                                                      "options": strat.config(),
                                                      "from": str(checkpoint)},
                                         "metrics": result["metrics"]})
    from gridtune.nn.checkpoint import _jsonable
    (out_dir / RESULT).write_text(json.dumps(_jsonable(result), indent=2) + "\n")
    (out_dir / "history.json").write_text(json.dumps(_jsonable(fit_result.history), indent=1) + "\n")
    return result


def primary_metric(task: str) -> str:
    """The metric a verdict compares: AUROC for feasibility, standardised MSE for OPF, MAPE for cost."""
    return {"feasibility": "auroc", "opf": "std_mse", "cost": "mape_cost"}[task]


def load_finetuned(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Load a checkpoint written by `finetune`, rebuilding strategy structure (adapters) first.

    Plain checkpoints (every strategy but `adapter`, LoRA merged) load with
    `gridtune.nn.checkpoint.load_checkpoint` as well; this also reads adapter checkpoints.
    """
    from safetensors.torch import load_file

    from gridtune.errors import CheckpointError
    from gridtune.finetune.registry import make_strategy
    from gridtune.nn.checkpoint import WEIGHTS, _locate, model_config, read_config
    from gridtune.nn.model import build_model

    p = _locate(path)
    meta = read_config(p)
    ft = meta.get("finetune") or {}
    model = build_model(model_config(meta, str(p)), meta["task"])
    if ft.get("strategy") == "adapter":
        opts = {k: v for k, v in ft.get("options", {}).items()
                if k in ("bottleneck", "feature_dim", "dims")}
        model = make_strategy("adapter", **opts).prepare(model)
    try:
        model.load_state_dict(load_file(str(p / WEIGHTS)), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint `{p}`: weights do not fit its config: "
                              f"{str(exc).splitlines()[0]}") from None
    model.eval()
    return model, meta
