"""The results store of a study directory: one JSON per finished or failed cell, and results.csv.

Layout of a study directory:

    study.json          the spec, the resolved plan (recipes, configs, cells), the gridtune version
    datasets.json       per grid: dataset directory, content hash, counts
    pretrain/<source>/  the source checkpoint, its metrics, and pretrain.json (status, fingerprint)
    cells/<cell_id>/    what fine-tuning wrote for a cell
    results/<cell_id>.json  one record per cell (status ok / failed, metrics, error)
    federated/<cell_id>.json  one record per federated cell (per-site metrics, epsilon)
    results.csv         one row per cell, rebuilt from the records after every cell
    plots/*.png, report.md, report.html
    checksums.json      size and SHA-256 of study.json, datasets.json, every pretrain.json,
                        record and results.csv (updated as each is written)

The runner writes here and the report reads only from here. Only the parent process writes the
records (workers return them), and every write is atomic (temporary file, fsync, rename), so an
interrupted study never leaves a half-written record. A record that does not match its seal
(truncated, edited, bit-flipped) is never read: its cell runs again, and the runner says so.
Checkpoints under pretrain/ and cells/ carry their own seals (`gridtune.nn.checkpoint`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from gridtune.errors import DataError
from gridtune.files import (
    Damage,
    atomic_write_text,
    check_file,
    check_sealed,
    damage_message,
    read_checksums,
    seal,
    write_json,
)

KEY_COLUMNS = ("source", "target", "strategy", "labels", "seed", "constraint", "formulation")
STATUSES = ("ok", "failed")
RERUN = "rerun `gridtune study run SPEC --out DIR` to run the damaged part again"


class ResultsStore:
    """Records of a study directory (see module docstring).

    Args:
        root: the study output directory (created when missing).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.results_dir = self.root / "results"

    # ---- the study, its datasets and pre-training ----------------------------------------

    def write_study(self, study: dict[str, Any]) -> Path:
        return _write(self.root / "study.json", study, self.root)

    def read_study(self) -> dict[str, Any]:
        path = self.root / "study.json"
        if not path.is_file():
            raise DataError(f"`{self.root}` is not a study directory (no study.json); run "
                            f"`gridtune study run SPEC --out {self.root}` first")
        try:
            return self._read(path)
        except (ValueError, OSError) as exc:
            raise DataError(f"study `{self.root}`: `{path}` is damaged ({exc}); rerun "
                            f"`gridtune study run SPEC --out {self.root}`") from None

    def write_datasets(self, datasets: dict[str, Any]) -> Path:
        return _write(self.root / "datasets.json", datasets, self.root)

    def read_datasets(self) -> dict[str, Any]:
        path = self.root / "datasets.json"
        try:
            return self._read(path) or {}
        except (ValueError, OSError) as exc:
            raise DataError(f"study `{self.root}`: {exc}; {RERUN}") from None

    def pretrain_dir(self, source: str) -> Path:
        return self.root / "pretrain" / source

    def save_pretrain(self, source: str, done: dict[str, Any]) -> Path:
        """The outcome of pre-training on `source` (`ok`, `fingerprint`, `error`, `test`)."""
        return _write(self.pretrain_dir(source) / "pretrain.json", done, self.root)

    def pretrain_record(self, source: str) -> dict[str, Any] | None:
        try:
            return self._read(self.pretrain_dir(source) / "pretrain.json")
        except (ValueError, OSError):
            return None

    def pretrain_records(self) -> dict[str, dict[str, Any]]:
        """{source: pre-training outcome} of every source pre-trained in this directory."""
        out = {}
        for path in sorted((self.root / "pretrain").glob("*/pretrain.json")):
            rec = self.pretrain_record(path.parent.name)
            if rec is not None:
                out[path.parent.name] = rec
        return out

    # ---- federated cells -----------------------------------------------------------------

    def federated_path(self, cell_id: str) -> Path:
        return self.root / "federated" / f"{cell_id}.json"

    def load_federated(self, cell_id: str) -> dict[str, Any] | None:
        """The stored record of a federated cell, or None; an unreadable record counts as missing."""
        try:
            return self._read(self.federated_path(cell_id))
        except (ValueError, OSError):
            return None

    def save_federated(self, record: dict[str, Any]) -> Path:
        if record.get("status") not in STATUSES:
            raise DataError(f"federated record status `{record.get('status')}`; valid: ok, failed")
        return _write(self.federated_path(record["cell_id"]), record, self.root)

    def federated_finished(self, cell_id: str, fingerprint: str) -> bool:
        rec = self.load_federated(cell_id)
        return rec is not None and rec.get("status") == "ok" and rec.get("fingerprint") == fingerprint

    def federated_records(self, cell_ids: list[str]) -> list[dict[str, Any]]:
        return [r for r in (self.load_federated(c) for c in cell_ids) if r is not None]

    # ---- cells ---------------------------------------------------------------------------

    def record_path(self, cell_id: str) -> Path:
        return self.results_dir / f"{cell_id}.json"

    def cell_dir(self, cell_id: str) -> Path:
        return self.root / "cells" / cell_id

    def load(self, cell_id: str) -> dict[str, Any] | None:
        """The stored record of a cell, or None; an unreadable record counts as missing."""
        try:
            return self._read(self.record_path(cell_id))
        except (ValueError, OSError):
            return None

    def damage(self, path: Path) -> Damage | None:
        """What is wrong with one file of the store (None: whole, or never written)."""
        if not path.is_file():
            return None
        rel = path.relative_to(self.root).as_posix()
        sealed = (read_checksums(self.root) or {}).get(rel)
        found = check_file(self.root, rel, sealed, deep=True, remedy=RERUN)
        if found is not None:
            return found
        try:
            obj = json.loads(path.read_text())
        except (ValueError, OSError) as exc:
            return Damage(path, f"is unreadable ({str(exc).splitlines()[0]})", RERUN)
        return None if isinstance(obj, dict) else Damage(path, "is not a JSON object", RERUN)

    def _read(self, path: Path) -> dict[str, Any] | None:
        """A JSON file of the store, checked against its seal; None when never written;
        ValueError when damaged."""
        if not path.is_file():
            return None
        found = self.damage(path)
        if found is not None:
            raise ValueError(f"`{found.path}` {found.problem}")
        return json.loads(path.read_text())

    def is_finished(self, cell_id: str, fingerprint: str) -> bool:
        """Finished means: recorded `ok` with the same fingerprint. Failed cells run again."""
        rec = self.load(cell_id)
        return rec is not None and rec.get("status") == "ok" and rec.get("fingerprint") == fingerprint

    def save(self, record: dict[str, Any]) -> Path:
        if record.get("status") not in STATUSES:
            raise DataError(f"cell record status `{record.get('status')}`; valid: ok, failed")
        return _write(self.record_path(record["cell_id"]), record, self.root)

    def records(self, cell_ids: list[str] | None = None) -> list[dict[str, Any]]:
        """Stored records, in `cell_ids` order when given (missing ones skipped), else by name."""
        if cell_ids is None:
            paths = sorted(self.results_dir.glob("*.json")) if self.results_dir.is_dir() else []
            cell_ids = [p.stem for p in paths]
        out = []
        for cid in cell_ids:
            rec = self.load(cid)
            if rec is not None:
                out.append(rec)
        return out

    def write_csv(self, headline: tuple[str, bool], cell_ids: list[str] | None = None) -> Path:
        frame = results_frame(self.records(cell_ids), headline)
        path = self.root / "results.csv"
        atomic_write_text(path, frame.to_csv(index=False))
        seal(self.root, [path.name])
        return path

    def read_csv(self) -> pd.DataFrame:
        path = self.root / "results.csv"
        if not path.is_file():
            raise DataError(f"`{self.root}` holds no results.csv; run `gridtune study run SPEC "
                            f"--out {self.root}` first")
        found = check_file(self.root, path.name, (read_checksums(self.root) or {}).get(path.name),
                           deep=True, remedy=RERUN)
        if found is not None:
            raise DataError(damage_message(f"study `{self.root}`", [found]))
        return pd.read_csv(path)

    def check(self, *, deep: bool = True) -> list[Damage]:
        """Every damaged file of the store: the seal's files, and every JSON file it holds."""
        damages = check_sealed(self.root, deep=deep, remedy=RERUN)
        named = {d.path for d in damages}
        for path in [self.root / "study.json", self.root / "datasets.json",
                     *sorted(self.root.glob("pretrain/*/pretrain.json")),
                     *(sorted(self.results_dir.glob("*.json")) if self.results_dir.is_dir() else []),
                     *sorted(self.root.glob("federated/*.json"))]:
            if path not in named:
                found = self.damage(path)
                if found is not None:
                    damages.append(found)
        return damages


def results_frame(records: list[dict[str, Any]], headline: tuple[str, bool]) -> pd.DataFrame:
    """One row per cell: keys, status, every metric, scratch metrics, transfer gain, test-split
    size, AC-OPF solver time of the labels, wall time.

    `transfer_gain` is the headline metric minus scratch's (sign flipped for lower-is-better
    metrics, so a positive gain always means transfer helped). A cell without its own scratch
    metrics borrows those of its scratch group (same target, labels, seed, constraint,
    formulation); without any, the gain is empty.
    """
    metric, higher = headline
    scratch_by_group: dict[tuple, dict[str, float]] = {}
    for rec in records:
        if rec.get("status") == "ok" and rec.get("scratch"):
            scratch_by_group.setdefault(_group(rec["cell"]), rec["scratch"])
    rows = []
    metric_names: list[str] = []
    for rec in records:
        cell = rec["cell"]
        row: dict[str, Any] = {"cell_id": rec["cell_id"], **{k: cell[k] for k in KEY_COLUMNS},
                               "status": rec["status"]}
        metrics = rec.get("metrics") or {}
        for k, v in metrics.items():
            if k not in metric_names:
                metric_names.append(k)
            row[k] = v
        scratch = rec.get("scratch") or scratch_by_group.get(_group(cell)) or {}
        for k, v in scratch.items():
            row[f"scratch_{k}"] = v
        value, base = metrics.get(metric), scratch.get(metric)
        if value is not None and base is not None:
            row["transfer_gain"] = (value - base) if higher else (base - value)
        viol = rec.get("violations") or {}
        if viol:
            row["violation_rate"] = max(v.get("violation_rate", float("nan")) for v in viol.values())
            row["max_violation"] = max(v.get("max_violation", float("nan")) for v in viol.values())
        row["n_test"] = rec.get("n_test")
        row["label_solver_time_s"] = rec.get("label_solver_time_s")
        row["trainable_parameters"] = rec.get("trainable_parameters")
        row["epochs_run"] = rec.get("epochs_run")
        row["train_wall_time_s"] = rec.get("train_wall_time_s")
        row["wall_time_s"] = rec.get("wall_time_s")
        row["error"] = rec.get("error")
        rows.append(row)
    ordered = [metric] + [m for m in metric_names if m != metric]
    columns = (["cell_id", *KEY_COLUMNS, "status"] + ordered + [f"scratch_{m}" for m in ordered]
               + ["transfer_gain", "violation_rate", "max_violation", "n_test",
                  "label_solver_time_s", "trainable_parameters", "epochs_run", "train_wall_time_s",
                  "wall_time_s",
                  "error"])
    frame = pd.DataFrame(rows)
    for c in columns:
        if c not in frame.columns:
            frame[c] = None
    extra = [c for c in frame.columns if c not in columns]  # scratch metrics without a cell metric
    return frame[columns + extra]


def _write(path: Path, obj: Any, root: Path) -> Path:
    write_json(path, obj)
    seal(root, [path.relative_to(root).as_posix()])
    return path


def verify_study(root: str | Path, *, data: bool = True) -> int:
    """Check a study directory: its store against the seal, every pre-trained and fine-tuned
    checkpoint against its own, and (with `data`) every dataset it used. Returns how many files
    were checked; raises `DataError` / `CheckpointError` with one line naming the damage.
    """
    from gridtune.nn.checkpoint import CONFIG, verify_checkpoint

    store = ResultsStore(root)
    study = store.read_study()  # not a study directory -> one line saying so
    damages = store.check()
    if damages:
        raise DataError(damage_message(f"study `{store.root}`", damages))
    checked = len(read_checksums(store.root) or {})
    federated = {store.cell_dir(c) for c in (study or {}).get("federated_cells") or {}}
    for ckpt in sorted({p.parent for p in store.root.glob("*/*/" + CONFIG)} - federated):
        checked += verify_checkpoint(ckpt)
    for cell in sorted(store.root.glob("cells/*/checksums.json")):
        # a cell without a checkpoint (results only), or a federated cell (its spec and results)
        if not (cell.parent / CONFIG).is_file() or cell.parent in federated:
            found = check_sealed(cell.parent, remedy=RERUN)
            if found:
                raise DataError(damage_message(f"study `{store.root}`", found))
            checked += len(read_checksums(cell.parent) or {})
    if data:
        from gridtune.grids.storage import verify_dataset

        for ref in store.read_datasets().values():
            if isinstance(ref, dict) and ref.get("directory"):
                checked += verify_dataset(ref["directory"])
    return checked


def _group(cell: dict[str, Any]) -> tuple:
    return (cell["target"], cell["labels"], cell["seed"], cell["constraint"], cell["formulation"])
