"""The constraint benchmark runs end to end on tiny synthetic grids (its --synthetic self-check)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_constraints.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_constraints", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.slow
def test_bench_constraints_synthetic_and_resume(tmp_path, capsys):
    bench = load_bench()
    argv = ["--synthetic", "--tasks", "feasibility", "--out", str(tmp_path), "--epochs", "2",
            "--seeds", "0", "1"]
    assert bench.main(argv) == 0
    result = json.loads((tmp_path / "bench_constraints.json").read_text())
    variants = [r["variant"] for r in result["rows"] if r["seed"] == 0]
    assert variants == ["unconstrained", "penalty w=0.1", "penalty w=1", "penalty w=10",
                        "lagrangian", "augmented-lagrangian"]
    for r in result["rows"]:
        v = r["violations"]["monotone_load"]
        assert 0.0 <= v["violation_rate"] <= 1.0 and r["s_per_epoch"] > 0
    agg = {a["variant"]: a for a in result["aggregate"]}
    assert agg["lagrangian"]["seeds"] == [0, 1] and agg["unconstrained"]["auroc_change"] == 0.0
    assert {"violation_rate_lagrangian", "auroc_change", "met"} <= set(result["check"]["monotonicity"])
    assert "| lagrangian | 2 |" in (tmp_path / "bench_constraints.md").read_text()
    # a rerun measures nothing again: every row is read back from rows.jsonl
    lines = (tmp_path / "rows.jsonl").read_text().splitlines()
    assert len(lines) == 12
    capsys.readouterr()
    assert bench.main(argv) == 0
    assert "resuming: 12 rows" in capsys.readouterr().out
    assert (tmp_path / "rows.jsonl").read_text().splitlines() == lines


def test_aggregate_ratios_against_unconstrained():
    bench = load_bench()

    def row(variant, seed, mean_mw, mae):
        return {"task": "opf", "variant": variant, "seed": seed, "main": "power_balance",
                "violations": {"power_balance": {"violation_rate": 0.5, "mean_violation": mean_mw / 100,
                                                 "max_violation": 1.0},
                               "nodal_balance": {"violation_rate": 1.0, "mean_violation": 0.3,
                                                 "max_violation": 1.0}},
                "metrics": {"mae_pg_pu": mae, "std_mse": 0.1}, "epochs_run": 10, "s_per_epoch": 1.0}

    rows = [row("unconstrained", 0, 2.0, 0.02), row("unconstrained", 1, 4.0, 0.04),
            row("lagrangian", 0, 0.2, 0.0205), row("lagrangian", 1, 0.4, 0.041)]
    agg = bench.aggregate(rows)
    lag = agg[("opf", "lagrangian")]
    assert lag["violation_cut"] == pytest.approx(10.0)
    assert lag["mae_change"]["mae_pg_pu"] == pytest.approx(0.025)
    assert lag["power_balance/mean_violation"][1] * 100 == pytest.approx(0.1414, rel=1e-3)  # std
    check = bench.check(agg)["power_balance"]
    assert check["residual_unconstrained_mw"] == pytest.approx(3.0)
    assert check["met"] is True
    rows[3]["metrics"]["mae_pg_pu"] = 0.05  # MAE +17.5%: the residual cut alone does not meet it
    assert bench.check(bench.aggregate(rows))["power_balance"]["met"] is False
    assert "| lagrangian | 2 | 0.3 ± 0.141 | 10x |" in bench.table(agg)
