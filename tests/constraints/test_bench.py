"""The constraint benchmark runs end to end on tiny synthetic grids (its --synthetic self-check)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_constraints.py"


@pytest.mark.slow
def test_bench_constraints_synthetic(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_constraints", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--synthetic", "--tasks", "feasibility", "--out", str(tmp_path),
                       "--epochs", "2"]) == 0
    result = json.loads((tmp_path / "bench_constraints.json").read_text())
    variants = [r["variant"] for r in result["rows"]]
    assert variants == ["unconstrained", "penalty w=0.1", "penalty w=1", "penalty w=10",
                        "lagrangian", "augmented-lagrangian"]
    for r in result["rows"]:
        assert 0.0 <= r["violation_rate"] <= 1.0 and r["s_per_epoch"] > 0
        assert r["constraint"] == "monotone_load"
    assert {"violation_rate_lagrangian", "auroc_change", "met"} <= set(result["check"]["monotonicity"])
    assert "| feasibility | lagrangian |" in (tmp_path / "bench_constraints.md").read_text()
