"""Study commands and the cell runner's failure handling (no training needed)."""

from __future__ import annotations

import json

import pytest

from gridtune.cli import main
from gridtune.studies.plan import Cell
from gridtune.studies.runner import CellJob, DatasetRef, normalise_result, run_cell
from gridtune.workflows.configs import TransferConfig


def job(tmp_path, *, checkpoint, source_error=None, directory=None) -> CellJob:
    ref = DatasetRef("case14", str(directory or tmp_path / "no-dataset"), 30, "h", {})
    return CellJob(Cell("case9", "case14", "full", 10, 0), "fp",
                   TransferConfig(labels=10, strategy="full"), checkpoint, source_error, ref,
                   str(tmp_path / "cell"))


def test_a_cell_whose_source_failed_is_recorded_with_the_reason(tmp_path):
    rec = run_cell(job(tmp_path, checkpoint=None, source_error="DataError: too few graphs"))
    assert rec["status"] == "failed"
    assert rec["error"] == ("RuntimeError: pre-training on source `case9` failed: DataError: "
                            "too few graphs")
    assert rec["cell"]["strategy"] == "full" and rec["fingerprint"] == "fp"
    assert "Traceback" in rec["traceback"] and rec["wall_time_s"] >= 0


def test_a_cell_that_raises_is_recorded_not_propagated(tmp_path):
    rec = run_cell(job(tmp_path, checkpoint=str(tmp_path / "ckpt")))
    assert rec["status"] == "failed"
    assert "no-dataset" in rec["error"] and rec["error"].split(":")[0].endswith("Error")


def test_normalise_result_keeps_scalars_scratch_and_violations():
    raw = {"metrics": {"auroc": 0.9, "n": 12, "undefined": {"f1": "why"}, "f1": None},
           "scratch": {"metrics": {"auroc": 0.8}}, "trainable_parameters": 10, "wall_time_s": 2.0,
           "constraints": {"test": {"monotone_load": {"violation_rate": 0.1, "max_violation": 0.2,
                                                      "tolerance": 1e-4}}}}
    rec = normalise_result(raw)
    assert rec["metrics"] == {"auroc": 0.9, "n": 12.0, "f1": None}
    assert rec["scratch"] == {"auroc": 0.8}
    assert rec["violations"]["monotone_load"]["violation_rate"] == 0.1


def test_study_command_rejects_a_bad_spec_with_one_line(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text('name = "x"\nsources = ["case9"]\ntargets = ["case14"]\n'
                    'strategies = ["full"]\nlabels = [10]\nseed = [0]\n')
    assert main(["study", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "s.toml: unknown key `seed`" in err
    assert not (tmp_path / "out").exists()  # nothing started
    assert main(["study", str(spec), "--set", "seeds"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main(["study", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_report_command_needs_a_study_directory(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a study directory" in capsys.readouterr().err


def test_report_command_regenerates(tmp_path, capsys):
    from gridtune.files import write_json
    from gridtune.studies.store import ResultsStore

    cell = Cell("case9", "case14", "full", 10, 0, with_scratch=True)
    ResultsStore(tmp_path).save({"cell_id": cell.cell_id, "cell": cell.to_dict(), "status": "ok",
                                 "fingerprint": "f", "metrics": {"auroc": 0.8},
                                 "scratch": {"auroc": 0.7}, "wall_time_s": 3.0})
    write_json(tmp_path / "study.json", {"spec": {"name": "t"}, "headline": ["auroc", True],
                                         "cells": [cell.cell_id]})
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "0.800 (+0.100)" in out and "report.html" in out
    assert (tmp_path / "report.html").is_file()


def test_demo_show_spec(capsys):
    assert main(["demo", "--show-spec"]) == 0
    assert 'name = "changed_grid"' in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["demo", "--workers", "0"], ["demo", "--backend", "dask"]])
def test_demo_rejects_bad_options_before_work(argv, capsys):
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err


def test_record_json_is_strict(tmp_path):
    from gridtune.files import write_json

    write_json(tmp_path / "r.json", {"a": float("nan"), "b": [float("inf"), 1.0]})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": None, "b": [None, 1.0]}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "in-process"])
def test_a_study_names_a_changed_grid_after_its_recipe_file(tmp_path, backend, monkeypatch):
    """A changed recipe's grid is named after its file, in a study as by `gridtune data build`:
    the table a study builds from no longer holds the file, and without it every changed variant
    of one case would be built as `<case>_changed` (so two variants shared one name)."""
    from gridtune.grids.storage import read_manifest
    from gridtune.studies import runner
    from gridtune.studies.plan import make_plan
    from gridtune.studies.spec import load_study

    (tmp_path / "case14_grown.toml").write_text(
        'case = "case14"\nsamples = 4\n[loads]\nscale = [0.9, 1.1]\n[topology]\nn_minus_1 = 0.25\n'
        'candidates = 2\n[[changes.scale_loads]]\nbuses = [3, 4]\nfactor = 1.2\n')
    (tmp_path / "study.toml").write_text(
        'name = "s"\ntask = "feasibility"\nsources = ["case14_grown.toml"]\ntargets = ["case14_grown.toml"]\n'
        'pairs = "all"\nstrategies = ["full"]\nlabels = [4]\nseeds = [0]\n')
    plan = make_plan(load_study(tmp_path / "study.toml"))
    if backend == "in-process":  # what the ray backend runs, here without a fresh interpreter
        monkeypatch.setattr(runner, "_build_in_fresh_process",
                            lambda table, d, w, p, source: runner._build_job(table, str(d), w, p, "local", source))
    refs = runner.prepare_datasets(plan.datasets, workers=1, backend="local", log=lambda _: None,
                                   progress=False)
    assert read_manifest(refs["case14_grown"].directory)["grid"]["name"] == "case14_grown"
