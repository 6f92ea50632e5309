"""Predictions an operator can act on: conformal sets, an unfamiliar-grid flag and a solver fallback.

    calibrate("runs/case118", "case118", alpha=0.01)           # writes conformal.json beside it
    frame = predict("runs/case118", "case118_changed", out="screen.parquet")

Calibration (`calibrate`) uses labelled scenarios the checkpoint never trained on: by default the
validation split of the data under the checkpoint's own split rule (`split_indices` with its
seed and fractions; on the training data these graphs only chose the early-stopping epoch and
the Platt scaling), or with `calibration_share` a seeded share of the validation and test splits
together. On other data than the checkpoint's (a few labels of a changed grid, to re-calibrate
after the grid changed) the sets are re-calibrated and an existing familiarity reference is kept,
so "familiar" still means "like the training data" (without an earlier calibration for these
weights, the reference is that data's training split). It stores, beside the checkpoint:

    conformal.json            the sorted nonconformity scores per class (so any alpha can be
                              asked later), the default alpha and variant, the familiarity
                              settings and threshold, the data and a digest of the weights
    familiarity.safetensors   reference statistics of the familiarity score (training-split
                              embeddings, standardised)

A prediction (`predict`) gives per scenario `p_infeasible`, the conformal `prediction_set`
(`feasible`, `infeasible`, `feasible|infeasible`, or `none` when no class is probable enough at
that level), the `familiarity` score with its `unfamiliar` flag, and the recommended `action`:
`model` only where the set is a single class and the scenario is familiar, `solve` (run the
AC-OPF) otherwise. `fallback` scores that policy on labelled data: share answered, error among
answered, solver time saved, and a risk-coverage curve.

The statistics live in `gridtune.core.conformal` and `gridtune.core.familiarity`; this module only
joins them to grid checkpoints and data.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gridtune.core.conformal import (
    ConformalClassifier,
    check_alpha,
    class_coverage,
    coverage,
    min_calibration_size,
    set_names,
)
from gridtune.core.familiarity import Familiarity
from gridtune.core.trainer import make_loader, torch_threads
from gridtune.errors import CheckpointError, DataError, SpecError
from gridtune.files import atomic_path, write_json
from gridtune.grids.features import BRANCH_FEATURES
from gridtune.grids.split import SPLIT_FRACTIONS, split_indices
from gridtune.grids.view import DataView, check_schema, resolve_data, unknown_as_infeasible
from gridtune.nn.checkpoint import load_checkpoint, locate, seal_checkpoint, weights_digest

CALIBRATION_FILE = "conformal.json"
FAMILIARITY_FILE = "familiarity.safetensors"
CLASSES = ("feasible", "infeasible")
MAX_REFERENCE = 4000  # training embeddings kept as the familiarity reference (seeded subsample)
BATCH = 256
LOADING = "loading_percent"  # branch loading from the predicted voltages, percent of RATE_A
LOADING_BAND_EDGES = (50.0, 80.0)  # Mondrian bands of the predicted loading, percent of RATE_A
_IS_REVERSE = BRANCH_FEATURES.index("is_reverse")
CURVE_ALPHAS = tuple(float(a) for a in np.geomspace(0.002, 0.5, 36))


# ---- model outputs --------------------------------------------------------------------------

@torch.no_grad()
def model_outputs(model: Any, graphs: list[Any], batch_size: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
    """(P(infeasible) (N,), graph embeddings (N, D)) in one pass: the embedding is what the head
    receives (captured by a forward hook, so the probability is exactly `model(batch)`'s)."""
    if not graphs:
        return np.zeros(0), np.zeros((0, int(getattr(model, "embed_dim", 0))))
    seen: list[torch.Tensor] = []
    hook = model.head.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    was_training = model.training
    model.eval()
    probs: list[torch.Tensor] = []
    try:
        for batch in make_loader(graphs, batch_size, shuffle=False):
            probs.append(torch.sigmoid(model(batch).reshape(-1)))
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(probs).double().numpy(), torch.cat(seen).double().numpy()


def _labels(graphs: list[Any]) -> np.ndarray:
    """0 feasible / 1 infeasible / NaN unlabelled, per graph."""
    return np.array([float(g.y_infeasible.reshape(-1)[0]) for g in graphs])


def _view(data: Any, meta: dict[str, Any], samples: int | None) -> DataView:
    view = resolve_data(data, samples=samples)
    if not view.graphs:
        raise DataError(f"data `{view.name}` holds no scenarios")
    check_schema(view, str(meta["schema_version"]))
    if meta.get("include_unknown"):
        view = unknown_as_infeasible(view)
    return view


def _split(view: DataView, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    seed = int(meta.get("split_seed", 0))
    fractions = tuple(meta.get("split_fractions", SPLIT_FRACTIONS))
    return split_indices(view.statuses, seed, fractions)  # type: ignore[arg-type]


def _check_feasibility(meta: dict[str, Any], where: Path) -> None:
    if meta["task"] not in ("feasibility", "opf"):
        raise CheckpointError(f"checkpoint `{where}` has task `{meta['task']}`: conformal calibration is "
                              "for `feasibility` checkpoints (sets) and `opf` checkpoints (intervals)")


def _ids(view: DataView) -> tuple[str, np.ndarray]:
    if all(hasattr(g, "scenario_id") for g in view.graphs):
        return "scenario_id", np.array([int(g.scenario_id.reshape(-1)[0]) for g in view.graphs])
    return "index", np.arange(len(view.graphs))


# ---- calibration ----------------------------------------------------------------------------

def calibration_indices(view: DataView, meta: dict[str, Any], share: float | None, seed: int = 0
                        ) -> tuple[np.ndarray, np.ndarray, str]:
    """(training indices, calibration indices, how they were chosen): never a training graph."""
    tr, va, te = _split(view, meta)
    if share is None:
        return tr, va, "validation split"
    share = float(share)
    if not 0.0 < share <= 1.0:
        raise SpecError(f"calibration share `{share}` is not valid: give a fraction in (0, 1] of the "
                        "scenarios outside the training split")
    pool = np.concatenate([va, te])
    rng = np.random.default_rng(seed)
    chosen = np.sort(pool[rng.permutation(pool.size)[:max(1, int(round(share * pool.size)))]])
    return tr, chosen, f"{share:g} of the validation and test splits"


def calibrate(checkpoint: str | Path, data: Any, *, alpha: float = 0.05, mondrian: bool = False,
              calibration_share: float | None = None, false_alarm_rate: float = 0.01,
              familiarity: str = "knn", k: int = 1, samples: int | None = None, seed: int = 0,
              threads: int | None = 1) -> dict[str, Any]:
    """Calibrate conformal sets and the familiarity threshold for `checkpoint` on labelled `data`
    it did not train on (see the module docstring); writes `conformal.json` and
    `familiarity.safetensors` into the checkpoint directory and returns the summary.

    Args:
        alpha: default miscoverage level of the sets (`predict` may ask for another).
        mondrian: default to class-conditional thresholds (coverage per class).
        calibration_share: calibrate on this share of the validation + test splits instead of
            the validation split.
        false_alarm_rate: share of in-distribution scenarios the familiarity flag may raise.
        familiarity: `knn` (distance to the `k`-th nearest training embedding; default the
            nearest) or `mahalanobis`.
    """
    alpha = check_alpha(alpha)
    false_alarm_rate = check_alpha(false_alarm_rate, "false-alarm rate")
    start = time.perf_counter()
    where = locate(checkpoint)
    model, meta = load_checkpoint(where)
    _check_feasibility(meta, where)
    view = _view(data, meta, samples)
    tr, cal, how = calibration_indices(view, meta, calibration_share, seed)
    if meta["task"] == "opf":
        with torch_threads(threads):
            return _calibrate_opf(where, model, meta, view, cal, how, alpha, seed, start)
    own_data = view.content_hash == meta.get("data_hash")
    keep_familiarity = not own_data and _valid_calibration(where)
    with torch_threads(threads):
        cal_graphs = [view.graphs[i] for i in cal]
        p_cal, emb_cal = model_outputs(model, cal_graphs)
        if not keep_familiarity:
            rng = np.random.default_rng(seed)
            ref_idx = tr if tr.size <= MAX_REFERENCE else np.sort(rng.choice(tr, MAX_REFERENCE, replace=False))
            _, emb_ref = model_outputs(model, [view.graphs[i] for i in ref_idx])
    y = _labels(cal_graphs)
    labelled = np.isfinite(y)
    if not labelled.any():
        raise DataError(f"data `{view.name}` has no labelled (feasible / infeasible) scenarios in its "
                        f"{how} ({cal.size} scenarios) to calibrate on")
    conformal = ConformalClassifier.fit(p_cal[labelled], y[labelled].astype(int), CLASSES,
                                        alpha=alpha, mondrian=mondrian)
    if keep_familiarity:
        # other data than the checkpoint's (e.g. a few labels of a changed grid): the sets are
        # re-calibrated, "familiar" stays anchored to the training data it was calibrated on
        _, fam, previous = load_calibration(where)
        fam_meta = {**previous["familiarity"], "kept_from": previous.get("data")}
    else:
        if emb_ref.shape[0] < 2:
            raise DataError(f"data `{view.name}` has {emb_ref.shape[0]} training-split scenarios; the "
                            "familiarity reference needs at least 2")
        fam = Familiarity.fit(emb_ref, method=familiarity, k=min(k, emb_ref.shape[0] - 1))
        fam.calibrate(emb_cal, false_alarm_rate=false_alarm_rate)
        fam_meta, fam_arrays = fam.state()
        from safetensors.numpy import save_file

        with atomic_path(where / FAMILIARITY_FILE) as tmp:
            save_file({k_: np.ascontiguousarray(v) for k_, v in fam_arrays.items()}, str(tmp))
    record = {
        "conformal": conformal.to_dict(),
        "familiarity": fam_meta,
        "data": view.name, "data_hash": view.content_hash,
        "same_data_as_training": own_data,
        "calibration_set": how, "n_calibration": int(cal.size), "n_labelled": int(labelled.sum()),
        "weights_digest": weights_digest(where), "seed": seed,
    }
    write_json(where / CALIBRATION_FILE, record, indent=1)
    seal_checkpoint(where, [CALIBRATION_FILE, FAMILIARITY_FILE], optional=True)
    thresholds = conformal.thresholds()
    return {
        "checkpoint": str(where), "file": str(where / CALIBRATION_FILE),
        "data": view.name, "calibration_set": how, "alpha": alpha, "mondrian": mondrian,
        "n_calibration": int(labelled.sum()), "n_per_class": conformal.n_per_class(),
        "min_calibration_size": min_calibration_size(alpha),
        "score_thresholds": dict(zip(CLASSES, thresholds.tolist(), strict=True)),
        "familiarity": fam_meta, "wall_time_s": time.perf_counter() - start,
    }


def has_calibration(checkpoint: str | Path) -> bool:
    p = locate(checkpoint)
    return (p / CALIBRATION_FILE).is_file() and (p / FAMILIARITY_FILE).is_file()


def _valid_calibration(where: Path) -> bool:
    try:
        load_calibration(where)
    except CheckpointError:
        return False
    return True


def load_calibration(checkpoint: str | Path) -> tuple[ConformalClassifier, Familiarity, dict[str, Any]]:
    """(conformal sets, familiarity score, record) stored beside `checkpoint` by `calibrate`."""
    import json

    where = locate(checkpoint)
    if not has_calibration(where):
        raise CheckpointError(f"checkpoint `{where}` has no conformal calibration (`{CALIBRATION_FILE}`): "
                              f"run `gridtune calibrate {where} --data DATA --alpha A` first")
    try:
        record = json.loads((where / CALIBRATION_FILE).read_text())
        conformal = ConformalClassifier.from_dict(record["conformal"])
        from safetensors.numpy import load_file

        fam = Familiarity.from_state(record["familiarity"], load_file(str(where / FAMILIARITY_FILE)))
    except (OSError, ValueError, KeyError, TypeError, DataError) as exc:
        raise CheckpointError(f"checkpoint `{where}` has a corrupt calibration: {exc}") from None
    if record.get("weights_digest") != weights_digest(where):
        raise CheckpointError(f"the calibration beside `{where}` was made for other weights; re-run "
                              f"`gridtune calibrate {where} --data DATA`")
    return conformal, fam, record


# ---- prediction -----------------------------------------------------------------------------

def decide(conformal: ConformalClassifier, fam: Familiarity, probs: np.ndarray, embeddings: np.ndarray,
           alpha: float | None = None, mondrian: bool | None = None) -> dict[str, np.ndarray]:
    """Sets, familiarity and the action per scenario (arrays), from model outputs."""
    sets = conformal.sets(probs, alpha, mondrian)
    score = fam.score(embeddings)
    unfamiliar = fam.flag(scores=score)
    single = sets.sum(axis=1) == 1
    answer = np.where(single, sets.argmax(axis=1), -1)
    act = single & ~unfamiliar
    return {"sets": sets, "familiarity": score, "unfamiliar": unfamiliar, "answer": answer,
            "model": act}


def predict(checkpoint: str | Path, data: Any, *, alpha: float | None = None, mondrian: bool | None = None,
            out: str | Path | None = None, samples: int | None = None, threads: int | None = 1) -> Any:
    """Per-scenario predictions with conformal sets, familiarity and the recommended action, as a
    pandas DataFrame (one row per scenario, keyed by `scenario_id` or, without one, `index`);
    written to `out` (`.parquet` or `.csv`) when given. Needs a calibrated checkpoint.

    `frame.attrs["familiarity_shift_p"]` holds the batch-level p-value that the scenarios as a
    whole are less familiar than held-out training-grid data (`Familiarity.shift_pvalue`)."""
    import pandas as pd

    if alpha is not None:
        alpha = check_alpha(alpha)
    if out is not None and Path(out).suffix.lower() not in (".parquet", ".csv"):
        raise SpecError(f"output `{out}` must end in `.parquet` or `.csv`")
    where = locate(checkpoint)
    model, meta = load_checkpoint(where)
    _check_feasibility(meta, where)
    if meta["task"] == "opf":
        return _predict_opf(where, model, meta, data, alpha, out, samples, threads)
    conformal, fam, _ = load_calibration(where)
    conformal.thresholds(alpha, mondrian)  # too few calibration scores for this alpha: fail first
    view = _view(data, meta, samples)
    with torch_threads(threads):
        probs, emb = model_outputs(model, view.graphs)
    d = decide(conformal, fam, probs, emb, alpha, mondrian)
    key, ids = _ids(view)
    frame = pd.DataFrame({
        key: ids,
        "p_infeasible": probs,
        "prediction_set": set_names(d["sets"], CLASSES),
        "familiarity": d["familiarity"],
        "unfamiliar": d["unfamiliar"],
        "action": np.where(d["model"], "model", "solve"),
        "status": np.asarray(view.statuses).astype(str),
    })
    frame.attrs["familiarity_shift_p"] = fam.shift_pvalue(d["familiarity"])
    _write_frame(frame, out)
    return frame


def _write_frame(frame: Any, out: str | Path | None) -> None:
    if out is None:
        return
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)


# ---- the fallback policy on labelled data ---------------------------------------------------

def fallback(answered: np.ndarray, answer: np.ndarray, labels: np.ndarray,
             solve_time_s: np.ndarray | None = None) -> dict[str, Any]:
    """Share answered by the model, error among answered (answer != label), solver time saved.

    `labels` are 0/1 (NaN: unlabelled, left out of the error but counted in the shares)."""
    answered = np.asarray(answered, dtype=bool)
    labels = np.asarray(labels, dtype=float)
    known = np.isfinite(labels)
    wrong = answered & known & (np.asarray(answer) != np.nan_to_num(labels, nan=-2).astype(int))
    n_ans_known = int((answered & known).sum())
    report: dict[str, Any] = {
        "n": int(answered.size), "n_answered": int(answered.sum()),
        "answered_share": float(answered.mean()) if answered.size else math.nan,
        "error_among_answered": float(wrong.sum() / n_ans_known) if n_ans_known else None,
        "n_wrong": int(wrong.sum()),
    }
    if solve_time_s is not None:
        t = np.asarray(solve_time_s, dtype=float)
        if np.isfinite(t).any():
            total = float(np.nansum(t))
            saved = float(np.nansum(t[answered]))
            report.update({"solver_time_total_s": total, "solver_time_saved_s": saved,
                           "solver_time_saved_share": saved / total if total > 0 else None})
    return report


def risk_coverage(conformal: ConformalClassifier, probs: np.ndarray, familiar: np.ndarray, labels: np.ndarray,
                  mondrian: bool | None = None, alphas: tuple[float, ...] = CURVE_ALPHAS) -> list[dict[str, float]]:
    """The policy at each alpha the calibration supports: share answered against error among
    answered (the risk-coverage curve of the fallback policy)."""
    rows = []
    for a in alphas:
        try:
            sets = conformal.sets(probs, a, mondrian)
        except DataError:
            continue  # too few calibration scores for this alpha
        single = sets.sum(axis=1) == 1
        ans = single & familiar
        r = fallback(ans, np.where(single, sets.argmax(axis=1), -1), labels)
        rows.append({"alpha": a, "answered_share": r["answered_share"],
                     "error_among_answered": r["error_among_answered"]})
    return rows


def plot_risk_coverage(curve: list[dict[str, float]], path: str | Path, chosen: dict[str, Any] | None = None,
                       title: str = "fallback policy: model answers vs solver") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    pts = [(r["answered_share"], r["error_among_answered"]) for r in curve if r["error_among_answered"] is not None]
    if pts:
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, "o-", ms=3, label="conformal set single class and familiar (alpha swept)")
    if chosen and chosen.get("error_among_answered") is not None:
        ax.plot([chosen["answered_share"]], [chosen["error_among_answered"]], "r*", ms=12,
                label=f"alpha = {chosen.get('alpha'):g}")
    ax.set_xlabel("share answered by the model (coverage)")
    ax.set_ylabel("error among answered (risk)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def trust_report(model: Any, checkpoint: str | Path, view: DataView, indices: np.ndarray, *,
                 alpha: float | None = None, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Conformal coverage (marginal and Mondrian), familiarity false alarms and the fallback policy
    of a calibrated checkpoint on `view`'s scenarios `indices` (e.g. the test split), with the
    risk-coverage plot in `out_dir` when given. `model` is the loaded checkpoint."""
    conformal, fam, record = load_calibration(checkpoint)
    alpha = conformal.alpha if alpha is None else check_alpha(alpha)
    graphs = [view.graphs[i] for i in indices]
    probs, emb = model_outputs(model, graphs)
    y = _labels(graphs)
    known = np.isfinite(y)
    yk = y[known].astype(int)
    times = None if view.solve_time_s is None else np.asarray(view.solve_time_s, dtype=float)[indices]
    report: dict[str, Any] = {"alpha": alpha, "n": len(graphs), "n_labelled": int(known.sum()),
                              "calibrated_on": record.get("data"), "calibration_set": record.get("calibration_set"),
                              "n_calibration": conformal.n}
    d = None
    for variant, mond in (("marginal", False), ("mondrian", True)):
        try:
            dv = decide(conformal, fam, probs, emb, alpha, mond)
        except DataError as exc:
            report[variant] = {"skipped": str(exc)}
            continue
        sets = dv["sets"]
        report[variant] = {
            "coverage": coverage(sets[known], yk) if known.any() else None,
            "class_coverage": class_coverage(sets[known], yk, CLASSES),
            "set_sizes": {name: float(np.mean(sets.sum(axis=1) == s))
                          for name, s in (("empty", 0), ("single", 1), ("both", 2))},
            "fallback": fallback(dv["model"], dv["answer"], y, times),
        }
        if mond == conformal.mondrian:
            d = dv
    if d is not None:
        familiar = ~d["unfamiliar"]
        report["unfamiliar_share"] = float(d["unfamiliar"].mean())
        report["familiarity_shift_p"] = fam.shift_pvalue(d["familiarity"])
        report["familiarity_threshold"] = fam.threshold
        report["false_alarm_rate_target"] = fam.false_alarm_rate
        report["policy"] = "mondrian" if conformal.mondrian else "marginal"
        curve = risk_coverage(conformal, probs, familiar, y)
        report["risk_coverage"] = curve
        if out_dir is not None:
            chosen = {**report[report["policy"]]["fallback"], "alpha": alpha}
            report["plot"] = str(plot_risk_coverage(curve, Path(out_dir) / "risk_coverage.png", chosen))
    return report


def trust_section(model: Any, checkpoint: str | Path, view: DataView, indices: np.ndarray,
                  out_dir: str | Path | None) -> dict[str, Any]:
    """`{"trust": trust_report(...)}` for an evaluation report when the checkpoint is calibrated
    (`{}` when it is not; a stale calibration is reported, not raised)."""
    if not has_calibration(checkpoint):
        return {}
    try:
        return {"trust": trust_report(model, checkpoint, view, indices, out_dir=out_dir)}
    except (CheckpointError, DataError) as exc:
        return {"trust": {"skipped": str(exc)}}


def familiarity_auroc(checkpoint: str | Path, familiar: Any, changed: Any, *, samples: int | None = None,
                      threads: int | None = 1) -> dict[str, Any]:
    """How well the familiarity score tells `changed` scenarios (e.g. a changed grid) from the
    test split of `familiar` data (the checkpoint's own grid): AUROC, and the flag's detection
    rate and false-alarm rate at the calibrated threshold."""
    from sklearn.metrics import roc_auc_score

    where = locate(checkpoint)
    model, meta = load_checkpoint(where)
    _, fam, _ = load_calibration(where)
    view_in = _view(familiar, meta, samples)
    view_out = _view(changed, meta, samples)
    _, _, te = _split(view_in, meta)
    with torch_threads(threads):
        _, emb_in = model_outputs(model, [view_in.graphs[i] for i in te])
        _, emb_out = model_outputs(model, view_out.graphs)
    s_in, s_out = fam.score(emb_in), fam.score(emb_out)
    y = np.r_[np.zeros(s_in.size), np.ones(s_out.size)]
    return {"auroc": float(roc_auc_score(y, np.r_[s_in, s_out])), "n_familiar": int(s_in.size),
            "n_changed": int(s_out.size), "detection_rate": float(np.mean(s_out > fam.threshold)),
            "false_alarm_rate": float(np.mean(s_in > fam.threshold)),
            "shift_p": fam.shift_pvalue(s_out),
            "familiar": view_in.name, "changed": view_out.name}


# ---- OPF heads: intervals per bus ------------------------------------------------------------

def opf_outputs(model: Any, graphs: list[Any], batch_size: int = BATCH) -> dict[str, np.ndarray]:
    """Per bus of `graphs`: predictions and targets (N, 4) in `OPF_TARGETS` order, the generator
    group (1 where the bus has an in-service generator), the graph index and the bus number."""
    return opf_and_loading_outputs(model, graphs, batch_size, loading=False)[0]


def loading_outputs(model: Any, graphs: list[Any], batch_size: int = BATCH) -> dict[str, np.ndarray]:
    """Per rated, in-service branch of `graphs`: the loading (percent of `RATE_A`) that the
    predicted voltages imply (`grids.physics.branch_loading`) and the one the AC-OPF solution's
    voltages imply, the graph index and the branch number within its graph."""
    return opf_and_loading_outputs(model, graphs, batch_size, buses=False)[1]


@torch.no_grad()
def opf_and_loading_outputs(model: Any, graphs: list[Any], batch_size: int = BATCH, *,
                            buses: bool = True, loading: bool = True
                            ) -> tuple[dict[str, np.ndarray] | None, dict[str, np.ndarray] | None]:
    """`opf_outputs` and `loading_outputs` from one forward pass over `graphs` (None where not asked)."""
    from gridtune.grids.features import BUS_FEATURES, OPF_TARGETS
    from gridtune.grids.physics import branch_loading

    n_gen = BUS_FEATURES.index("n_gen")
    vm, va = OPF_TARGETS.index("vm_pu"), OPF_TARGETS.index("va_rad")
    rows: dict[str, list[torch.Tensor]] = {k: [] for k in ("pred", "target", "group", "graph", "bus")}
    branch_rows: dict[str, list[torch.Tensor]] = {k: [] for k in ("pred", "target", "graph", "branch")}
    was_training = model.training
    model.eval()
    try:
        offset = 0
        for batch in make_loader(graphs, batch_size, shuffle=False):
            state, truth = model(batch).double(), batch.y_opf.double()
            if buses:
                rows["pred"].append(state)
                rows["target"].append(truth)
                rows["group"].append((batch.x[:, n_gen] > 0).long())
                index = batch.batch
                rows["graph"].append(index + offset)
                rows["bus"].append(torch.arange(index.numel()) - batch.ptr[:-1][index])
            if loading:
                attr = batch.edge_attr.double()
                lp, number = branch_loading(state[:, vm], state[:, va], batch.edge_index, attr)
                lt, _ = branch_loading(truth[:, vm], truth[:, va], batch.edge_index, attr)
                # branch numbers run over the whole batch: restart them in each graph
                forward = batch.edge_attr[:, _IS_REVERSE] < 0.5
                per_graph = torch.bincount(batch.batch[batch.edge_index[0, forward]],
                                           minlength=batch.num_graphs)
                starts = torch.cumsum(per_graph, 0) - per_graph
                # the graph of each rated branch: its number falls in [start, start + count)
                g = torch.searchsorted(torch.cumsum(per_graph, 0), number, right=True)
                branch_rows["pred"].append(lp)
                branch_rows["target"].append(lt)
                branch_rows["graph"].append(g + offset)
                branch_rows["branch"].append(number - starts[g])
            offset += int(batch.num_graphs)
    finally:
        model.train(was_training)

    def stacked(parts: dict[str, list[torch.Tensor]]) -> dict[str, np.ndarray]:
        return {k: torch.cat(v).numpy() for k, v in parts.items()}

    return (stacked(rows) if buses else None), (stacked(branch_rows) if loading else None)


def loading_bands(edges: list[float], predicted_percent: np.ndarray) -> np.ndarray:
    """The band of each predicted loading: 0 below `edges[0]`, 1 up to `edges[1]`, ..."""
    return np.digitize(np.asarray(predicted_percent, dtype=float), np.asarray(edges, dtype=float))


def _fit_loading(model: Any, graphs: list[Any], alpha: float) -> dict[str, Any] | None:
    """Split-conformal intervals on branch loading, Mondrian by band of the *predicted* loading
    (below 50%, 50-80%, above 80% of the rating; a band with too few calibration loadings for
    `alpha` is merged into the one below), so heavily loaded branches get their own, wider
    intervals instead of sharing the light branches' width. None when no branch is rated."""
    from gridtune.core.conformal import ConformalRegressor

    o = loading_outputs(model, graphs)
    if not o["pred"].size:
        return None
    need, pred = min_calibration_size(alpha), o["pred"]
    edges: list[float] = []
    upper = math.inf
    for edge in sorted(LOADING_BAND_EDGES, reverse=True):
        if int(((pred >= edge) & (pred < upper)).sum()) >= need:
            edges.insert(0, edge)
            upper = edge
    while edges and int((pred < edges[0]).sum()) < need:
        edges.pop(0)
    reg = ConformalRegressor.fit(o["target"], o["pred"], [LOADING], alpha=alpha,
                                 groups=loading_bands(edges, o["pred"]))
    return {"intervals": reg.to_dict(), "band_edges_percent": edges, "n_branches": int(o["pred"].size)}


def _calibrate_opf(where: Path, model: Any, meta: dict[str, Any], view: DataView, cal: np.ndarray,
                   how: str, alpha: float, seed: int, start: float) -> dict[str, Any]:
    """Split-conformal intervals on the OPF head's per-bus outputs, Mondrian by bus group
    (with and without a generator: generation is exactly zero at the others, and voltage
    behaves differently at regulated buses)."""
    from gridtune.core.conformal import ConformalRegressor
    from gridtune.grids.features import OPF_TARGETS
    from gridtune.grids.view import task_graphs

    graphs = task_graphs([view.graphs[i] for i in cal], "opf")
    if not graphs:
        raise DataError(f"data `{view.name}` has no scenarios with an AC-OPF solution in its {how} "
                        f"({cal.size} scenarios) to calibrate intervals on")
    o = opf_outputs(model, graphs)
    reg = ConformalRegressor.fit(o["target"], o["pred"], list(OPF_TARGETS), groups=o["group"], alpha=alpha)
    loading = _fit_loading(model, graphs, alpha)
    record = {"task": "opf", "intervals": reg.to_dict(), "branch_loading": loading,
              "data": view.name, "data_hash": view.content_hash,
              "same_data_as_training": view.content_hash == meta.get("data_hash"),
              "calibration_set": how, "n_calibration": len(graphs), "n_buses": int(o["group"].size),
              "weights_digest": weights_digest(where), "seed": seed}
    write_json(where / CALIBRATION_FILE, record, indent=1)
    seal_checkpoint(where, [CALIBRATION_FILE], optional=True)
    return {"checkpoint": str(where), "file": str(where / CALIBRATION_FILE), "task": "opf",
            "data": view.name, "calibration_set": how, "alpha": alpha, "n_calibration": len(graphs),
            "n_buses": int(o["group"].size), "min_calibration_size": min_calibration_size(alpha),
            "half_widths": {c: {("generator" if g else "other"): reg.threshold(c, g)
                                for g in (0, 1) if str(g) in reg.scores[c]} for c in OPF_TARGETS},
            "loading_half_width_percent": None if loading is None else
            {f"band {g}": ConformalRegressor.from_dict(loading["intervals"]).threshold(LOADING, int(g))
             for g in ConformalRegressor.from_dict(loading["intervals"]).scores[LOADING]},
            "loading_band_edges_percent": None if loading is None else loading["band_edges_percent"],
            "n_calibration_branches": None if loading is None else loading["n_branches"],
            "wall_time_s": time.perf_counter() - start}


def load_intervals(checkpoint: str | Path) -> tuple[Any, dict[str, Any]]:
    """(`ConformalRegressor`, record) of an OPF checkpoint calibrated by `calibrate`."""
    import json

    from gridtune.core.conformal import ConformalRegressor

    where = locate(checkpoint)
    if not (where / CALIBRATION_FILE).is_file():
        raise CheckpointError(f"checkpoint `{where}` has no conformal calibration (`{CALIBRATION_FILE}`): "
                              f"run `gridtune calibrate {where} --data DATA --alpha A` first")
    try:
        record = json.loads((where / CALIBRATION_FILE).read_text())
        reg = ConformalRegressor.from_dict(record["intervals"])
    except (OSError, ValueError, KeyError, TypeError, DataError) as exc:
        raise CheckpointError(f"checkpoint `{where}` has a corrupt calibration: {exc}") from None
    if record.get("weights_digest") != weights_digest(where):
        raise CheckpointError(f"the calibration beside `{where}` was made for other weights; re-run "
                              f"`gridtune calibrate {where} --data DATA`")
    return reg, record


def branch_file(out: str | Path) -> Path:
    """Where `predict` on an OPF checkpoint writes the branch-loading rows beside `out`."""
    out = Path(out)
    return out.with_name(f"{out.stem}_branches{out.suffix}")


def _predict_opf(where: Path, model: Any, meta: dict[str, Any], data: Any, alpha: float | None,
                 out: str | Path | None, samples: int | None, threads: int | None) -> Any:
    """One row per scenario and bus: each OPF target's prediction with its interval; with a
    branch-loading calibration, one row per scenario and rated branch in `frame.attrs["branches"]`
    (and `<out>_branches.<suffix>`)."""
    import pandas as pd

    from gridtune.core.conformal import ConformalRegressor
    from gridtune.grids.features import OPF_TARGETS

    reg, record = load_intervals(where)
    for c in OPF_TARGETS:  # too few calibration scores for this alpha: fail before any work
        for g in reg.scores[c]:
            reg.threshold(c, int(g), alpha)
    loading = record.get("branch_loading")
    reg_loading = None if loading is None else ConformalRegressor.from_dict(loading["intervals"])
    if reg_loading is not None:
        for g in reg_loading.scores[LOADING]:
            reg_loading.threshold(LOADING, int(g), alpha)
    view = _view(data, meta, samples)
    with torch_threads(threads):
        o, b = opf_and_loading_outputs(model, view.graphs, loading=reg_loading is not None)
    lo, hi = reg.intervals(o["pred"], groups=o["group"], alpha=alpha)
    key, ids = _ids(view)
    columns: dict[str, Any] = {key: ids[o["graph"]], "bus": o["bus"]}
    for j, c in enumerate(OPF_TARGETS):
        columns[c] = o["pred"][:, j]
        columns[f"{c}_lo"] = lo[:, j]
        columns[f"{c}_hi"] = hi[:, j]
    frame = pd.DataFrame(columns)
    _write_frame(frame, out)
    if b is not None:
        bands = loading_bands(loading.get("band_edges_percent", []), b["pred"])
        blo, bhi = reg_loading.intervals(b["pred"], groups=bands, alpha=alpha)
        branches = pd.DataFrame({key: ids[b["graph"]], "branch": b["branch"], LOADING: b["pred"],
                                 f"{LOADING}_lo": np.maximum(blo[:, 0], 0.0), f"{LOADING}_hi": bhi[:, 0]})
        if out is not None:
            _write_frame(branches, branch_file(out))
        frame.attrs["branches"] = branches  # after writing: parquet stores attrs as JSON
    return frame
