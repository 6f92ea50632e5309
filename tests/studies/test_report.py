"""Results table, plots and report from study results constructed with known values."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from gridtune.errors import DataError
from gridtune.files import write_json
from gridtune.studies.plan import Cell
from gridtune.studies.report import summary_table, summary_text, write_report
from gridtune.studies.store import ResultsStore, results_frame

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def reliability(shift: float) -> list[dict]:
    """Rows as `gridtune.evaluation.metrics.reliability_table` gives them, 5 bins."""
    return [{"lower": b / 5, "upper": (b + 1) / 5, "count": n, "mean_prob": (b + 0.5) / 5,
             "frac_positive": min(max((b + 0.5) / 5 + shift, 0.0), 1.0)}
            for b, n in enumerate([4, 3, 2, 3, 4])]


def make_records() -> list[dict]:
    """case9 -> case14: `full` beats scratch by 0.05, `linear_probe` loses by 0.02 (negative
    transfer); scratch AUROC rises with labels; one `linear_probe` cell fails; a constrained
    Lagrangian cell carries violations and multipliers."""
    recs = []
    for constraint, form in (("none", "none"), ("mono", "lagrangian")):
        for labels in (10, 40):
            for seed in (0, 1):
                scratch = 0.70 + 0.001 * labels + 0.01 * seed
                for strategy, delta in (("full", 0.05), ("linear_probe", -0.02)):
                    cell = Cell("case9", "case14", strategy, labels, seed, constraint, form,
                                with_scratch=strategy == "full")
                    rec = {"cell_id": cell.cell_id, "cell": cell.to_dict(), "fingerprint": "f",
                           "status": "ok", "wall_time_s": 1.5, "trainable_parameters": 1000,
                           "metrics": {"auroc": scratch + delta, "ece": 0.05},
                           "reliability": reliability(0.05)}
                    if cell.with_scratch:
                        rec["scratch"] = {"auroc": scratch, "ece": 0.08}
                        rec["scratch_reliability"] = reliability(-0.1)
                    if constraint == "none":
                        rec["violations_by_set"] = {"mono": {"load_monotone": {
                            "violation_rate": 0.3, "mean_violation": 0.1, "max_violation": 0.5}}}
                    else:
                        rec["violations"] = {"load_monotone": {
                            "violation_rate": 0.05, "mean_violation": 0.01, "max_violation": 0.1}}
                        rec["violations_by_set"] = {"mono": rec["violations"]}
                        rec["multipliers"] = {"load_monotone": [0.0, 0.2, 0.3, 0.31]}
                    if (strategy, labels, seed, constraint) == ("linear_probe", 40, 1, "none"):
                        rec = {"cell_id": cell.cell_id, "cell": cell.to_dict(), "fingerprint": "f",
                               "status": "failed", "error": "TrainingError: loss became `nan`",
                               "traceback": "Traceback ...", "wall_time_s": 0.2}
                    recs.append(rec)
    return recs


@pytest.fixture()
def study_dir(tmp_path: Path) -> Path:
    recs = make_records()
    store = ResultsStore(tmp_path)
    for r in recs:
        store.save(r)
    write_json(tmp_path / "study.json", {
        "spec": {"name": "tiny", "task": "feasibility", "sources": ["case9"],
                 "targets": ["case14"], "strategies": ["full", "linear_probe"],
                 "labels": [10, 40], "seeds": [0, 1], "constraints": ["mono.toml"],
                 "formulations": ["lagrangian"]},
        "headline": ["auroc", True], "cells": [r["cell_id"] for r in recs]})
    write_json(tmp_path / "pretrain" / "case9" / "pretrain.json",
               {"ok": True, "fingerprint": "x", "wall_time_s": 12.0, "test": {"auroc": 0.91}})
    write_json(tmp_path / "datasets.json", {"case9": {"samples": 60, "content_hash": "abc",
                                                      "counts": {"feasible": 30}}})
    return tmp_path


def test_results_frame_gain_borrowed_from_the_scratch_carrier():
    frame = results_frame(make_records(), ("auroc", True))
    assert len(frame) == 16
    assert list(frame.columns[:9]) == ["cell_id", "source", "target", "strategy", "labels", "seed",
                                       "constraint", "formulation", "status"]
    ok = frame[frame["status"] == "ok"]
    full = ok[ok["strategy"] == "full"]
    probe = ok[ok["strategy"] == "linear_probe"]
    np.testing.assert_allclose(full["transfer_gain"], 0.05, atol=1e-9)
    np.testing.assert_allclose(probe["transfer_gain"], -0.02, atol=1e-9)  # borrowed scratch
    assert frame.loc[frame["status"] == "failed", "error"].str.contains("nan").all()
    lower = results_frame(make_records(), ("ece", False))
    np.testing.assert_allclose(lower.loc[lower["strategy"] == "full", "transfer_gain"].dropna(),
                               0.03, atol=1e-9)  # lower ece than scratch = positive gain


def test_summary_table_and_text():
    frame = results_frame(make_records(), ("auroc", True))
    summ = summary_table(frame, ("auroc", True))
    row = summ[(summ.strategy == "full") & (summ.labels == 10) & (summ.constraint == "none")].iloc[0]
    assert row["seeds"] == 2
    assert row["auroc"] == pytest.approx(0.70 + 0.01 + 0.005 + 0.05)
    text = summary_text(frame, ("auroc", True))
    assert "15 cells finished, 1 failed" in text
    assert "linear_probe" in text and "(-0.020)" in text and "(+0.050)" in text
    # two seeds: the gains are shown, but no verdict is drawn from them
    assert "0 negative transfer" in text and "with too few seeds" in text


def test_report_names_strategies_negative_transfer_and_failures(study_dir):
    md, page = write_report(study_dir)
    text = md.read_text()
    for strategy in ("full", "linear_probe"):
        assert strategy in text
    verdicts = text.split("## Transfer verdicts")[1].split("##")[0]
    # two seeds per group: gains and intervals are listed, no group is called negative
    assert "Negative transfer (interval below zero):" not in verdicts
    assert "0 negative transfer" in verdicts and "with too few seeds" in verdicts
    assert "1 group(s) ran one seed only" in verdicts
    curves = text.split("## Learning curves")[1].split("##")[0]
    assert "| scratch | 0.715 ± 0.007 (2) | 0.745 ± 0.007 (2) |" in curves
    pre = text.split("## Pre-training (once per source)")[1].split("##")[0]
    assert "| case9 | ok | 0.910 | 12 |" in pre
    failed = text.split("## Failed cells")[1].split("##")[0]
    assert "case9__case14__linear_probe__n40__s1__none__none" in failed
    assert "loss became" in failed
    for name in ("learning_curves", "transfer_matrix", "reliability", "violations", "multipliers"):
        png = study_dir / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert mpimg.imread(png).shape[0] > 100
        assert f"plots/{name}.png" in text
    doc = page.read_text()
    assert doc.count("data:image/png;base64,") == 5
    assert "src=\"plots/" not in doc and "linear_probe" in doc
    csv = pd.read_csv(study_dir / "results.csv")
    assert len(csv) == 16 and "transfer_gain" in csv.columns


def test_report_from_csv_only_and_missing_study(study_dir, tmp_path_factory):
    write_report(study_dir)
    import shutil
    shutil.rmtree(study_dir / "results")
    shutil.rmtree(study_dir / "plots")
    md, _ = write_report(study_dir)
    assert (study_dir / "plots" / "learning_curves.png").is_file()
    assert not (study_dir / "plots" / "multipliers.png").exists()  # needs per-cell records
    assert "linear_probe" in md.read_text()
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(DataError, match=r"is not a study directory \(no study.json\)"):
        write_report(empty)


def test_store_resume_semantics(tmp_path):
    store = ResultsStore(tmp_path)
    cell = Cell("a", "b", "full", 10, 0)
    assert not store.is_finished(cell.cell_id, "fp")
    store.save({"cell_id": cell.cell_id, "cell": cell.to_dict(), "status": "failed",
                "fingerprint": "fp", "error": "x"})
    assert not store.is_finished(cell.cell_id, "fp")  # failed cells run again
    store.save({"cell_id": cell.cell_id, "cell": cell.to_dict(), "status": "ok",
                "fingerprint": "fp", "metrics": {"auroc": float("nan")}})
    assert store.is_finished(cell.cell_id, "fp")
    assert not store.is_finished(cell.cell_id, "other")  # stale: settings changed
    assert json.loads(store.record_path(cell.cell_id).read_text())["metrics"]["auroc"] is None
    store.record_path(cell.cell_id).write_text("{truncated")
    assert store.load(cell.cell_id) is None
    with pytest.raises(DataError, match="status `done`"):
        store.save({"cell_id": "x", "status": "done"})


def test_reliability_pooling_weights_bins_by_count():
    from gridtune.studies.plots import _pool

    a = [{"lower": 0.0, "count": 3, "mean_prob": 0.1, "frac_positive": 0.0},
         {"lower": 0.5, "count": 1, "mean_prob": 0.7, "frac_positive": 1.0}]
    b = [{"lower": 0.0, "count": 1, "mean_prob": 0.3, "frac_positive": 1.0}]
    x, y = _pool([a, b])
    np.testing.assert_allclose(x, [(3 * 0.1 + 0.3) / 4, 0.7])
    np.testing.assert_allclose(y, [0.25, 1.0])


def stored_report(root: Path, recs: list[dict]) -> tuple[Path, Path]:
    """A study directory holding `recs` (feasibility, AUROC headline), its report written."""
    store = ResultsStore(root)
    for r in recs:
        store.save(r)
    write_json(root / "study.json", {"spec": {"name": "t", "task": "feasibility"},
                                     "headline": ["auroc", True], "cells": [r["cell_id"] for r in recs]})
    return write_report(root)


def two_seed_records(gains: list[float], *, n_test: int = 45, solve: float = 20.0) -> list[dict]:
    """One group (case9 -> case14, `full`, 100 labels) with the given gain per seed."""
    recs = []
    for seed, gain in enumerate(gains):
        cell = Cell("case9", "case14", "full", 100, seed, with_scratch=True)
        recs.append({"cell_id": cell.cell_id, "cell": cell.to_dict(), "fingerprint": "f",
                     "status": "ok", "metrics": {"auroc": 0.8 + gain}, "scratch": {"auroc": 0.8},
                     "n_test": n_test, "label_solver_time_s": solve + seed, "wall_time_s": 2.0})
    return recs


def test_a_negative_mean_gain_whose_interval_spans_zero_is_inconclusive(tmp_path):
    recs = two_seed_records([-0.03, 0.01])  # mean gain -0.01; paired interval [-0.03, +0.01]
    frame = results_frame(recs, ("auroc", True))
    summ = summary_table(frame, ("auroc", True))
    row = summ.iloc[0]
    assert row["verdict"] == "inconclusive" and row["gain"] == pytest.approx(-0.01)
    assert row["ci_low"] == pytest.approx(-0.03) and row["ci_high"] == pytest.approx(0.01)
    assert row["n_test"] == "45" and row["label_solver_time_s"] == pytest.approx(20.5)
    text = summary_text(frame, ("auroc", True))
    assert "0 negative transfer" in text and "1 inconclusive" in text
    assert "100 labels = 20 s" in text  # the AC-OPF solver time of the labels
    md, page = stored_report(tmp_path, recs)
    text = md.read_text()
    results = text.split("## Results")[1].split("##")[0]
    assert "| 100 (20 s) | 2 |" in results
    assert "| -0.010 [-0.030, +0.010] | inconclusive | 45 |" in results
    verdicts = text.split("## Transfer verdicts")[1].split("##")[0]
    assert "Negative transfer (interval below zero)" not in verdicts
    assert "No group shows negative transfer" in verdicts
    assert "negative transfer</td>" not in page.read_text()


def test_one_seed_is_inconclusive_and_says_so():
    frame = results_frame(two_seed_records([-0.05]), ("auroc", True))
    row = summary_table(frame, ("auroc", True)).iloc[0]
    assert row["verdict"] == "inconclusive" and row["verdict_note"].startswith("one seed")
    text = summary_text(frame, ("auroc", True))
    assert "1 inconclusive (1 with one seed only)" in text and "0 negative transfer" in text


def test_a_whole_interval_below_zero_is_negative_transfer():
    frame = results_frame(two_seed_records([-0.03, -0.02, -0.025], n_test=1200), ("auroc", True))
    row = summary_table(frame, ("auroc", True)).iloc[0]
    assert row["verdict"] == "negative transfer" and row["ci_high"] < 0
    assert "1 negative transfer" in summary_text(frame, ("auroc", True))


def test_a_small_test_split_gives_no_verdict():
    frame = results_frame(two_seed_records([-0.03, -0.02, -0.025], n_test=45), ("auroc", True))
    row = summary_table(frame, ("auroc", True)).iloc[0]
    assert row["verdict"] == "inconclusive" and row["ci_high"] < 0
    assert "test set of 45 < 1000" in row["verdict_note"]
    assert "1 inconclusive (1 on too small a test split)" in summary_text(frame, ("auroc", True))


def test_learning_curve_tables_head_each_budget_with_its_label_cost():
    from gridtune.studies.report import learning_curves

    recs = make_records()
    for r in recs:
        if r["status"] == "ok":
            r["label_solver_time_s"] = 2.0 * r["cell"]["labels"]  # 2 s of AC-OPF a label
    frame = results_frame(recs, ("auroc", True))
    (title, table), (ctitle, _) = learning_curves(frame, summary_table(frame, ("auroc", True)),
                                                  "auroc")
    assert (title, ctitle) == ("case9 -> case14", "case9 -> case14, mono / lagrangian")
    assert list(table.columns) == ["strategy", "10 labels (20 s AC-OPF)", "40 labels (80 s AC-OPF)"]
    rows = table.set_index("strategy")
    assert rows.loc["scratch", "10 labels (20 s AC-OPF)"] == "0.715 ± 0.007 (2)"
    assert rows.loc["linear_probe", "40 labels (80 s AC-OPF)"] == "0.720 (1)"  # one seed failed


def test_report_shows_coverage_and_the_solver_fallback_beside_the_headline(study_dir):
    store = ResultsStore(study_dir)
    recs = [r for r in make_records() if r["status"] == "ok"]
    for r in recs:
        r["trust"] = {"alpha": 0.05, "n_calibration": 300, "coverage": 0.94 + 0.02 * r["cell"]["seed"],
                      "answered_share": 0.8, "error_among_answered": 0.01}
        store.save(r)
    md, _ = write_report(study_dir)
    text = md.read_text()
    assert "## Conformal coverage and solver fallback (test split)" in text
    assert "80.0 ± 0.0 %" in text and "1.00 ± 0.00 %" in text and "0.950 ± 0.014" in text
    assert "| case9 | case14 | mono | lagrangian | full | 10 | 2 | 0.7650 ± 0.0071 | 0.050 | 300 |" in text


def test_report_without_conformal_cells_has_no_fallback_section(study_dir):
    md, _ = write_report(study_dir)
    assert "solver fallback" not in md.read_text()


def budget_records(scratch: dict[int, list[float]], full: dict[int, list[float]],
                   n_test: int = 1200) -> list[dict]:
    """case9 -> case14, `full` and its scratch baseline per budget and seed."""
    recs = []
    for labels, values in full.items():
        for seed, value in enumerate(values):
            cell = Cell("case9", "case14", "full", labels, seed, with_scratch=True)
            recs.append({"cell_id": cell.cell_id, "cell": cell.to_dict(), "fingerprint": "f",
                         "status": "ok", "metrics": {"auroc": value},
                         "scratch": {"auroc": scratch[labels][seed]}, "n_test": n_test})
    return recs


def test_fewer_labels_compares_each_budget_with_scratch_at_larger_ones(tmp_path):
    from gridtune.studies.report import fewer_labels_table

    recs = budget_records(scratch={50: [0.90, 0.91, 0.92], 500: [0.95, 0.955, 0.96]},
                          full={50: [0.96, 0.962, 0.97], 500: [0.97, 0.975, 0.98]})
    table = fewer_labels_table(results_frame(recs, ("auroc", True)), ("auroc", True))
    rows = {(r["strategy"], r["labels"]): r for r in table.to_dict("records")}
    assert set(rows) == {("scratch", 50), ("full", 50)}  # only smaller budget vs larger scratch
    assert rows["scratch", 50]["verdict"] == "worse" and rows["scratch", 50]["informative"] == "yes"
    assert rows["full", 50]["verdict"] == "better" and rows["full", 50]["scratch labels"] == 500
    assert rows["full", 50]["auroc - scratch's"].startswith("+0.0090 [")
    # scratch flat between the budgets: reaching it says nothing about labels saved
    flat = budget_records(scratch={50: [0.95, 0.96, 0.955], 500: [0.955, 0.955, 0.956]},
                          full={50: [0.96, 0.962, 0.97], 500: [0.97, 0.975, 0.98]})
    table = fewer_labels_table(results_frame(flat, ("auroc", True)), ("auroc", True))
    assert set(table["informative"]) == {"no"}
    # a small test split: intervals shown, no verdict
    small = budget_records(scratch={50: [0.90, 0.91, 0.92], 500: [0.95, 0.955, 0.96]},
                           full={50: [0.96, 0.962, 0.97], 500: [0.97, 0.975, 0.98]}, n_test=400)
    table = fewer_labels_table(results_frame(small, ("auroc", True)), ("auroc", True))
    assert set(table["verdict"]) == {"no difference shown"}
    text = stored_report(tmp_path, recs)[0].read_text()
    assert "| case9 -> case14 | full | 50 | 500 | +0.0090 [" in text.split("## Fewer labels than scratch")[1]


def test_sources_compared_pairs_each_source_with_the_earlier_ones_by_seed(tmp_path):
    from gridtune.studies.report import sources_table

    def records(source, values, zero_shot, n_test=1600, scratch=True):
        recs = []
        for seed, (value, zs) in enumerate(zip(values, zero_shot, strict=True)):
            cell = Cell(source, "case14", "full", 50, seed, with_scratch=scratch)
            recs.append({"cell_id": cell.cell_id, "cell": cell.to_dict(), "fingerprint": "f", "status": "ok",
                         "metrics": {"auroc": value}, "zero_shot": {"auroc": zs}, "n_test": n_test,
                         **({"scratch": {"auroc": 0.9}} if scratch else {})})
        return recs

    single = records("case9", [0.950, 0.952, 0.949, 0.951, 0.950], [0.940, 0.941, 0.939, 0.942, 0.940])
    family = records("family", [0.960, 0.961, 0.958, 0.962, 0.960], [0.941, 0.939, 0.941, 0.940, 0.940],
                     scratch=False)
    table = sources_table(results_frame(single + family, ("auroc", True)), single + family, ("auroc", True))
    rows = {r["strategy"]: r for r in table.to_dict("records")}
    assert set(rows) == {"zero-shot", "full"} and list(table["strategy"]) == ["zero-shot", "full"]
    assert (rows["full"]["source"], rows["full"]["against"], rows["full"]["seeds"]) == ("family", "case9", 5)
    assert rows["full"]["auroc gain"].startswith("+0.0098 [") and rows["full"]["verdict"] == "better"
    assert rows["zero-shot"]["verdict"] == "no difference shown"  # +-0.001 seed to seed: no claim
    # one source: no table; a small test split: intervals, no verdict
    assert sources_table(results_frame(single, ("auroc", True)), single, ("auroc", True)) is None
    small = records("case9", [0.95] * 5, [0.94] * 5, 400) + records("family", [0.96] * 5, [0.94] * 5, 400, False)
    assert set(sources_table(results_frame(small, ("auroc", True)), small, ("auroc", True))["verdict"]) == {
        "no difference shown"}
    text = stored_report(tmp_path, single + family)[0].read_text()
    assert "| case14 | full | 50 | family | case9 | +0.0098 [" in text.split("## Sources compared")[1]


def test_reach_names_the_first_budget_whose_mean_reaches_the_target_and_its_solver_hours(tmp_path):
    from gridtune.studies.report import reach_table

    recs = budget_records(scratch={50: [0.90, 0.91, 0.92], 500: [0.95, 0.955, 0.96]},
                          full={50: [0.96, 0.94, 0.97], 500: [0.97, 0.975, 0.98]})
    for r in recs:
        r["label_solver_time_s"] = 36.0 * r["cell"]["labels"]  # 36 s of AC-OPF a label
        r["zero_shot"] = {"auroc": 0.80 + 0.01 * r["cell"]["seed"]}
    frame = results_frame(recs, ("auroc", True))
    table = reach_table(frame, summary_table(frame, ("auroc", True)), recs, ("auroc", True), 0.95)
    rows = table.set_index("strategy").to_dict("index")
    assert rows["full"]["labels to reach auroc 0.95"] == 50  # mean 0.9567 at 50 labels
    assert rows["full"]["seeds reaching"] == "2 of 3" and rows["full"]["AC-OPF hours"] == "0.50"
    assert rows["scratch"]["labels to reach auroc 0.95"] == 500  # mean 0.955, all three seeds
    assert rows["scratch"]["seeds reaching"] == "3 of 3" and rows["scratch"]["AC-OPF hours"] == "5.00"
    assert rows["zero-shot"]["labels to reach auroc 0.95"] == "not reached"
    # a target no budget reaches: the best mean and a lower bound on the hours
    high = reach_table(frame, summary_table(frame, ("auroc", True)), recs, ("auroc", True), 0.99)
    rows = high.set_index("strategy").to_dict("index")
    assert rows["scratch"]["labels to reach auroc 0.99"] == "not reached (> 500)"
    assert rows["scratch"]["mean auroc there"] == "best 0.9550 at 500"
    assert rows["scratch"]["AC-OPF hours"] == "> 5.00"
    # the report carries it only when the spec asks
    store = ResultsStore(tmp_path)
    for r in recs:
        store.save(r)
    write_json(tmp_path / "study.json", {"spec": {"name": "t", "task": "feasibility", "reach": [0.95, 0.99]},
                                         "headline": ["auroc", True],
                                         "cells": [r["cell_id"] for r in recs]})
    text = write_report(tmp_path)[0].read_text()
    assert "## Labels and solver time to reach auroc 0.95" in text
    assert "| case9 -> case14 | scratch | 500 | 3 of 3 | 0.9550 | 5.00 |" in text
    assert "## Labels and solver time to reach auroc 0.99" in text
