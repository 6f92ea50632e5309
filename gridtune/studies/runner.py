"""Run a study: datasets -> one pre-training per source -> every cell, in parallel -> report.

    outcome = run_study(load_study("quickstart"), Path("runs/quickstart"))

Resumable at every level: datasets come from the cache (keyed by recipe content), a source is
pre-trained again only when its data or settings changed, and a cell runs only when it has no
`ok` record with the current fingerprint (`matrix.fingerprint`). A cell that raises is recorded
as failed with its error and traceback; the other cells go on. Workers return records and the
parent process writes them, one at a time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gridtune import __version__
from gridtune.studies.matrix import Cell, expand, fingerprint
from gridtune.studies.spec import StudySpec, recipe_table
from gridtune.studies.store import ResultsStore, write_json

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class DatasetRef:
    """A built dataset as the study uses it: its directory and how many scenarios."""

    label: str
    directory: str
    samples: int
    content_hash: str
    counts: dict[str, int]


@dataclasses.dataclass(frozen=True)
class CellJob:
    """Everything a worker needs to run one cell (picklable, small)."""

    cell: Cell
    fingerprint: str
    task: str
    unlabeled: int
    checkpoint: str | None
    source_error: str | None
    target: DatasetRef
    out_dir: str
    constraint_sets: tuple[tuple[str, str], ...]  # (label, path) of every set in the study
    threads: int
    train: dict[str, Any] = dataclasses.field(default_factory=dict)  # TrainConfig fields


@dataclasses.dataclass
class StudyOutcome:
    """What `run_study` did: counts, where the results and the report are, the summary text."""

    out_dir: Path
    cells: int
    ran: int
    skipped: int
    failed: int
    report_md: Path | None
    report_html: Path | None
    summary: str
    wall_time_s: float


# ---- datasets ----------------------------------------------------------------------------------

def prepare_datasets(spec: StudySpec, *, workers: int | None, backend: str, log: Log,
                     progress: bool = True) -> dict[str, DatasetRef]:
    """Build (or reuse from the cache) every source and target dataset of the study."""
    from gridtune.grids.build import build_dataset, default_directory
    from gridtune.grids.dataset import open_dataset, read_manifest
    from gridtune.grids.recipe import Recipe
    from gridtune.specs import from_table
    from gridtune.studies.spec import dataset_manifest

    refs: dict[str, DatasetRef] = {}
    for label, ref in spec.grid_refs().items():
        if dataset_manifest(ref) is not None:  # a built dataset directory, reused as it is
            ds = open_dataset(ref, samples=recipe_table(spec, label)["samples"])
            log(f"dataset {label}: using {ref} ({len(ds)} scenarios)")
            counts = {s: int((ds.statuses == s).sum()) for s in ("feasible", "infeasible", "unknown", "error")}
            refs[label] = DatasetRef(label, str(ref), len(ds), str(ds.content_hash), counts)
            continue
        table = recipe_table(spec, label)
        recipe = from_table(Recipe, table, where=f"study `{spec.name}` recipe of `{label}`")
        directory = default_directory(recipe)
        have = read_manifest(directory)["samples"] if (directory / "manifest.json").is_file() else 0
        if have < recipe.samples or (directory / "parts").is_dir():
            log(f"dataset {label}: building {recipe.samples} scenarios in {directory}")
            start = time.perf_counter()
            if backend == "local":
                _build_in_fresh_process(table, directory, workers, progress)
            else:
                build_dataset(recipe, directory, workers=workers, backend=backend, progress=progress)
            log(f"dataset {label}: built in {time.perf_counter() - start:.0f} s")
        else:
            log(f"dataset {label}: cached ({have} scenarios) in {directory}")
        ds = open_dataset(directory, samples=recipe.samples)
        counts = {s: int((ds.statuses == s).sum()) for s in ("feasible", "infeasible", "unknown", "error")}
        refs[label] = DatasetRef(label, str(directory), recipe.samples, str(ds.content_hash), counts)
    return refs


def _build_in_fresh_process(table: dict[str, Any], directory: Path, workers: int | None,
                            progress: bool) -> None:
    """Build one dataset in a newly spawned interpreter.

    The build forks its labelling workers. Forked from this process (threads of torch, tqdm and
    earlier pools alive), a second build's workers hung here for good on a lock copied in the
    held state (case30 then case118, both workers asleep on a futex, 2 s of CPU in 5 min). A
    fresh interpreter that does nothing but the build forks cleanly.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        pool.submit(_build_job, table, str(directory), workers, progress).result()


def _build_job(table: dict[str, Any], directory: str, workers: int | None, progress: bool) -> None:
    from gridtune.grids.build import build_dataset
    from gridtune.grids.recipe import Recipe
    from gridtune.specs import from_table

    recipe = from_table(Recipe, table, where="study recipe")
    build_dataset(recipe, Path(directory), workers=workers, backend="local", progress=progress)


_DATA_CACHE: dict[tuple[str, int], Any] = {}


def _open(ref: DatasetRef) -> Any:
    """The dataset of `ref`, opened once per process (workers run many cells on one target)."""
    from gridtune.grids.dataset import open_dataset

    key = (ref.directory, ref.samples)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = open_dataset(ref.directory, samples=ref.samples)
    return _DATA_CACHE[key]


# ---- pre-training ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PretrainJob:
    source: DatasetRef
    task: str
    out_dir: str
    settings: dict[str, Any]  # PretrainSpec fields
    fingerprint: str
    threads: int


def pretrain_fingerprint(spec: StudySpec, source: DatasetRef) -> str:
    blob = json.dumps({"task": spec.task, "pretrain": dataclasses.asdict(spec.pretrain),
                       "data": source.content_hash}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _pretrain_job(job: PretrainJob) -> dict[str, Any]:
    """Worker: pre-train one source; returns {"ok": bool, "error", "metrics"} (never raises)."""
    start = time.perf_counter()
    try:
        from gridtune.nn.pretrain import pretrain

        metrics = pretrain(_open(job.source), task=job.task, out_dir=job.out_dir,
                           threads=job.threads, **job.settings)
        done = {"ok": True, "fingerprint": job.fingerprint, "wall_time_s": time.perf_counter() - start,
                "test": metrics.get("test", {}).get("model")}
    except Exception as exc:  # recorded; the source's cells fail with this reason
        done = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(), "wall_time_s": time.perf_counter() - start}
    write_json(Path(job.out_dir) / "pretrain.json", done)
    return done


def pretrain_sources(spec: StudySpec, datasets: dict[str, DatasetRef], out_dir: Path, sources: list[str],
                     *, workers: int, backend: str, log: Log) -> dict[str, tuple[str | None, str | None]]:
    """Pre-train each source once (reused when its data and settings are unchanged).

    Returns {source: (checkpoint directory or None, error or None)}.
    """
    from gridtune.parallel import run_tasks

    result: dict[str, tuple[str | None, str | None]] = {}
    jobs = []
    for source in sources:
        ref = datasets[source]
        directory = out_dir / "pretrain" / source
        fp = pretrain_fingerprint(spec, ref)
        done_path = directory / "pretrain.json"
        if done_path.is_file():
            done = json.loads(done_path.read_text())
            if done.get("ok") and done.get("fingerprint") == fp:
                log(f"pretrain {source}: reusing {directory}")
                result[source] = (str(directory), None)
                continue
        jobs.append(PretrainJob(ref, spec.task, str(directory), dataclasses.asdict(spec.pretrain),
                                fp, threads=_threads(workers, len(sources))))
    if jobs:
        log(f"pretrain: {len(jobs)} source(s) ({', '.join(j.source.label for j in jobs)})")
    for i, done in run_tasks(_pretrain_job, jobs, workers=min(workers, max(1, len(jobs))),
                             backend=backend):
        source = jobs[i].source.label
        if done["ok"]:
            log(f"pretrain {source}: done in {done['wall_time_s']:.0f} s")
            result[source] = (jobs[i].out_dir, None)
        else:
            log(f"pretrain {source}: FAILED: {done['error']}")
            result[source] = (None, done["error"])
    return result


def _threads(workers: int, parallel_tasks: int) -> int:
    """Torch threads per task: one. Measured here (2 cores shared with other jobs, load ~10):
    4 pre-training epochs on 240 case14 graphs took 3.1-6.6 s with one intra-op thread and
    34.8 s with two (threads wait on contended cores); parallel tasks already use the cores."""
    del workers, parallel_tasks
    return 1


# ---- one cell ----------------------------------------------------------------------------------

def run_cell(job: CellJob) -> dict[str, Any]:
    """Worker: fine-tune one cell; returns its record (status `ok` or `failed`; never raises)."""
    from gridtune.nn.pretrain import torch_threads

    cell = job.cell
    record: dict[str, Any] = {"cell_id": cell.cell_id, "cell": cell.to_dict(),
                              "fingerprint": job.fingerprint}
    start = time.perf_counter()
    try:
        if job.checkpoint is None:
            raise RuntimeError(f"pre-training on source `{cell.source}` failed: {job.source_error}")
        with torch_threads(job.threads):
            record.update(_fine_tune(job))
        record["status"] = "ok"
    except Exception as exc:  # one failing cell must not stop the study
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc())
    record.setdefault("wall_time_s", time.perf_counter() - start)
    record["finished_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return record


def _fine_tune(job: CellJob) -> dict[str, Any]:
    """Call the fine-tuning entry point and keep what the results table and plots need."""
    from gridtune.finetune.api import finetune
    from gridtune.finetune.trainer import TrainConfig

    cell = job.cell
    data = _open(job.target)
    config = TrainConfig(seed=cell.seed, **job.train)
    raw = finetune(Path(job.checkpoint), data, labels=cell.labels, strategy=cell.strategy,
                   seed=cell.seed, unlabeled=job.unlabeled, out_dir=Path(job.out_dir),
                   constraints=Path(cell.constraint_path) if cell.constraint_path else None,
                   formulation=cell.formulation if cell.constraint_path else "lagrangian",
                   with_scratch=cell.with_scratch, train_config=config, threads=job.threads)
    record = normalise_result(raw)
    record.update(_diagnostics(job, data))
    return record


def normalise_result(raw: dict[str, Any]) -> dict[str, Any]:
    """The fine-tuning result (`gridtune.finetune.api.finetune`) -> the record fields the store
    and plots read: scalar test metrics, scratch metrics, constraint violations (test split)."""
    out: dict[str, Any] = {
        "metrics": _scalars(raw.get("metrics") or {}),
        "trainable_params": raw.get("trainable_params"),
        "wall_time_s": raw.get("wall_time_s"),
        "epochs_run": raw.get("epochs_run"),
    }
    scratch = raw.get("scratch")
    if scratch:
        out["scratch"] = _scalars(scratch.get("metrics") or {})
    constraints = raw.get("constraints")
    if constraints:
        out["violations"] = {name: _scalars(v) for name, v in (constraints.get("test") or {}).items()}
    return out


def _diagnostics(job: CellJob, data: Any) -> dict[str, Any]:
    """What the report needs beyond the metrics, from the fine-tuned checkpoint on the target
    test split (the split `finetune` used): a reliability table (feasibility), the violations
    of every constraint set of the study for unconstrained cells ("before" in the violation
    plot), and the multiplier trajectories a constrained fit logged."""
    out: dict[str, Any] = {}
    cell = job.cell
    history = Path(job.out_dir) / "constraint_history.json"
    if history.is_file():
        rows = json.loads(history.read_text()).get("history") or []
        names = sorted({k.split("/")[0] for r in rows for k in r if k.endswith("/multiplier")})
        if names:
            out["multiplier_steps"] = [r.get("step") for r in rows]
            out["multipliers"] = {n: [r.get(f"{n}/multiplier") for r in rows] for n in names}
    needs_reliability = job.task == "feasibility"
    needs_before = cell.constraint == "none" and bool(job.constraint_sets)
    if not (needs_reliability or needs_before):
        return out
    from gridtune.finetune.api import load_finetuned
    from gridtune.finetune.trainer import make_loader
    from gridtune.nn.pretrain import resolve_data, split_indices, task_graphs

    model, _ = load_finetuned(job.out_dir)
    view = resolve_data(data)
    _, _, te_idx = split_indices(view.statuses, cell.seed)
    test = task_graphs([view.graphs[i] for i in te_idx], job.task)
    if needs_reliability:
        from gridtune.evaluation.metrics import reliability_table
        from gridtune.finetune.trainer import predict
        from gridtune.nn.tasks import make_task

        task = make_task("feasibility")
        logits, y = predict(model, make_loader(test, 256, shuffle=False), task)
        out["reliability"] = reliability_table(torch_sigmoid(logits), y.double().numpy())
    if needs_before:
        from gridtune.constraints.api import constraint_report

        out["violations_by_set"] = {
            label: {n: _scalars(v) for n, v in constraint_report(
                model, make_loader(test, 256, shuffle=False), path, job.task).items()}
            for label, path in job.constraint_sets}
    return out


def torch_sigmoid(logits: Any) -> Any:
    import torch

    return torch.sigmoid(logits.double()).numpy()


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """Numeric entries only (nested reports and `undefined` reasons stay in the cell directory)."""
    return {k: (float(v) if v is not None else None) for k, v in metrics.items()
            if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}


# ---- the study ---------------------------------------------------------------------------------

def run_study(spec: StudySpec, out_dir: str | Path, *, workers: int | None = None,
              backend: str = "local", log: Log = print, progress: bool = True,
              report: bool = True) -> StudyOutcome:
    """Run every cell of `spec` not already finished in `out_dir`, then write the report.

    Args:
        spec: a validated study (`load_study`).
        out_dir: the study directory (created; reused on resume).
        workers: parallel processes for labelling, pre-training and cells (default: all cores).
        backend: `"local"` or `"ray"` (see `gridtune.parallel`).
        log: where progress lines go.
        progress: show progress bars while labelling.
        report: write plots, report.md and report.html at the end.
    """
    from gridtune.parallel import check_backend, check_workers, run_tasks
    from gridtune.studies.report import summary_text, write_report

    start = time.perf_counter()
    backend = check_backend(backend)
    workers = check_workers(workers)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cells = expand(spec)
    store = ResultsStore(out)
    write_json(out / "study.json", {
        "spec": spec.to_dict(), "headline": list(spec.headline), "gridtune_version": __version__,
        "started_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cells": [c.cell_id for c in cells],
        "recipes": {label: recipe_table(spec, label) for label in spec.grid_refs()},
    })
    log(f"study {spec.name}: {len(cells)} cells -> {out}")
    datasets = prepare_datasets(spec, workers=workers, backend=backend, log=log, progress=progress)
    write_json(out / "datasets.json", {k: dataclasses.asdict(v) for k, v in datasets.items()})
    hashes = {k: v.content_hash for k, v in datasets.items()}
    prints = {c.cell_id: fingerprint(spec, c, hashes) for c in cells}
    todo = [c for c in cells if not store.is_finished(c.cell_id, prints[c.cell_id])]
    skipped = len(cells) - len(todo)
    if skipped:
        log(f"resume: {skipped} finished cell(s) skipped, {len(todo)} to run")
    sources = list(dict.fromkeys(c.source for c in todo))
    checkpoints = pretrain_sources(spec, datasets, out, sources, workers=workers, backend=backend,
                                   log=log)
    csets = tuple((Path(r).stem, str(spec.constraint_path(r))) for r in spec.constraints)
    threads = _threads(workers, len(todo))
    jobs = [CellJob(c, prints[c.cell_id], spec.task, spec.unlabeled, checkpoints[c.source][0],
                    checkpoints[c.source][1], datasets[c.target], str(store.cell_dir(c.cell_id)),
                    csets, threads, dataclasses.asdict(spec.finetune)) for c in todo]
    failed = 0
    for n, (_, record) in enumerate(run_tasks(run_cell, jobs, workers=min(workers, max(1, len(jobs))),
                                              backend=backend), start=1):
        store.save(record)
        store.write_csv(spec.headline, [c.cell_id for c in cells])
        status = record["status"]
        failed += status == "failed"
        detail = (f"{spec.headline[0]}={record['metrics'].get(spec.headline[0])}"
                  if status == "ok" else record["error"].splitlines()[0])
        log(f"[{n}/{len(jobs)}] {record['cell_id']}: {status} ({detail}, "
            f"{record.get('wall_time_s') or 0:.0f} s)")
    store.write_csv(spec.headline, [c.cell_id for c in cells])
    md = page = None
    if report:
        md, page = write_report(out)
    summary = summary_text(store.read_csv(), spec.headline)
    return StudyOutcome(out, len(cells), len(jobs), skipped, failed, md, page, summary,
                        time.perf_counter() - start)
