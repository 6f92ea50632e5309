"""On-disk layout of a dataset directory, and the scenario rows stored in it.

    manifest.json       recipe, hashes, schema version, counts per status, figures
    recipe.json         the resolved recipe and its cache key (written first: claims the folder)
    grid.json           the grid as labelled (after repairs and re-rating): self-contained
    calibration.json    topologies with their critical load scales (and rejected ones, with why)
    parts/part-*.parquet  rows as they finish (a resumed build keeps them)
    scenarios.parquet   all rows, one per scenario, sorted by `scenario_id`, in row groups of
                        `JOIN_ROWS` (joined from the parts batch by batch: a build never holds
                        the whole table)
    checksums.json      size and SHA-256 of the five files above (written last: the seal)

Every file is written atomically (temporary name, fsync, rename; `gridtune.files`), parquet
files carry page CRCs that are checked on every read, and `check_dataset` names a damaged file
(missing, truncated, bit-flipped, or another dataset's) instead of reading it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gridtune.errors import DataError
from gridtune.files import Damage, atomic_path, check_sealed
from gridtune.grids.labels import Label
from gridtune.grids.schema import SCHEMA_VERSION

if TYPE_CHECKING:  # scenarios import pandapower: only the functions that build them need it
    from gridtune.grids.scenarios import Scenario

# The files of a finished dataset, sealed by checksums.json in this order.
DATASET_FILES = ("recipe.json", "grid.json", "calibration.json", "scenarios.parquet",
                 "manifest.json")
READ_FILES = ("manifest.json", "grid.json", "scenarios.parquet")  # what opening a dataset reads
JSON_FILES = ("recipe.json", "grid.json", "calibration.json", "manifest.json")
REBUILD = "rerun `gridtune data build` on this directory to rebuild the damaged part"

LIST_COLUMNS = ("pd_mw", "qd_mvar", "outages", "gen_outages", "cost_scale", "pg_mw", "qg_mvar",
                "vm_pu", "va_degree", "loading_percent", "branch_flow_mva", "dc_pg_mw", "dc_va_degree")

# Rows per batch of the final join and per row group of scenarios.parquet: what a build holds
# at once (about 8 KiB a row on case118), whatever the number of scenarios.
JOIN_ROWS = 256

# Columns that define a dataset's content (solve times vary run to run and are left out).
CONTENT_COLUMNS = ("scenario_id", "status", "certificate", "load_scale", "pd_mw", "qd_mvar",
                   "outages", "gen_outages", "cost_scale", "objective", "pg_mw", "vm_pu",
                   "dc_objective")


class DirectoryLock:
    """An exclusive lock on a dataset directory for the length of a build.

    Two builds of the same dataset (e.g. study cells in parallel processes) would otherwise
    write part files and the final table at the same time. The second one waits, then finds the
    first one's scenarios done. The lock is released when the process ends, however it ends.
    """

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / ".lock"
        self._fh: Any = None

    def __enter__(self) -> DirectoryLock:
        import fcntl
        import sys

        self._fh = self.path.open("a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process building `{self.path.parent}`", file=sys.stderr)
            fcntl.flock(self._fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: Any) -> None:
        import fcntl

        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()


def load_manifest(directory: str | Path) -> dict[str, Any] | None:
    """The directory's manifest.json, or None when it holds no built dataset.

    Torch-free, so that spec validation can tell a built dataset from a recipe cheaply;
    `read_manifest` adds the schema check for opening one.
    """
    path = Path(directory) / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"`{path}` is damaged ({_first_line(exc)}); {REBUILD}") from None
    if not isinstance(manifest, dict):
        raise DataError(f"`{path}` is damaged (not a JSON object); {REBUILD}")
    return manifest


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a built dataset of this gridtune's feature schema (else `DataError`)."""
    manifest = load_manifest(directory)
    if manifest is None:
        raise DataError(f"`{directory}` is not a built dataset (no manifest.json); build one with "
                        "`gridtune data build RECIPE`")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"dataset `{directory}` has feature schema `v{manifest.get('schema_version')}`, "
                        f"this gridtune reads `v{SCHEMA_VERSION}`; rebuild it")
    return manifest


def verify_dataset(directory: str | Path, *, deep: bool = True) -> int:
    """Check a built dataset's files against its seal; returns how many files were checked.

    Raises `DataError` with one line naming the first damaged file (and the others), what is
    wrong and the remedy. `deep` compares SHA-256 digests and parquet page CRCs; otherwise sizes,
    JSON syntax and parquet footers only (cheap: `gridtune data info` without `--verify`).
    """
    from gridtune.files import damage_message

    damages = check_dataset(directory, deep=deep)
    if damages:
        raise DataError(damage_message(f"dataset `{directory}`", damages))
    return len(DATASET_FILES)


def needs_build(directory: str | Path, samples: int) -> bool:
    """True when a (re)build must run before the dataset in `directory` is read: fewer than
    `samples` scenarios, an unfinished build (part files), or a damaged or unsealed file."""
    from gridtune.errors import DataError

    directory = Path(directory)
    try:
        manifest = load_manifest(directory)
    except DataError:  # a damaged manifest is rebuilt
        return True
    if manifest is None or not isinstance(manifest.get("samples"), int) or manifest["samples"] < samples:
        return True
    return (directory / "parts").is_dir() or bool(check_dataset(directory, deep=True))


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON write with sorted keys (NaN kept as NaN, as the readers of these files expect):
    a crash never leaves a half-written file."""
    from gridtune.files import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default))


def read_json(path: Path) -> dict[str, Any]:
    """A dataset JSON file; `DataError` naming it when it is missing or unreadable."""
    from gridtune.errors import DataError

    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"`{path}` is missing; {REBUILD}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"`{path}` is damaged ({_first_line(exc)}); {REBUILD}") from None
    if not isinstance(obj, dict):
        raise DataError(f"`{path}` is damaged (not a JSON object); {REBUILD}")
    return obj


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Atomic parquet write with page CRCs (verified by `read_table`)."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False, write_page_checksum=True)


def read_table(path: Path) -> pd.DataFrame:
    """A dataset parquet file, its page CRCs checked; `DataError` naming it when damaged."""
    from gridtune.errors import DataError

    try:
        return pd.read_parquet(path, page_checksum_verification=True)
    except FileNotFoundError:
        raise DataError(f"`{path}` is missing; {REBUILD}") from None
    except (OSError, ValueError) as exc:  # pyarrow: ArrowInvalid is a ValueError, CRC an OSError
        raise DataError(f"`{path}` is damaged ({_first_line(exc)}); {REBUILD}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_dataset(directory: str | Path, *, deep: bool = True,
                  remedy: str = REBUILD) -> list[Damage]:
    """Every damaged file of a dataset directory, finished or not (empty: all sound).

    Sealed files are compared with `checksums.json` (sizes; SHA-256 too when `deep`); files not
    (yet) sealed, e.g. during a build, are parsed: JSON must load, parquet must open (and, when
    `deep`, read with its page CRCs checked). A sealed dataset must hold all of
    `DATASET_FILES`; an unsealed one with a manifest the files a reader needs (`READ_FILES`).
    """
    import pyarrow.parquet as pq

    from gridtune.files import CHECKSUMS, read_checksums

    directory = Path(directory)
    sealed = read_checksums(directory) or {}
    if sealed or (directory / CHECKSUMS).is_file():
        required: tuple[str, ...] = DATASET_FILES
    elif (directory / "manifest.json").is_file():  # unsealed: written before seals, or by hand
        required = READ_FILES
    else:  # a build in progress
        required = ()
    damages = check_sealed(directory, deep=deep, required=required, remedy=remedy)
    named = {d.path.name for d in damages}
    for name in DATASET_FILES:
        path = directory / name
        if name in named or not path.is_file() or (name in sealed and deep):
            continue  # damaged, absent (allowed mid-build) or proven whole by its digest
        try:
            if name in JSON_FILES:
                if not isinstance(json.loads(path.read_text()), dict):
                    raise ValueError("not a JSON object")
            elif deep:
                verify_parquet(path)
            else:
                pq.ParquetFile(path).metadata  # noqa: B018  (reads the footer)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            damages.append(Damage(path, f"is unreadable ({_first_line(exc)})", remedy))
            continue
        if sealed and name not in sealed:
            damages.append(Damage(path, "is not sealed by checksums.json (a build stopped while "
                                  "finishing)", remedy, kind="unsealed"))
    return damages


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _arr(a: np.ndarray | None) -> list[float] | None:
    return None if a is None else np.asarray(a, dtype=float).tolist()


def scenario_row(scenario: Scenario, label: Label) -> dict[str, Any]:
    """One parquet row for a labelled scenario."""
    return {
        "scenario_id": int(scenario.scenario_id),
        "status": label.status,
        "certificate": label.certificate,
        "load_scale": float(scenario.load_scale),
        "pd_mw": _arr(scenario.pd_mw),
        "qd_mvar": _arr(scenario.qd_mvar),
        "outages": [int(k) for k in scenario.branch_out],
        "gen_outages": [int(g) for g in scenario.gen_out],
        "cost_scale": _arr(scenario.cost_scale),
        "hour": scenario.hour,
        "objective": label.objective,
        "relaxation_objective": label.relaxation_objective,
        "pg_mw": _arr(label.pg_mw),
        "qg_mvar": _arr(label.qg_mvar),
        "vm_pu": _arr(label.vm_pu),
        "va_degree": _arr(label.va_degree),
        "loading_percent": _arr(label.loading_percent),
        "branch_flow_mva": _arr(label.branch_flow_mva),
        "dc_status": label.dc_status,
        "dc_objective": label.dc_objective,
        "dc_pg_mw": _arr(label.dc_pg_mw),
        "dc_va_degree": _arr(label.dc_va_degree),
        "solve_time_s": float(label.solve_time_s),
        "reason": label.reason,
    }


def row_to_scenario(row: Any) -> Scenario:
    from gridtune.grids.scenarios import Scenario

    cs = row["cost_scale"]
    hour = row.get("hour")  # datasets built before profiles existed have no such column
    return Scenario(scenario_id=int(row["scenario_id"]), load_scale=float(row["load_scale"]),
                    pd_mw=np.asarray(row["pd_mw"], dtype=float),
                    qd_mvar=np.asarray(row["qd_mvar"], dtype=float),
                    branch_out=tuple(int(k) for k in row["outages"]),
                    gen_out=tuple(int(g) for g in row["gen_outages"]),
                    cost_scale=None if cs is None else np.asarray(cs, dtype=float),
                    hour=None if hour is None or hour != hour else int(hour))


def row_to_label(row: Any) -> Label:
    def arr(key: str) -> np.ndarray | None:
        v = row[key]
        return None if v is None else np.asarray(v, dtype=float)

    def num(key: str) -> float | None:
        v = row[key]
        return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)

    return Label(status=row["status"], certificate=row["certificate"], objective=num("objective"),
                 pg_mw=arr("pg_mw"), qg_mvar=arr("qg_mvar"), vm_pu=arr("vm_pu"),
                 va_degree=arr("va_degree"), loading_percent=arr("loading_percent"),
                 branch_flow_mva=arr("branch_flow_mva"),
                 relaxation_objective=num("relaxation_objective"), dc_status=row["dc_status"],
                 dc_objective=num("dc_objective"), dc_pg_mw=arr("dc_pg_mw"),
                 dc_va_degree=arr("dc_va_degree"), solve_time_s=float(row["solve_time_s"]),
                 reason=row["reason"])


def write_part(directory: Path, rows: list[dict[str, Any]]) -> Path:
    """Persist finished rows as a new part file (atomic rename)."""
    parts = directory / "parts"
    parts.mkdir(exist_ok=True)
    n = len(list(parts.glob("part-*.parquet")))
    # the writer's pid in the name: two processes never pick the same file
    path = parts / f"part-{n:06d}-{os.getpid()}.parquet"
    while path.exists():
        n += 1
        path = parts / f"part-{n:06d}-{os.getpid()}.parquet"
    write_table(pd.DataFrame(rows), path)
    return path


def verify_parquet(path: Path) -> None:
    """Read a parquet file batch by batch with every page CRC checked, holding one batch at a
    time; raises what pyarrow raises (`OSError`, `ValueError`) on damage."""
    import pyarrow.parquet as pq

    for _ in pq.ParquetFile(path, page_checksum_verification=True).iter_batches(JOIN_ROWS):
        pass


def _part_files(directory: Path) -> list[Path]:
    parts = directory / "parts"
    return sorted(parts.glob("part-*.parquet")) if parts.is_dir() else []


def _drop_damaged_part(directory: Path, part: Path, exc: BaseException) -> None:
    import sys

    print(f"dataset `{directory}`: part `{part.name}` is damaged ({_first_line(exc)}); "
          "its scenarios are labelled again", file=sys.stderr)
    part.unlink(missing_ok=True)


def read_rows(directory: Path) -> pd.DataFrame:
    """All rows of a dataset: scenarios.parquet plus any part files, de-duplicated by id.

    Holds the whole table: a build lists its finished scenarios with `finished_ids` and joins
    them with `join_rows` instead.
    """
    frames = []
    main = directory / "scenarios.parquet"
    if main.is_file():
        frames.append(read_table(main))
    for p in _part_files(directory):
        try:
            frames.append(pd.read_parquet(p, page_checksum_verification=True))
        except (OSError, ValueError) as exc:  # a damaged part: its scenarios are labelled again
            _drop_damaged_part(directory, p, exc)
            continue
    if not frames:
        return pd.DataFrame(columns=["scenario_id"])
    df = pd.concat(frames, ignore_index=True)
    df = df.drop_duplicates("scenario_id", keep="first").sort_values("scenario_id")
    return df.reset_index(drop=True)


def _read_ids(path: Path) -> np.ndarray:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path, page_checksum_verification=True) as file:
        return file.read(columns=["scenario_id"]).column(0).to_numpy().astype(np.int64)


def _verified_ids(path: Path) -> np.ndarray:
    """The ids of a parquet file read batch by batch, every page CRC of every column checked
    (`verify_parquet` and the ids in one pass)."""
    import pyarrow.parquet as pq

    ids = [batch.column("scenario_id").to_numpy() for batch in
           pq.ParquetFile(path, page_checksum_verification=True).iter_batches(JOIN_ROWS)]
    return np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, dtype=np.int64)


def finished_ids(directory: Path) -> set[int]:
    """Ids of the scenarios already labelled in `directory` (scenarios.parquet and part files).

    Reads only the id column of scenarios.parquet (the build's `repair` has proven the file
    whole). Each part file is read batch by batch with its page CRCs checked, keeping only the
    ids: a damaged part is named and removed, and its scenarios are labelled again.
    """
    done: set[int] = set()
    main = directory / "scenarios.parquet"
    if main.is_file():
        try:
            done.update(_read_ids(main).tolist())
        except (OSError, ValueError) as exc:
            raise DataError(f"`{main}` is damaged ({_first_line(exc)}); {REBUILD}") from None
    for part in _part_files(directory):
        try:
            done.update(_verified_ids(part).tolist())
        except (OSError, ValueError) as exc:
            _drop_damaged_part(directory, part, exc)
    return done


def _conform(table: Any, schema: Any) -> Any:
    """`table` with `schema`'s columns, in its order and types (a column it lacks is all null)."""
    import pyarrow as pa

    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names
               else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def join_rows(directory: Path, visit: Callable[[pd.DataFrame], None] | None = None) -> int:
    """Write scenarios.parquet from itself and the part files, `JOIN_ROWS` rows at a time.

    The same rows as `read_rows`: sorted by `scenario_id`, one per id (the first copy wins:
    scenarios.parquet, then the parts by name). Only the id columns are read whole; the rows
    are taken batch by batch from the row groups that hold them, and a row group is dropped
    after the last batch that needs it, so the memory held does not grow with the number of
    scenarios. `visit` sees every batch as a frame, in id order. Returns the number of rows.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    main = directory / "scenarios.parquet"
    # opened one at a time and closed: an open file holds its metadata (~150 KiB), and a
    # build may leave hundreds of parts
    paths, ids, starts = [], [], []
    schema = pa.schema([("scenario_id", pa.int64())])  # every file's columns, types promoted
    for path in ([main] if main.is_file() else []) + _part_files(directory):
        try:
            with pq.ParquetFile(path, page_checksum_verification=True) as file:
                got = file.read(columns=["scenario_id"]).column(0).to_numpy().astype(np.int64)
                meta = file.metadata
                groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
                schema = pa.unify_schemas([schema, file.schema_arrow.remove_metadata()],
                                          promote_options="permissive")
        except (OSError, ValueError) as exc:
            if path == main:
                raise DataError(f"`{main}` is damaged ({_first_line(exc)}); {REBUILD}") from None
            _drop_damaged_part(directory, path, exc)
            continue
        paths.append(path)
        ids.append(got)
        starts.append(np.cumsum([0, *groups]))  # first row of each row group
    source = np.concatenate([np.full(len(a), k) for k, a in enumerate(ids)] or [np.zeros(0, int)])
    row = np.concatenate([np.arange(len(a)) for a in ids] or [np.zeros(0, int)])
    _, first = np.unique(np.concatenate(ids or [np.zeros(0, np.int64)]), return_index=True)
    source, row = source[first], row[first]  # (n,) each, in id order
    # each row's row group within its file, and the last batch that reads each row group
    group = np.zeros(len(row), dtype=np.int64)
    for k, bounds in enumerate(starts):
        mine = source == k
        group[mine] = np.searchsorted(bounds, row[mine], side="right") - 1
    batch = np.arange(len(row)) // JOIN_ROWS
    last_batch = {(int(k), int(g)): int(b) for k, g, b in zip(source, group, batch)}
    held: dict[tuple[int, int], Any] = {}
    with atomic_path(main) as tmp, pq.ParquetWriter(tmp, schema, write_page_checksum=True) as out:
        for b in range(int(batch[-1]) + 1 if len(batch) else 0):
            sl = slice(b * JOIN_ROWS, (b + 1) * JOIN_ROWS)
            pieces, order = [], []
            for k, g in dict.fromkeys(zip(source[sl].tolist(), group[sl].tolist())):
                if (k, g) not in held:
                    try:
                        with pq.ParquetFile(paths[k], page_checksum_verification=True) as file:
                            held[(k, g)] = _conform(file.read_row_group(g), schema)
                    except (OSError, ValueError) as exc:
                        raise DataError(f"`{paths[k]}` is damaged ({_first_line(exc)}); "
                                        f"{REBUILD}") from None
                at = np.flatnonzero((source[sl] == k) & (group[sl] == g))
                pieces.append(held[(k, g)].take(row[sl][at] - starts[k][g]))
                order.append(at)
            table = pa.concat_tables(pieces).take(np.argsort(np.concatenate(order)))
            out.write_table(table, row_group_size=JOIN_ROWS)
            if visit is not None:
                visit(table.to_pandas())
            for key in [key for key in held if last_batch[key] == b]:
                del held[key]
    return len(row)


def content_hash(df: pd.DataFrame) -> str:
    """Hash of the label-defining columns (floats rounded to 6 significant digits)."""
    digest = ContentHash()
    digest.update(df)
    return digest.hexdigest()


class ContentHash:
    """`content_hash` fed batch by batch, in `scenario_id` order: the batches of a table hash
    to the value of the whole table, without holding it."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._last_id: int | None = None

    def update(self, df: pd.DataFrame) -> None:
        if not len(df):
            return
        df = df.sort_values("scenario_id")
        first = int(df["scenario_id"].iloc[0])
        if self._last_id is not None and first <= self._last_id:
            raise ValueError(f"ContentHash: batch starts at scenario `{first}`, after "
                             f"`{self._last_id}`; feed batches in scenario_id order")
        self._last_id = int(df["scenario_id"].iloc[-1])
        h = self._h
        for _, row in df.iterrows():
            for col in CONTENT_COLUMNS:
                v = row[col]
                if v is None or (isinstance(v, float) and np.isnan(v)):
                    h.update(b"-")
                elif isinstance(v, (list, np.ndarray)):
                    h.update(np.array2string(np.asarray(v, dtype=float), precision=6,
                                             floatmode="maxprec", threshold=10**9).encode())
                elif isinstance(v, float):
                    h.update(f"{v:.6g}".encode())
                else:
                    h.update(str(v).encode())

    def hexdigest(self) -> str:
        return self._h.hexdigest()[:16]
