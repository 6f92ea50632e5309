"""`gridtune distill`: a lean student learns a teacher's probabilities on the teacher's split."""

import json

import pytest

from gridtune.nn.checkpoint import load_checkpoint, read_config


def test_distill_runs_end_to_end_and_its_student_evaluates(tmp_path, capsys):
    from gridtune.cli import main
    from gridtune.grids.build import build_dataset
    from gridtune.grids.recipe import load_recipe
    from gridtune.nn.model import model_preset
    from tests.grids.recipes import recipe_file

    ds = tmp_path / "ds"
    build_dataset(load_recipe(recipe_file(tmp_path, samples=30)), ds, workers=1, progress=False)
    assert main(["pretrain", "--data", str(ds), "--task", "feasibility", "--epochs", "2", "--hidden", "8",
                 "--layers", "1", "--seed", "3", "--split", "0.5,0.2,0.3", "--out", str(tmp_path / "teacher")]) == 0
    capsys.readouterr()
    assert main(["distill", str(tmp_path / "teacher"), "--data", str(ds), "--unlabeled", "10", "--epochs", "2",
                 "--model-option", "hidden=8", "--out", str(tmp_path / "student")]) == 0
    out = capsys.readouterr().out
    assert "teacher-only graphs" in out and "AUROC" in out
    r = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert r["graphs"]["drawn"] == 10 and r["graphs"]["labelled"] >= 2
    assert r["split"]["seed"] == 3 and r["split"]["fractions"] == [0.5, 0.2, 0.3]  # the teacher's split
    teacher_meta = read_config(tmp_path / "teacher")
    assert r["split"]["test"] == teacher_meta["metrics"]["split"]["test"]
    student, meta = load_checkpoint(tmp_path / "student")
    assert student.config == model_preset("fast", hidden=8)
    assert meta["distilled_from"]["teacher"] == str(tmp_path / "teacher")
    assert main(["evaluate", str(tmp_path / "student"), "--data", str(ds), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_test_all"] == r["split"]["test"]  # evaluate scores the same held-out graphs

    assert main(["distill", str(tmp_path / "teacher"), "--data", str(ds), "--label-weight", "2",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "label_weight must lie in [0, 1], got `2.0`" in capsys.readouterr().err
    assert main(["distill", str(tmp_path / "teacher"), "--data", str(ds), "--samples", "20",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "its test split would not be held out" in capsys.readouterr().err


def test_distill_refuses_a_teacher_of_another_task(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent.parent / "nn"))
    from synthetic import graphs, tiny_checkpoint

    from gridtune.errors import SpecError
    from gridtune.workflows.distill import distill

    tiny_checkpoint(tmp_path / "opf", task="opf", epochs=1)
    with pytest.raises(SpecError, match="distillation needs a feasibility teacher"):
        distill(tmp_path / "opf", graphs("case14", 20), tmp_path / "s")
