"""Transfer: fine-tune a grid checkpoint on target data with a label budget, beside scratch.

    result = finetune("runs/case30", "case118", "runs/c30-c118", labels=100, strategy="adapter")

Protocol (the same for the strategy and for scratch, so the comparison is fair):
- the target data are split by `gridtune.grids.split.split_indices(statuses, seed, split)`; the
  test split is never seen during fine-tuning;
- `labels` graphs with a target for the task are drawn (seeded, stratified by class for
  feasibility) from the training split; they are ALL the labels used: a fifth (at least 2) of
  them is held back for early stopping, the rest trains;
- scratch: the same architecture with fresh weights and normalisation statistics fitted on the
  same training labels (what `pretrain` would do on the target alone); fine-tuning keeps the
  checkpoint's statistics (they travel with the encoder) unless `normalizer="target"`;
- batches hold at most a quarter of the training labels (`label_batch_size`), so every epoch
  has at least four optimizer steps whatever the budget;
- feasibility logits are re-calibrated (Platt) on the held-back labels after training;
- metrics are the task's metrics on the target test split; the result records the AC-OPF
  solver time the labels cost (`label_solver_time_s`) when the dataset recorded it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gridtune.core.adapt import adapt
from gridtune.core.calibration import calibrate, plot_reliability, probabilities
from gridtune.core.decision import net_benefit, plot_decision_curve, useful_thresholds
from gridtune.core.metrics import reliability_table
from gridtune.core.registry import make_strategy, strategy_class
from gridtune.core.trainer import TrainConfig, make_loader, predict, torch_threads
from gridtune.core.verdict import MIN_TEST, Verdict, transfer_verdict
from gridtune.errors import DataError, GridtuneError
from gridtune.files import write_json
from gridtune.grids.split import SPLIT_FRACTIONS, split_indices
from gridtune.grids.view import check_schema, resolve_data, task_graphs
from gridtune.nn.calibration import platt_calibrate
from gridtune.nn.checkpoint import load_checkpoint, save_checkpoint, seal_checkpoint
from gridtune.nn.heads import make_head
from gridtune.nn.loadability import dc_load_scale, fresh_state
from gridtune.nn.model import build_model, fill_cuts
from gridtune.nn.normalizer import Normalizer
from gridtune.nn.tasks import higher_is_better, make_task, primary_metric, task_for_model
from gridtune.workflows.configs import TransferConfig, with_fields
from gridtune.workflows.pretrain import class_balance
from gridtune.workflows.results import FinetuneResult

OPF_POOL_DRAW_FACTOR = 4  # at most this many unlabelled draws per scenario kept for an OPF head
ONE_SEED = ("one seed: whether transfer hurt needs several seeds and a bootstrap interval "
            "(`gridtune finetune --seed 0 1 2 3 4`, or a study)")


def sample_labels(graphs: list[Any], pool: np.ndarray, labels: int, task: str, seed: int
                  ) -> tuple[list[int], list[int]]:
    """Draw `labels` indices from `pool` (graphs with a target for `task`) and split them into
    (train, val); stratified by class for feasibility so both classes appear when they can."""
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
    starts (case30: best epoch 0 at every small budget)."""
    return max(1, min(batch_size, math.ceil(n_train / 4)))


def unlabeled_pool(data: Any, spare: list[Any], n: int, seed: int, task: str) -> list[Any]:
    """`n` unlabelled target graphs: fresh draws of the dataset's recipe (`GridDataset.unlabeled`)
    or, for a plain list of graphs, the unused training graphs.

    For an `opf` head only scenarios the DC network can carry are kept (DC loadability
    `lam >= 1`, `gridtune.nn.loadability.dc_load_scale`; no OPF solve). The head is trained and
    scored on scenarios that have an OPF solution; a raw case118 draw is 57% infeasible, and its
    predictions there are extrapolations: a power-balance term fed with them saw violations of
    1-7 p.u. a batch, its multiplier climbed to 524 and the OPF MAEs grew 0.8-5.5x (200 labels).
    Draws continue up to `OPF_POOL_DRAW_FACTOR x n`; fewer than `n` may come back.
    """
    if task != "opf":
        return data.unlabeled(n, seed) if hasattr(data, "unlabeled") else spare[:n]
    if not hasattr(data, "unlabeled"):
        return [g for g in spare if dc_load_scale(g) >= 1.0][:n]
    drawn = n
    while True:
        kept = [g for g in data.unlabeled(drawn, seed) if dc_load_scale(g) >= 1.0]
        if len(kept) >= n or drawn >= OPF_POOL_DRAW_FACTOR * n:
            return kept[:n]
        drawn = min(OPF_POOL_DRAW_FACTOR * n, int(drawn * n / max(len(kept), 1) * 1.1) + 1)


def replay_graphs(sources: Sequence[str], meta: dict[str, Any], task: str,
                  samples: int | None) -> list[Any]:
    """The source's labelled training graphs for strategy `replay`: each source's training split
    as the checkpoint's pre-training drew it (its split seed and fractions), with a `task` target.

    `samples` scenarios are read from each source (default: the checkpoint's own count when it was
    trained on one source, so the split is the one pre-training used; else every scenario).
    """
    if not sources:
        raise GridtuneError(f"strategy `replay` needs the source's labelled data: pass `--source-data "
                            f"DATA` (this checkpoint was trained on `{meta.get('data')}`)")
    seed = int(meta.get("split_seed", 0))
    fractions = tuple(meta.get("split_fractions", SPLIT_FRACTIONS))
    if samples is None and len(sources) == 1:
        split = (meta.get("metrics") or {}).get("split") or {}
        counted = [split.get(k) for k in ("train", "val", "test")]
        samples = sum(counted) if all(isinstance(c, int) for c in counted) else None
    graphs: list[Any] = []
    for source in sources:
        view = resolve_data(source, samples=samples)
        check_schema(view, meta["schema_version"])
        tr_idx, _, _ = split_indices(view.statuses, seed, fractions)
        graphs += task_graphs([view.graphs[i] for i in tr_idx], task)
    if not graphs:
        raise DataError(f"source data {', '.join(f'`{s}`' for s in sources)} hold no training graphs "
                        f"with a `{task}` target to replay")
    return graphs


def _strategy_options(name: str, model: Any, unlabeled_loader: Any, source_loader: Any = None
                      ) -> dict[str, Any]:
    if strategy_class(name).needs_source:
        return {"source": source_loader}
    if strategy_class(name).needs_unlabeled:
        if unlabeled_loader is None:
            raise GridtuneError(f"strategy `{name}` needs unlabelled target data: pass `--unlabeled N`")
        if name == "self-training" and model.task != "feasibility":
            return {"unlabeled": unlabeled_loader, "kind": "regression"}
        return {"unlabeled": unlabeled_loader}
    if name == "head-swap":
        return {"head": lambda d: make_head(model.task, d, model.config.head_hidden)}
    if name == "decoder":
        raise GridtuneError("strategy `decoder` needs a decoder module; use it from Python "
                            "(gridtune.core.strategies.decoder) rather than through `finetune`")
    return {}


def _train_one(model: Any, strategy_name: str, options: dict[str, Any], train: list[Any],
               val: list[Any], config: TrainConfig, extra: list[Any]) -> tuple[Any, Any, Any]:
    if model.task == "feasibility":
        task = make_task("feasibility", **class_balance(train))
        # training sees raw logits; the checkpoint's Platt scaling belongs to the source grid
        model.logit_scale.fill_(1.0)
        model.logit_bias.fill_(0.0)
    else:
        task = task_for_model(model)
    if "source" in options:  # replay: the source batches take the same loss as the target's
        options = {**options, "loss": task.loss}
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


def _test_scores(model: Any, test: list[Any]) -> tuple[dict[str, float], list[dict[str, float]] | None]:
    """The task's metrics on the test split and, for feasibility, its reliability table, from
    one pass over the test graphs."""
    task = make_task(model.task)
    outputs, targets = predict(model, make_loader(test, 256, shuffle=False), task)
    reliability = (reliability_table(probabilities(outputs), targets.double().numpy())
                   if model.task == "feasibility" else None)
    return task.metrics(outputs, targets), reliability


def transfer_gain(task: str, ours: float | None, scratch: float | None) -> dict[str, Any]:
    """`{metric, value, higher_is_better_metric}`: positive `value` means transfer helped."""
    key, higher = primary_metric(task), higher_is_better(task)
    value = None if ours is None or scratch is None else (1.0 if higher else -1.0) * (ours - scratch)
    return {"metric": key, "value": value, "higher_is_better_metric": higher}


def finetune(checkpoint: str | Path, data: Any, out_dir: str | Path,
             config: TransferConfig | None = None, *, threads: int | None = 1, save: bool = True,
             **fields: Any) -> FinetuneResult:
    """Fine-tune `checkpoint` on target `data`; see the module docstring.

    Args:
        checkpoint: a checkpoint directory (`gridtune.nn.checkpoint`).
        data: target data: recipe path, dataset directory, case name, `GridDataset` or graphs.
        out_dir: receives the checkpoint, `finetune.json` (a `FinetuneResult`) and `history.json`.
        config: what to do (`TransferConfig`); `fields` override or supply its fields, e.g.
            `labels=100, strategy="lora", seed=1, train=TrainConfig(epochs=100)`.
        threads: torch threads while training (default 1).
        save: write the fine-tuned checkpoint (results are always written).
    """
    config = with_fields(TransferConfig, config, fields)
    with torch_threads(threads):
        return _finetune(checkpoint, data, Path(out_dir), config, save=save)


def _finetune(checkpoint: str | Path, data: Any, out_dir: Path, cfg: TransferConfig, *,
              save: bool) -> FinetuneResult:
    start = time.perf_counter()
    fresh_state()  # numbers independent of what this process solved before
    seed, strategy = cfg.seed, cfg.strategy
    model, meta = load_checkpoint(checkpoint)
    task = model.task
    if isinstance(data, (str, Path)):
        from gridtune.grids.dataset import open_dataset
        data = open_dataset(data)  # opened once: labels and unlabelled draws share it
    source_data = data
    view = resolve_data(data)
    check_schema(view, meta["schema_version"])
    config = cfg.train
    tr_idx, va_idx, te_idx = split_indices(view.statuses, seed, cfg.split)
    train_i, val_i = sample_labels(view.graphs, tr_idx, cfg.labels, task, seed)
    train = [view.graphs[i] for i in train_i]
    val = [view.graphs[i] for i in val_i]
    test = task_graphs([view.graphs[i] for i in te_idx], task)
    if not test:
        raise DataError(f"data `{view.name}` has no test graphs with a `{task}` target")
    # what the source model scores on the target before it sees a single target label
    zero_shot = None if strategy == "scratch" else _test_scores(model, test)[0]

    unlabeled_loader = None
    pool: list[Any] = []
    if cfg.unlabeled > 0:
        used = set(train_i) | set(val_i)
        spare = [view.graphs[int(i)] for i in tr_idx if int(i) not in used]
        pool = unlabeled_pool(source_data, spare, cfg.unlabeled, seed, task)
        if len(pool) < 2:
            raise DataError(f"only `{len(pool)}` unlabelled target graphs available; need at least 2")
        unlabeled_loader = make_loader(pool, min(config.batch_size, len(pool)), shuffle=True, seed=seed)

    def constraint_term() -> list[Any]:
        if cfg.constraints is None:
            return []
        from gridtune.constraints.api import training_term
        term = training_term(cfg.constraints, task, cfg.formulation)
        if pool:
            # constraints need no labels: the unlabelled draw feeds the constraint term (4/5)
            # and constrained checkpoint selection (1/5), so satisfaction is learnt and checked
            # beyond the few labelled graphs
            k = max(1, len(pool) // 5)
            term.use_data(make_loader(pool[k:], min(config.batch_size, len(pool) - k),
                                      shuffle=True, seed=seed),
                          make_loader(pool[:k], 256, shuffle=False))
        return [term]

    if cfg.normalizer == "target" and strategy != "scratch":
        model.normalizer = Normalizer().fit(train + list(pool))
    extra = constraint_term()
    source_loader = None
    if strategy_class(strategy).needs_source:
        replayed = replay_graphs(cfg.source_data, meta, task, cfg.source_samples)
        source_loader = make_loader(replayed, config.batch_size, shuffle=True, seed=seed)
    options = _strategy_options(strategy, model, unlabeled_loader, source_loader)
    pre_adapt_report = None
    if cfg.pre_adapt_epochs > 0:
        from gridtune.core.ssl import pre_adapt
        pre = pre_adapt(model, unlabeled_loader, epochs=cfg.pre_adapt_epochs, lr=config.lr, seed=seed)
        pre_adapt_report = {"epochs": cfg.pre_adapt_epochs, "loss": pre.history,
                            "wall_time_s": pre.wall_time_s}
    torch.manual_seed(seed)
    if strategy == "scratch":
        # the same baseline as `with_scratch`: target-fitted statistics, nothing from the source
        model = build_model(model.config, task, Normalizer().fit(train))
    model, fit_result, strat = _train_one(model, strategy, options, train, val, config, extra)
    # a model that answers the DC loadability from stored cuts (`preset=fast`) swaps the source's
    # for the target's: the LPs of the target's training split need its scenarios, not their labels
    cut_graphs = [view.graphs[int(i)] for i in tr_idx] + pool
    fill_cuts(model, cut_graphs)
    decisions = (_reliability_and_decisions(model, val, test, out_dir if save else None)
                 if task == "feasibility" else {})
    solve = None if view.solve_time_s is None else view.solve_time_s[train_i + val_i]
    metrics, reliability = _test_scores(model, test)
    result = FinetuneResult(
        checkpoint=str(checkpoint), source=meta.get("data"), target=view.name,
        target_hash=view.content_hash, task=task, strategy=strategy,
        strategy_config=strat.config(), labels=cfg.labels, seed=seed, n_train=len(train),
        n_val=len(val), n_test=len(test), unlabeled=cfg.unlabeled, unlabeled_used=len(pool),
        normalizer=cfg.normalizer, split=list(cfg.split), pre_adapt=pre_adapt_report,
        train=dataclasses.asdict(config),
        metrics=metrics, reliability=reliability,
        trainable_parameters=fit_result.trainable_parameters,
        auxiliary_parameters=fit_result.auxiliary_parameters,
        epochs_run=fit_result.epochs_run, best_epoch=fit_result.best_epoch,
        best_val=fit_result.best_val, train_wall_time_s=fit_result.wall_time_s,
        label_solver_time_s=None if solve is None or not np.isfinite(solve).any()
        else float(np.nansum(solve)),
        calibration=decisions.get("calibration"), decision_curve=decisions.get("decision_curve"),
        zero_shot=zero_shot)
    if cfg.constraints is not None:
        from gridtune.constraints.api import constraint_report
        result.constraints = {
            "spec": cfg.constraints, "formulation": extra[0].summary(),
            "test": constraint_report(model, make_loader(test, 256, shuffle=False), cfg.constraints, task)}
        extra[0].write_history(out_dir)
    if cfg.report_constraints:
        from gridtune.constraints.api import constraint_report
        result.violations = {spec: constraint_report(model, make_loader(test, 256, shuffle=False), spec, task)
                             for spec in cfg.report_constraints}
    if cfg.with_scratch and strategy != "scratch":
        torch.manual_seed(seed)
        fresh = build_model(model.config, task, Normalizer().fit(train))
        fresh, scratch_fit, _ = _train_one(fresh, "scratch", {}, train, val, config, constraint_term())
        fill_cuts(fresh, cut_graphs)
        if task == "feasibility":
            platt_calibrate(fresh, val)
        result.scratch = {"metrics": _test_scores(fresh, test)[0],
                          "trainable_parameters": scratch_fit.trainable_parameters,
                          "epochs_run": scratch_fit.epochs_run,
                          "train_wall_time_s": scratch_fit.wall_time_s}
        key = primary_metric(task)
        result.transfer_gain = transfer_gain(task, result.metrics.get(key),
                                             result.scratch["metrics"].get(key))
        result.negative_transfer_reason = ONE_SEED
    else:
        result.negative_transfer_reason = "no scratch baseline was trained"
    out_dir.mkdir(parents=True, exist_ok=True)
    if save:
        # the target's split rule travels with the weights, so `evaluate` and `calibrate` on the
        # target never score or calibrate on the graphs the labels were drawn from
        save_checkpoint(model, out_dir, {"data_hash": view.content_hash, "data": view.name,
                                         "split_seed": seed, "split_fractions": list(cfg.split),
                                         "finetune": {"strategy": strategy,
                                                      "options": strat.config(),
                                                      "from": str(checkpoint)},
                                         "metrics": result.metrics})
    if cfg.conformal_alpha is not None and task == "feasibility":
        if not save:
            raise GridtuneError("conformal calibration is stored beside the checkpoint: it needs "
                                "`save=True`")
        result.trust = trust_summary(out_dir, source_data, view, va_idx.size, te_idx, cfg.conformal_alpha,
                                     seed)
    result.wall_time_s = time.perf_counter() - start
    result.save(out_dir)
    write_json(out_dir / "history.json", fit_result.history, indent=1)
    seal_checkpoint(out_dir, [result.FILE, "history.json", "constraint_history.json"])
    return result


def trust_summary(checkpoint: Path, data: Any, view: Any, n_validation: int, test: np.ndarray,
                  alpha: float, seed: int) -> dict[str, Any]:
    """Calibrate the fine-tuned `checkpoint` on the target's validation split (its own split
    rule, `n_validation` scenarios) and score the solver fallback on the `test` indices: the
    scalars a study reports beside AUROC (`coverage`, `answered_share`, `error_among_answered`,
    ...). The familiarity flag's false-alarm rate is 1% where the validation split supports it,
    else the smallest rate it supports (1 / (n + 1))."""
    from gridtune.workflows.trust import calibrate as calibrate_sets
    from gridtune.workflows.trust import trust_report

    false_alarm = min(0.5, max(0.01, 1.0 / (n_validation + 1)))
    calibrate_sets(checkpoint, data, alpha=alpha, seed=seed, threads=None, false_alarm_rate=false_alarm)
    model, _ = load_checkpoint(checkpoint)
    report = trust_report(model, checkpoint, view, test, alpha=alpha)
    part = report.get(report.get("policy", "marginal"), {})
    fb = part.get("fallback", {})
    return {"alpha": alpha, "policy": report.get("policy"), "n_calibration": report["n_calibration"],
            "n_test": report["n"], "coverage": part.get("coverage"),
            "answered_share": fb.get("answered_share"), "error_among_answered": fb.get("error_among_answered"),
            "solver_time_saved_share": fb.get("solver_time_saved_share"),
            "unfamiliar_share": report.get("unfamiliar_share"), "false_alarm_rate": false_alarm,
            "skipped": part.get("skipped") or report.get("skipped")}


def verdict(results: Sequence[FinetuneResult], *, seed: int = 0) -> Verdict:
    """The transfer verdict over several seeds' results of one setting (paired by seed): the
    mean gain over scratch with a bootstrap interval (`gridtune.core.verdict`); `inconclusive`
    under 3 seeds or with a test split of fewer than `MIN_TEST` (1000) scenarios."""
    if not results or any(r.scratch is None for r in results):
        raise GridtuneError("a transfer verdict needs results with a scratch baseline")
    task = results[0].task
    key = primary_metric(task)
    return transfer_verdict([r.metrics[key] for r in results],
                            [r.scratch["metrics"][key] for r in results],  # type: ignore[index]
                            metric=key, higher_is_better=higher_is_better(task), seed=seed,
                            n_test=min(r.n_test for r in results), min_test=MIN_TEST)
