"""The final join of a dataset build: the same table and content hash as reading it whole.

Synthetic rows with the build's columns (no solver): scenarios.parquet plus part files that
overlap, arrive out of order, and differ in which columns are all empty, joined in batches of
a few rows so that every batch draws from several row groups.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from gridtune.grids import storage


def reference_hash(df: pd.DataFrame) -> str:
    """`content_hash` as it was when it read the whole table: the values must never change."""
    h = hashlib.sha256()
    for _, row in df.sort_values("scenario_id").iterrows():
        for col in storage.CONTENT_COLUMNS:
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
    return h.hexdigest()[:16]


def _row(i: int, *, copy: int = 0, empty: bool = False) -> dict:
    """Scenario `i`'s row; `copy` marks a duplicate's solve time, `empty` leaves every optional
    column empty (a part of infeasible scenarios without outages)."""
    rng = np.random.default_rng(i)
    feasible = not empty and i % 3 != 0
    return {
        "scenario_id": i, "status": "feasible" if feasible else "infeasible",
        "certificate": None if feasible else "soc", "load_scale": 0.9 + 0.01 * i,
        "pd_mw": rng.uniform(0, 100, 5).tolist(), "qd_mvar": rng.uniform(0, 30, 5).tolist(),
        "outages": [] if empty else [i % 7], "gen_outages": [],
        "cost_scale": None if empty else rng.uniform(0.9, 1.1, 3).tolist(),
        "hour": None if empty else i % 24,
        "objective": float(rng.uniform(1e3, 1e4)) if feasible else None,
        "relaxation_objective": None,
        "pg_mw": rng.uniform(0, 200, 3).tolist() if feasible else None,
        "qg_mvar": None, "vm_pu": rng.uniform(0.95, 1.05, 5).tolist() if feasible else None,
        "va_degree": None, "loading_percent": None, "branch_flow_mva": None,
        "dc_status": None, "dc_objective": None, "dc_pg_mw": None, "dc_va_degree": None,
        "solve_time_s": 0.1 * i + copy, "reason": None,
    }


@pytest.fixture
def unjoined(tmp_path, monkeypatch):
    """A dataset directory mid-extend: 30 scenarios in scenarios.parquet and four parts."""
    monkeypatch.setattr(storage, "JOIN_ROWS", 4)
    ds = tmp_path / "ds"
    (ds / "parts").mkdir(parents=True)
    main = pd.DataFrame([_row(i) for i in range(0, 30)]).drop(columns="hour")  # an older build
    storage.write_table(main, ds / "scenarios.parquet")
    parts = [[_row(i) for i in (41, 33, 30, 47, 35)],
             [_row(i, empty=True) for i in (31, 32, 40)],
             [_row(i, copy=100) for i in (5, 36, 34, 38)],  # scenario 5 again: the first copy wins
             [_row(i) for i in (39, 37, 42, 43, 44, 45, 46)]]
    for k, rows in enumerate(parts):
        storage.write_table(pd.DataFrame(rows), ds / "parts" / f"part-{k:06d}-1.parquet")
    return ds


def test_join_gives_the_table_and_content_hash_of_reading_it_whole(unjoined):
    whole = storage.read_rows(unjoined)
    expected = reference_hash(whole)
    assert storage.content_hash(whole) == expected
    digest, sizes = storage.ContentHash(), []

    def visit(batch: pd.DataFrame) -> None:
        digest.update(batch)
        sizes.append(len(batch))

    assert storage.join_rows(unjoined, visit) == 48
    assert digest.hexdigest() == expected and max(sizes) == 4 and sum(sizes) == 48
    joined = pd.read_parquet(unjoined / "scenarios.parquet", page_checksum_verification=True)
    assert joined["scenario_id"].tolist() == list(range(48))
    assert joined.loc[5, "solve_time_s"] == pytest.approx(0.5)  # from scenarios.parquet
    pd.testing.assert_frame_equal(joined, whole, check_like=True)
    meta = pq.ParquetFile(unjoined / "scenarios.parquet").metadata
    assert meta.num_row_groups == 12 and meta.row_group(0).num_rows == 4
    assert storage.content_hash(joined) == expected  # read back: the manifest's hash still holds


def test_content_hash_batches_must_come_in_scenario_order():
    df = pd.DataFrame([_row(i) for i in range(6)])
    digest = storage.ContentHash()
    digest.update(df.iloc[3:])
    with pytest.raises(ValueError, match=r"batch starts at scenario `0`, after `5`"):
        digest.update(df.iloc[:3])


def _damage_column(path, column: str) -> None:
    """Flip a byte inside `column`'s pages of the first row group (its CRC no longer holds)."""
    meta = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(meta.column(j) for j in range(meta.num_columns)
                 if meta.column(j).path_in_schema.split(".")[0] == column)
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    raw = bytearray(path.read_bytes())
    raw[start + chunk.total_compressed_size - 2] ^= 0x10
    path.write_bytes(bytes(raw))


def test_build_start_reads_only_ids_of_the_table_and_checks_every_part(unjoined, capsys):
    # scenarios.parquet is proven whole by its seal before this runs: only its ids are read
    _damage_column(unjoined / "scenarios.parquet", "vm_pu")
    with pytest.raises(OSError):
        pd.read_parquet(unjoined / "scenarios.parquet", page_checksum_verification=True)
    # a part has no seal: a damaged page in any column drops it, its scenarios are redone
    _damage_column(unjoined / "parts" / "part-000003-1.parquet", "vm_pu")
    done = storage.finished_ids(unjoined)
    assert done == set(range(37)) | {38, 40, 41, 47}
    assert "part `part-000003-1.parquet` is damaged" in capsys.readouterr().err
    assert not (unjoined / "parts" / "part-000003-1.parquet").exists()
