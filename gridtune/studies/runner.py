"""Run a study plan: datasets -> one pre-training per source -> every cell, in parallel ->
federated cells (`gridtune.studies.federated_cells`), one at a time -> report.

    outcome = run_study(load_study("quickstart"), Path("runs/quickstart"))
    outcome = run_plan(make_plan(spec), Path("runs/quickstart"))      # the same, plan made first

The runner executes a `StudyPlan` (`gridtune.studies.plan`) and nothing else: it never reads the
spec. Resumable at every level: datasets come from the cache (keyed by recipe content), a source
is pre-trained again only when its data or settings changed, and a cell runs only when it has no
`ok` record with the current fingerprint (the plan's, bound to the datasets' content hashes). A
cell that raises is recorded as failed with its error and traceback; the other cells go on.
Workers return records and the parent process writes them to the store, one at a time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gridtune import __version__
from gridtune.studies.plan import Cell, DatasetPlan, PretrainPlan, StudyPlan, bind
from gridtune.studies.store import ResultsStore

Log = Callable[[str], None]
STATUSES = ("feasible", "infeasible", "unknown", "error")


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
    config: Any  # TransferConfig
    checkpoint: str | None
    source_error: str | None
    target: DatasetRef
    out_dir: str
    report_sets: tuple[tuple[str, str], ...] = ()  # (label, path) of every constraint set
    threads: int = 1


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

def prepare_datasets(datasets: tuple[DatasetPlan, ...], *, workers: int | None, backend: str,
                     log: Log, progress: bool = True) -> dict[str, DatasetRef]:
    """Build (or reuse from the cache) every source and target dataset of the plan."""
    from gridtune.grids.dataset import open_dataset
    from gridtune.grids.recipe import recipe_for
    from gridtune.grids.storage import needs_build, read_manifest

    refs: dict[str, DatasetRef] = {}
    for d in datasets:
        directory = Path(d.directory)
        if d.prebuilt:
            log(f"dataset {d.label}: using {directory} ({d.samples} scenarios)")
        else:
            if needs_build(directory, d.samples):
                log(f"dataset {d.label}: building {d.samples} scenarios in {directory}")
                start = time.perf_counter()
                source = recipe_for(d.ref).source  # names a changed grid after its recipe file
                if backend == "local":
                    _build_in_fresh_process(d.recipe, directory, workers, progress, source)
                else:
                    _build_job(d.recipe, str(directory), workers, progress, backend, source)
                log(f"dataset {d.label}: built in {time.perf_counter() - start:.0f} s")
            else:
                log(f"dataset {d.label}: cached ({read_manifest(directory)['samples']} scenarios) "
                    f"in {directory}")
        ds = open_dataset(directory, samples=d.samples)
        counts = {s: int((ds.statuses == s).sum()) for s in STATUSES}
        refs[d.label] = DatasetRef(d.label, str(directory), len(ds), str(ds.content_hash), counts)
    return refs


def _build_in_fresh_process(table: dict[str, Any], directory: Path, workers: int | None,
                            progress: bool, source: str | None = None) -> None:
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
        pool.submit(_build_job, table, str(directory), workers, progress, "local", source).result()


def _build_job(table: dict[str, Any], directory: str, workers: int | None, progress: bool,
               backend: str = "local", source: str | None = None) -> None:
    """Build the dataset of recipe `table`; `source` is the recipe file it was read from (the
    table does not hold it), which names a changed grid as `gridtune data build FILE` does."""
    from gridtune.grids.build import build_dataset
    from gridtune.grids.recipe import Recipe
    from gridtune.specs import from_table

    recipe = dataclasses.replace(from_table(Recipe, table, where="study recipe"), source=source)
    build_dataset(recipe, Path(directory), workers=workers, backend=backend, progress=progress)


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
    label: str
    sources: tuple[DatasetRef, ...]  # one grid, or a source set's members
    config: Any  # PretrainConfig
    out_dir: str
    fingerprint: str
    threads: int


def source_hash(plan: PretrainPlan, datasets: dict[str, DatasetRef]) -> str:
    """The content hash of what a source pre-trains on (its grids' hashes, joined, for a set)."""
    return "+".join(datasets[m].content_hash for m in plan.members)


def _pretrain_job(job: PretrainJob) -> dict[str, Any]:
    """Worker: pre-train one source; returns {"ok": bool, "error", "test"} (never raises)."""
    start = time.perf_counter()
    try:
        from gridtune.grids.dataset import open_dataset
        from gridtune.workflows.pretrain import pretrain

        data = (_open(job.sources[0]) if len(job.sources) == 1 else
                [open_dataset(r.directory, samples=r.samples) for r in job.sources])
        result = pretrain(data, job.out_dir, job.config, threads=job.threads)
        return {"ok": True, "fingerprint": job.fingerprint,
                "wall_time_s": time.perf_counter() - start, "test": result.test.get("model"),
                "epochs_run": result.epochs_run}
    except Exception as exc:  # recorded; the source's cells fail with this reason
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(), "wall_time_s": time.perf_counter() - start}


def pretrain_sources(plans: list[PretrainPlan], datasets: dict[str, DatasetRef],
                     store: ResultsStore, *, workers: int, backend: str, log: Log
                     ) -> dict[str, tuple[str | None, str | None]]:
    """Pre-train each source once (reused when its data and settings are unchanged).

    Returns {source: (checkpoint directory or None, error or None)}.
    """
    from gridtune.parallel import run_tasks

    result: dict[str, tuple[str | None, str | None]] = {}
    jobs = []
    for p in plans:
        directory = store.pretrain_dir(p.source)
        fp = bind(p.fingerprint, source_hash(p, datasets))
        damaged = store.damage(directory / "pretrain.json")
        if damaged is not None:
            log(f"pretrain {p.source}: `{damaged.path}` {damaged.problem}; pre-training again")
        done = store.pretrain_record(p.source)
        if done and done.get("ok") and done.get("fingerprint") == fp and not _damaged_checkpoint(
                directory, p.source, log):
            log(f"pretrain {p.source}: reusing {directory}")
            result[p.source] = (str(directory), None)
            continue
        jobs.append(PretrainJob(p.source, tuple(datasets[m] for m in p.members), p.config,
                                str(directory), fp, threads=_threads()))
    if jobs:
        log(f"pretrain: {len(jobs)} source(s) ({', '.join(j.label for j in jobs)})")
    for i, done in run_tasks(_pretrain_job, jobs, workers=min(workers, max(1, len(jobs))),
                             backend=backend, on_lost=_lost_pretrain):
        source = jobs[i].label
        store.save_pretrain(source, done)
        if done["ok"]:
            log(f"pretrain {source}: done in {done['wall_time_s']:.0f} s")
            result[source] = (jobs[i].out_dir, None)
        else:
            log(f"pretrain {source}: FAILED: {done['error']}")
            result[source] = (None, done["error"])
    return result


def _damaged_checkpoint(directory: Path, source: str, log: Log) -> bool:
    """True (and said) when the source's checkpoint does not match its seal."""
    from gridtune.errors import CheckpointError
    from gridtune.nn.checkpoint import verify_checkpoint

    try:
        verify_checkpoint(directory)
    except CheckpointError as exc:
        log(f"pretrain {source}: {exc}; pre-training again")
        return True
    return False


def _threads() -> int:
    """Torch threads per task: one. Measured here (2 cores shared with other jobs, load ~10):
    4 pre-training epochs on 240 case14 graphs took 3.1-6.6 s with one intra-op thread and
    34.8 s with two (threads wait on contended cores); parallel tasks already use the cores."""
    return 1


# ---- one cell ----------------------------------------------------------------------------------

def run_cell(job: CellJob) -> dict[str, Any]:
    """Worker: fine-tune one cell; returns its record (status `ok` or `failed`; never raises)."""
    cell = job.cell
    record: dict[str, Any] = {"cell_id": cell.cell_id, "cell": cell.to_dict(),
                              "fingerprint": job.fingerprint}
    start = time.perf_counter()
    try:
        if job.checkpoint is None:
            raise RuntimeError(f"pre-training on source `{cell.source}` failed: {job.source_error}")
        record.update(_fine_tune(job))
        record["status"] = "ok"
    except Exception as exc:  # one failing cell must not stop the study
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc())
    record.setdefault("wall_time_s", time.perf_counter() - start)
    record["finished_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return record


def lost_cell(job: CellJob, reason: str) -> dict[str, Any]:
    """The record of a cell whose worker process died under it: failed, with the reason (a
    rerun of the study runs failed cells again)."""
    return {"cell_id": job.cell.cell_id, "cell": job.cell.to_dict(), "fingerprint": job.fingerprint,
            "status": "failed", "error": f"WorkerLost: {reason}",
            "finished_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


def _lost_pretrain(job: PretrainJob, reason: str) -> dict[str, Any]:
    return {"ok": False, "error": f"WorkerLost: {reason}", "wall_time_s": 0.0}


def replay_sources(cell: Any, plan: StudyPlan, datasets: dict[str, DatasetRef]) -> Any:
    """The cell's `TransferConfig`; a `replay` cell's also names the source's dataset
    directories (each member of a source set) and the scenarios pre-training read from them."""
    from gridtune.core.registry import strategy_class

    if not strategy_class(cell.cell.strategy).needs_source:
        return cell.config
    members = [datasets[m] for m in plan.pretrain_for(cell.cell.source).members]
    counts = {m.samples for m in members}
    return dataclasses.replace(cell.config, source_data=tuple(m.directory for m in members),
                               source_samples=counts.pop() if len(counts) == 1 else None)


def _fine_tune(job: CellJob) -> dict[str, Any]:
    """Run the cell's `TransferConfig` and keep what the store, report and plots need."""
    from gridtune.workflows.transfer import finetune

    result = finetune(Path(job.checkpoint), _open(job.target), Path(job.out_dir), job.config,
                      threads=job.threads)
    record = normalise_result(result.to_dict(), dict((p, label) for label, p in job.report_sets))
    record.update(multipliers(Path(job.out_dir)))
    return record


def normalise_result(raw: dict[str, Any], set_labels: dict[str, str] | None = None
                     ) -> dict[str, Any]:
    """A `FinetuneResult` (as a dict) -> the record fields the store, report and plots read:
    scalar test metrics and scratch metrics, test-split size, label cost, the reliability table
    (feasibility), the violations of the trained constraint set (`violations`) and of every
    reported set by label (`violations_by_set`; `set_labels` maps spec path -> label)."""
    out: dict[str, Any] = {
        "metrics": _scalars(raw.get("metrics") or {}),
        "trainable_parameters": raw.get("trainable_parameters"),
        "wall_time_s": raw.get("wall_time_s"),
        "epochs_run": raw.get("epochs_run"),
        "train_wall_time_s": raw.get("train_wall_time_s"),
        "n_test": raw.get("n_test"),
        "label_solver_time_s": raw.get("label_solver_time_s"),
        "unlabeled_used": raw.get("unlabeled_used"),
    }
    scratch = raw.get("scratch")
    if scratch:
        out["scratch"] = _scalars(scratch.get("metrics") or {})
    if raw.get("reliability"):
        out["reliability"] = raw["reliability"]
    if raw.get("trust"):
        out["trust"] = _scalars(raw["trust"])
    if raw.get("zero_shot"):
        out["zero_shot"] = _scalars(raw["zero_shot"])
    constraints = raw.get("constraints")
    if constraints:
        out["violations"] = {name: _scalars(v) for name, v in (constraints.get("test") or {}).items()}
    labels = set_labels or {}
    if raw.get("violations"):
        out["violations_by_set"] = {
            labels.get(path, Path(path).stem): {n: _scalars(v) for n, v in report.items()}
            for path, report in raw["violations"].items()}
    return out


def multipliers(cell_dir: Path) -> dict[str, Any]:
    """The multiplier trajectories a constrained fit logged (`constraint_history.json`)."""
    history = cell_dir / "constraint_history.json"
    if not history.is_file():
        return {}
    rows = json.loads(history.read_text()).get("history") or []
    names = sorted({k.split("/")[0] for r in rows for k in r if k.endswith("/multiplier")})
    if not names:
        return {}
    return {"multiplier_steps": [r.get("step") for r in rows],
            "multipliers": {n: [r.get(f"{n}/multiplier") for r in rows] for n in names}}


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """Numeric entries only (nested reports and `undefined` reasons stay in the cell directory)."""
    return {k: (float(v) if v is not None else None) for k, v in metrics.items()
            if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}


# ---- the study ---------------------------------------------------------------------------------

def run_study(spec: Any, out_dir: str | Path, *, workers: int | None = None,
              backend: str = "local", log: Log = print, progress: bool = True,
              report: bool = True) -> StudyOutcome:
    """Resolve `spec` into a plan once (`make_plan`) and run it (`run_plan`).

    Args:
        spec: a `StudyPlan`, a validated study (`load_study`), or a spec file / shipped name.
        other arguments: see `run_plan`.
    """
    from gridtune.studies.plan import make_plan
    from gridtune.studies.spec import StudySpec, load_study

    if not isinstance(spec, StudyPlan):
        spec = make_plan(spec if isinstance(spec, StudySpec) else load_study(spec))
    return run_plan(spec, out_dir, workers=workers, backend=backend, log=log, progress=progress,
                    report=report)


def run_plan(plan: StudyPlan, out_dir: str | Path, *, workers: int | None = None,
             backend: str = "local", log: Log = print, progress: bool = True,
             report: bool = True) -> StudyOutcome:
    """Run every cell of `plan` not already finished in `out_dir`, then write the report.

    Args:
        plan: the resolved study (`gridtune.studies.plan.make_plan`).
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
    store = ResultsStore(out)
    store.write_study({**plan.to_dict(), "gridtune_version": __version__,
                       "started_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    log(f"study {plan.name}: {len(plan.cells)} cells -> {out}")
    datasets = prepare_datasets(plan.datasets, workers=workers, backend=backend, log=log,
                                progress=progress)
    store.write_datasets({k: dataclasses.asdict(v) for k, v in datasets.items()})
    prints = {c.cell_id: bind(c.fingerprint, source_hash(plan.pretrain_for(c.cell.source), datasets),
                              datasets[c.cell.target].content_hash) for c in plan.cells}
    for c in plan.cells:
        damaged = store.damage(store.record_path(c.cell_id))
        if damaged is not None:
            log(f"cell {c.cell_id}: record `{damaged.path}` {damaged.problem}; running the cell again")
    todo = [c for c in plan.cells if not store.is_finished(c.cell_id, prints[c.cell_id])]
    skipped = len(plan.cells) - len(todo)
    if skipped:
        log(f"resume: {skipped} finished cell(s) skipped, {len(todo)} to run")
    sources = list(dict.fromkeys(c.cell.source for c in todo))
    checkpoints = pretrain_sources([plan.pretrain_for(s) for s in sources], datasets, store,
                                   workers=workers, backend=backend, log=log)
    jobs = [CellJob(c.cell, prints[c.cell_id], replay_sources(c, plan, datasets), *checkpoints[c.cell.source],
                    datasets[c.cell.target], str(store.cell_dir(c.cell_id)), plan.report_sets,
                    _threads()) for c in todo]
    metric = plan.headline[0]
    failed = 0
    for n, (_, record) in enumerate(run_tasks(run_cell, jobs, workers=min(workers, max(1, len(jobs))),
                                              backend=backend, on_lost=lost_cell), start=1):
        store.save(record)
        store.write_csv(plan.headline, plan.cell_ids)
        status = record["status"]
        failed += status == "failed"
        detail = (f"{metric}={record['metrics'].get(metric)}"
                  if status == "ok" else record["error"].splitlines()[0])
        log(f"[{n}/{len(jobs)}] {record['cell_id']}: {status} ({detail}, "
            f"{record.get('wall_time_s') or 0:.0f} s)")
    store.write_csv(plan.headline, plan.cell_ids)
    fed_ran = fed_skipped = 0
    if plan.federated:
        from gridtune.studies.federated_cells import run_federated_cells

        fed_ran, fed_skipped, fed_failed = run_federated_cells(plan.federated, store, workers=workers,
                                                               log=log)
        failed += fed_failed
    md = page = None
    if report:
        md, page = write_report(out)
    summary = summary_text(store.read_csv(), plan.headline)
    if plan.federated:
        from gridtune.studies.federated_cells import federated_summary

        summary += "\n" + federated_summary(store.federated_records([f.cell_id for f in plan.federated]))
    return StudyOutcome(out, len(plan.cells) + len(plan.federated), len(jobs) + fed_ran,
                        skipped + fed_skipped, failed, md, page, summary, time.perf_counter() - start)
