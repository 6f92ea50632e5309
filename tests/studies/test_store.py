"""The results store keeps its files sealed: a damaged record is named and never read."""

from __future__ import annotations

import json

import pytest

from gridtune.cli import main
from gridtune.errors import DataError
from gridtune.studies.store import ResultsStore, verify_study

HEADLINE = ("auroc", True)


def _record(cell_id: str, auroc: float) -> dict:
    cell = {"source": "case9", "target": "case14", "strategy": "full", "labels": 10, "seed": 0,
            "constraint": "none", "formulation": "none"}
    return {"cell_id": cell_id, "cell": cell, "fingerprint": "fp", "status": "ok",
            "metrics": {"auroc": auroc}}


@pytest.fixture
def store(tmp_path):
    s = ResultsStore(tmp_path / "study")
    s.write_study({"name": "t", "headline": list(HEADLINE)})
    s.write_datasets({})
    for i in range(3):
        s.save(_record(f"c{i}", (0.5, 0.625, 0.75)[i]))
    s.write_csv(HEADLINE)
    return s


def test_every_file_is_sealed_and_verifies(store):
    sealed = json.loads((store.root / "checksums.json").read_text())["files"]
    assert set(sealed) == {"study.json", "datasets.json", "results.csv",
                           "results/c0.json", "results/c1.json", "results/c2.json"}
    assert verify_study(store.root) == 6
    assert store.check() == [] and store.is_finished("c1", "fp")
    assert not list(store.root.rglob(".*.tmp"))


@pytest.mark.parametrize("fault, problem", [
    ("truncate", r"is truncated \(\d+ of \d+ bytes\)"),
    ("flip", r"has other content than was written \(SHA-256 differs[^)]*\)"),
    ("foreign", r"(is truncated|is longer than written|has other content)[^;]*"),
    ("missing", r"is missing"),
])
def test_a_damaged_record_is_named_and_counts_as_not_run(store, fault, problem, capsys):
    path = store.record_path("c1")
    raw = path.read_bytes()
    if fault == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif fault == "flip":  # 0.625 -> 0.925: still valid JSON, a silently wrong result if read
        assert b"0.625" in raw
        path.write_bytes(raw.replace(b"0.625", b"0.925"))
    elif fault == "foreign":
        path.write_bytes(store.record_path("c2").read_bytes())
    else:
        path.unlink()
    assert store.load("c1") is None and not store.is_finished("c1", "fp")
    assert store.load("c0") is not None
    with pytest.raises(DataError, match=rf"study `.*`: `.*results/c1.json` {problem}; rerun "
                                        r"`gridtune study run SPEC --out DIR`"):
        verify_study(store.root)
    assert main(["report", str(store.root), "--verify"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "results/c1.json" in err


def test_a_damaged_results_csv_is_never_read(store):
    path = store.root / "results.csv"
    path.write_text(path.read_text().replace("0.625", "0.125"))
    with pytest.raises(DataError, match=r"results.csv` has other content than was written"):
        store.read_csv()
    store.write_csv(HEADLINE)  # rebuilt from the records
    assert store.read_csv()["auroc"].round(3).tolist() == [0.5, 0.625, 0.75]


def test_a_damaged_study_json_is_named(store):
    (store.root / "study.json").write_text("{")
    with pytest.raises(DataError, match=r"study.json` is (truncated|damaged)"):
        store.read_study()
    with pytest.raises(DataError, match=r"study.json"):
        verify_study(store.root)


def test_not_a_study_directory(tmp_path):
    with pytest.raises(DataError, match=r"is not a study directory \(no study.json\)"):
        verify_study(tmp_path)
