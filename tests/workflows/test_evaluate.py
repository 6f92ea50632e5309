import json

import pytest
from synthetic import graphs, tiny_checkpoint

from gridtune.cli import main
from gridtune.errors import CheckpointError
from gridtune.evaluation.evaluate import summary_lines, to_json
from gridtune.workflows.evaluate import evaluate_checkpoint


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ck")
    tiny_checkpoint(root / "feas", "feasibility", name="case14", n=60, epochs=3)
    tiny_checkpoint(root / "opf", "opf", name="case14", n=60, epochs=3)
    return root


def test_zero_shot_on_another_grid_writes_metrics_and_plots(checkpoints, tmp_path):
    report = evaluate_checkpoint(checkpoints / "feas", graphs("case9", 40, seed=7), out_dir=tmp_path)
    assert report["zero_shot"] and report["trained_on"] == "case14" and report["data"] == "case9"
    saved = json.loads((tmp_path / "metrics.json").read_text())  # strict JSON: no NaN
    for key in ("auroc", "auprc", "f1", "balanced_accuracy", "ece", "brier"):
        assert key in saved["model"] and key in saved["baseline"]
    assert saved["verdict"]["metric"] == "auroc"
    assert isinstance(saved["verdict"]["beats_baseline"], bool)
    assert {p.name for p in tmp_path.glob("*.png")} == {"roc.png", "reliability.png"}
    assert any("zero-shot" in line for line in summary_lines(report))


def test_opf_evaluation_reports_physical_units_and_dc_baseline(checkpoints, tmp_path):
    report = evaluate_checkpoint(checkpoints / "opf", graphs("case9", 30, seed=8), out_dir=tmp_path)
    model, base = report["model"], report["baseline"]
    for key in ("mae_vm_pu", "mae_va_degree", "mae_pg_mw", "mae_qg_mvar", "optimality_gap", "power_balance_mw"):
        assert model[key] is not None
    assert base["mae_vm_pu"] is None and base["power_balance_mw"] > model["power_balance_mw"]
    assert report["verdict"]["power_balance"]["beats_baseline"] is True
    assert (tmp_path / "opf_scatter.png").is_file()


def test_single_class_data_reports_undefined_metrics_with_reason(checkpoints):
    easy = graphs("case9", 30, seed=9, scale=(0.5, 0.6))  # every scenario feasible
    report = to_json(evaluate_checkpoint(checkpoints / "feas", easy))
    assert report["model"]["auroc"] is None
    assert "only one class (`feasible`)" in report["model"]["undefined"]["auroc"]
    assert report["verdict"]["beats_baseline"] is None
    assert report["model"]["brier"] is not None


def test_task_that_the_data_cannot_score_names_both(checkpoints):
    infeasible = graphs("case9", 10, scale=(2.0, 2.1))  # no AC-OPF solutions at all
    with pytest.raises(CheckpointError, match=r"checkpoint task `opf` needs AC-OPF solutions .* but data "
                                              r"`case9` has none \(statuses: \{'infeasible': 10\}\)"):
        evaluate_checkpoint(checkpoints / "opf", infeasible)


def test_cli_bad_input_is_one_line_and_exit_2(checkpoints, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing"), "--data", "case9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{}")
    (tmp_path / "junk" / "model.safetensors").write_bytes(b"")
    assert main(["evaluate", str(tmp_path / "junk"), "--data", "case9"]) == 2
    assert "is not a gridtune checkpoint config" in capsys.readouterr().err
    assert main(["pretrain", "--data", "case9", "--task", "opf", "--model", "gcn", "--out", str(tmp_path)]) == 2
    assert "unknown model `gcn`; valid: `gatv2`, `gine`, `transformer`" in capsys.readouterr().err


def test_opf_report_says_the_balance_is_closed_by_construction(checkpoints):
    report = evaluate_checkpoint(checkpoints / "opf", graphs("case14", 30, seed=11))
    model = report["model"]
    assert model["balance_completion"] is True
    assert model["power_balance_mw_before_completion"] > 100 * model["power_balance_mw"]


def test_cli_pretrain_then_evaluate_on_dataset_directories(tmp_path, capsys):
    from synthetic import write_dataset

    write_dataset(tmp_path / "d14", "case14", 40, seed=1)
    write_dataset(tmp_path / "d9", "case9", 30, seed=2)
    ck = tmp_path / "ck"
    assert main(["pretrain", "--data", str(tmp_path / "d14"), "--task", "feasibility", "--out", str(ck),
                 "--epochs", "2", "--hidden", "8", "--layers", "1"]) == 0
    assert "checkpoint" in capsys.readouterr().out
    assert main(["evaluate", str(ck), "--data", str(tmp_path / "d9"), "--json", "--out", str(tmp_path / "ev")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["zero_shot"] is True and report["data"] == "case9" and report["trained_on"] == "case14"
    assert report["solver_s_per_scenario"] == pytest.approx(0.5)  # the labels' recorded solve time
    assert (tmp_path / "ev" / "metrics.json").is_file()


def test_constraints_add_violation_metrics_on_the_test_split(checkpoints):
    from gridtune.specs import shipped_path

    spec = shipped_path("constraints", "monotone_load")
    report = evaluate_checkpoint(checkpoints / "feas", graphs("case14", 60), constraints=spec)
    rep = report["constraints"]["monotone_load"]
    assert 0.0 <= rep["violation_rate"] <= 1.0
    assert rep["max_violation"] >= rep["mean_violation"] >= 0.0
    saved = to_json(report)
    assert set(saved["constraints"]["monotone_load"]) >= {"violation_rate", "mean_violation",
                                                         "max_violation"}


def test_constraint_that_does_not_apply_fails_before_any_data_is_built(checkpoints, capsys,
                                                                       tmp_path, monkeypatch):
    # a shipped constraint set named on the command line, without a path; `case9` names the
    # shipped recipe, whose dataset is not built in this cache: refused before building it
    monkeypatch.setenv("GRIDTUNE_CACHE", str(tmp_path / "cache"))
    assert main(["evaluate", str(checkpoints / "feas"), "--data", "case9",
                 "--constraints", "nodal_balance"]) == 2
    err = capsys.readouterr().err
    assert "feasibility" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "cache").exists()
