"""The results store of a study directory: one JSON per finished or failed cell, and results.csv.

Layout of a study directory:

    study.json          the fully resolved spec, the gridtune version, the cells
    datasets.json       per grid: dataset directory, content hash, counts
    pretrain/<source>/  the source checkpoint and its metrics
    cells/<cell_id>/    what fine-tuning wrote for a cell
    results/<cell_id>.json  one record per cell (status ok / failed, metrics, error)
    results.csv         one row per cell, rebuilt from the records after every cell
    plots/*.png, report.md, report.html

Only the parent process writes here (workers return records), and every write is atomic
(temporary file + rename), so an interrupted study never leaves a half-written record.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from gridtune.errors import DataError

KEY_COLUMNS = ("source", "target", "strategy", "labels", "seed", "constraint", "formulation")
STATUSES = ("ok", "failed")


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so readers see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def _jsonable(obj: Any) -> Any:
    """NaN / inf become null (strict JSON); numpy scalars and arrays become Python values."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


class ResultsStore:
    """Records of a study directory (see module docstring).

    Args:
        root: the study output directory (created when missing).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.results_dir = self.root / "results"

    def record_path(self, cell_id: str) -> Path:
        return self.results_dir / f"{cell_id}.json"

    def cell_dir(self, cell_id: str) -> Path:
        return self.root / "cells" / cell_id

    def load(self, cell_id: str) -> dict[str, Any] | None:
        """The stored record of a cell, or None; an unreadable record counts as missing."""
        path = self.record_path(cell_id)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None

    def is_finished(self, cell_id: str, fingerprint: str) -> bool:
        """Finished means: recorded `ok` with the same fingerprint. Failed cells run again."""
        rec = self.load(cell_id)
        return rec is not None and rec.get("status") == "ok" and rec.get("fingerprint") == fingerprint

    def save(self, record: dict[str, Any]) -> Path:
        if record.get("status") not in STATUSES:
            raise DataError(f"cell record status `{record.get('status')}`; valid: ok, failed")
        path = self.record_path(record["cell_id"])
        write_json(path, record)
        return path

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
        return path

    def read_csv(self) -> pd.DataFrame:
        path = self.root / "results.csv"
        if not path.is_file():
            raise DataError(f"`{self.root}` holds no results.csv; run `gridtune study SPEC --out "
                            f"{self.root}` first")
        return pd.read_csv(path)


def results_frame(records: list[dict[str, Any]], headline: tuple[str, bool]) -> pd.DataFrame:
    """One row per cell: keys, status, every metric, scratch metrics, transfer gain, wall time.

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
        row["trainable_params"] = rec.get("trainable_params")
        row["wall_time_s"] = rec.get("wall_time_s")
        row["error"] = rec.get("error")
        rows.append(row)
    ordered = [metric] + [m for m in metric_names if m != metric]
    columns = (["cell_id", *KEY_COLUMNS, "status"] + ordered + [f"scratch_{m}" for m in ordered]
               + ["transfer_gain", "violation_rate", "max_violation", "trainable_params",
                  "wall_time_s", "error"])
    frame = pd.DataFrame(rows)
    for c in columns:
        if c not in frame.columns:
            frame[c] = None
    extra = [c for c in frame.columns if c not in columns]  # scratch metrics without a cell metric
    return frame[columns + extra]


def _group(cell: dict[str, Any]) -> tuple:
    return (cell["target"], cell["labels"], cell["seed"], cell["constraint"], cell["formulation"])
