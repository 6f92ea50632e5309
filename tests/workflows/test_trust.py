"""Conformal sets, the unfamiliar flag and the solver fallback on grid checkpoints: the Python API
on synthetic case14 graphs, and `gridtune calibrate` / `gridtune predict` end to end on a tiny
solver-labelled case9 dataset; every bad input is one line and exit code 2."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from gridtune.cli import main
from gridtune.errors import CheckpointError, DataError, SpecError
from gridtune.evaluation.evaluate import summary_lines
from gridtune.grids.build import build_dataset
from gridtune.grids.recipe import load_recipe
from gridtune.grids.split import split_indices
from gridtune.grids.view import resolve_data
from gridtune.nn.checkpoint import load_checkpoint
from gridtune.workflows.evaluate import evaluate_checkpoint
from gridtune.workflows.trust import (
    CALIBRATION_FILE,
    calibrate,
    fallback,
    familiarity_auroc,
    load_calibration,
    predict,
    trust_report,
)
from tests.grids.recipes import recipe_file
from tests.nn.synthetic import graphs, pretrain


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A small model on 500 synthetic case14 scenarios (a learnable rule), split 50/25/25."""
    tmp = tmp_path_factory.mktemp("trust")
    data = graphs("case14", 500, seed=0)
    pretrain(data, task="feasibility", out_dir=tmp / "ck", epochs=15, hidden=16, layers=2,
             batch_size=32, split=(0.5, 0.25, 0.25))
    return tmp / "ck", data


@pytest.mark.slow
def test_calibrate_predict_and_report_on_the_test_split(synthetic, tmp_path):
    ck, data = synthetic
    r = calibrate(ck, data, alpha=0.1, false_alarm_rate=0.05)
    assert r["calibration_set"] == "validation split" and r["n_calibration"] == 125
    record = json.loads((ck / CALIBRATION_FILE).read_text())
    assert record["conformal"]["n"] == 125 and record["same_data_as_training"]
    assert sum(len(v) for v in record["conformal"]["scores"].values()) == 125

    frame = predict(ck, data, out=tmp_path / "p.parquet")
    back = pd.read_parquet(tmp_path / "p.parquet")
    assert list(back.columns) == ["scenario_id", "p_infeasible", "prediction_set", "familiarity",
                                  "unfamiliar", "action", "status"]
    assert len(back) == 500 and back["scenario_id"].tolist() == list(range(500))
    assert set(back["prediction_set"]) <= {"feasible", "infeasible", "feasible|infeasible", "none"}
    single = back["prediction_set"].isin(["feasible", "infeasible"])
    assert ((back["action"] == "model") == (single & ~back["unfamiliar"])).all()
    assert np.allclose(frame["p_infeasible"], back["p_infeasible"])
    assert 0 <= frame.attrs["familiarity_shift_p"] <= 1

    model, meta = load_checkpoint(ck)
    view = resolve_data(data)
    _, _, te = split_indices(view.statuses, meta["split_seed"], tuple(meta["split_fractions"]))
    rep = trust_report(model, ck, view, te, out_dir=tmp_path)
    assert rep["n"] == te.size == 125
    assert rep["marginal"]["coverage"] >= 0.8  # 1 - alpha, with the slack of 125 test graphs
    assert (tmp_path / "risk_coverage.png").stat().st_size > 0
    curve = rep["risk_coverage"]
    assert curve and all(0 <= c["answered_share"] <= 1 for c in curve)
    assert [c["alpha"] for c in curve] == sorted(c["alpha"] for c in curve)
    assert min(c["alpha"] for c in curve) >= 1 / 126  # only levels 125 calibration graphs support

    # gridtune evaluate shows the fallback beside AUROC when the checkpoint is calibrated
    report = evaluate_checkpoint(ck, data, plots=False)
    fb = rep["marginal"]["fallback"]
    assert report["trust"]["marginal"]["fallback"]["answered_share"] == fb["answered_share"]
    printed = "\n".join(summary_lines(report))
    assert f"model answers {fb['answered_share']:.1%} of 125 scenarios" in printed
    assert f"coverage   {rep['marginal']['coverage']:.4f} at alpha 0.1 (target >= 0.9" in printed
    assert "fallback" not in "\n".join(summary_lines({k: v for k, v in report.items() if k != "trust"}))


@pytest.mark.slow
def test_mondrian_and_share_and_unfamiliar_data(synthetic):
    ck, data = synthetic
    r = calibrate(ck, data, alpha=0.1, mondrian=True, calibration_share=1.0)
    assert r["calibration_set"] == "1 of the validation and test splits" and r["n_calibration"] == 250
    conformal, _, record = load_calibration(ck)
    assert conformal.mondrian and record["calibration_set"].startswith("1 of")
    # scenarios far beyond the training load range, on the same grid, are flagged as unfamiliar
    far = graphs("case14", 200, seed=7, scale=(2.5, 3.5))
    d = familiarity_auroc(ck, data, far)
    assert d["auroc"] > 0.9 and d["detection_rate"] > 0.5 and d["n_changed"] == 200
    assert d["shift_p"] < 1e-6


def test_fallback_counts_answers_errors_and_solver_time():
    answered = np.array([True, True, False, True])
    answer = np.array([0, 1, -1, 1])
    labels = np.array([0, 0, 1, np.nan])
    r = fallback(answered, answer, labels, np.array([1.0, 2.0, 3.0, 4.0]))
    assert r["answered_share"] == 0.75 and r["n_wrong"] == 1
    assert r["error_among_answered"] == pytest.approx(0.5)  # the unlabelled answer is not scored
    assert r["solver_time_saved_s"] == 7.0 and r["solver_time_saved_share"] == pytest.approx(0.7)


@pytest.mark.slow
def test_bad_inputs_raise_one_clear_error(synthetic, tmp_path):
    ck, data = synthetic
    with pytest.raises(SpecError, match=r"alpha `1.5` is not valid: give a miscoverage level strictly "
                                        r"between 0 and 1"):
        calibrate(ck, data, alpha=1.5)
    with pytest.raises(DataError, match=r"calibration set has 125 examples, too few for alpha `0.005`: "
                                        r"split conformal needs at least 199"):
        calibrate(ck, data, alpha=0.005)
    with pytest.raises(SpecError, match=r"calibration share `1.5` is not valid"):
        calibrate(ck, data, calibration_share=1.5)
    bare = tmp_path / "bare"
    shutil.copytree(ck, bare)
    for name in ("conformal.json", "familiarity.safetensors"):
        (bare / name).unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match=r"has no conformal calibration \(`conformal.json`\): run "
                                              r"`gridtune calibrate .* --data DATA --alpha A` first"):
        predict(bare, data)
    calibrate(ck, data, alpha=0.1)
    with pytest.raises(DataError, match=r"too few for alpha `0.001`: split conformal needs at least 999"):
        predict(ck, data, alpha=0.001)
    with pytest.raises(SpecError, match=r"output `x.txt` must end in `.parquet` or `.csv`"):
        predict(ck, data, out="x.txt")
    old = [g.clone() for g in data[:30]]
    for g in old:
        g.x = g.x[:, :10]  # data of another feature schema
    with pytest.raises(CheckpointError, match=r"expects feature schema `v1` \(16 bus features\) but data "
                                              r"`case14` has schema `v1` \(10 bus features\)"):
        predict(ck, old)
    shutil.copytree(ck, tmp_path / "stale")
    (tmp_path / "stale" / "model.safetensors").write_bytes(
        (ck / "model.safetensors").read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match=r"made for other weights; re-run `gridtune calibrate"):
        load_calibration(tmp_path / "stale")


# ---- the command line on a real, solver-labelled dataset ----------------------------------------

@pytest.fixture(scope="module")
def real(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trust_cli")
    build_dataset(load_recipe(recipe_file(tmp, samples=40)), tmp / "ds", workers=1, progress=False)
    pretrain(str(tmp / "ds"), task="feasibility", out_dir=tmp / "ck", epochs=3, hidden=16, layers=2,
             batch_size=16)
    return tmp


@pytest.mark.slow
def test_cli_calibrate_then_predict_csv_and_parquet(real, capsys):
    ck, ds = real / "ck", real / "ds"
    assert main(["calibrate", str(ck), "--data", str(ds), "--alpha", "0.3",
                 "--calibration-share", "1", "--false-alarm", "0.3"]) == 0
    text = capsys.readouterr().out
    assert "conformal  alpha 0.3 (marginal)" in text and f"written    {ck / CALIBRATION_FILE}" in text
    for suffix in ("csv", "parquet"):
        out = real / f"pred.{suffix}"
        assert main(["predict", str(ck), "--data", str(ds), "--out", str(out)]) == 0
        assert f"written    {out}" in capsys.readouterr().out
        frame = pd.read_csv(out) if suffix == "csv" else pd.read_parquet(out)
        n = len(resolve_data(str(ds)).graphs)
        assert len(frame) == n and frame["scenario_id"].is_unique
        assert set(frame["action"]) <= {"model", "solve"}
    assert main(["evaluate", str(ck), "--data", str(ds), "--json"]) == 0
    assert "trust" in json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(ck), "--data", str(ds)]) == 0
    printed = capsys.readouterr().out
    assert "coverage   " in printed and "at alpha 0.3 (target >= 0.7" in printed
    assert "fallback   model answers " in printed


@pytest.mark.slow
@pytest.mark.parametrize("argv,message", [
    (["calibrate", "{ck}", "--data", "{ds}", "--alpha", "0"],
     "gridtune calibrate: error: alpha `0.0` is not valid: give a miscoverage level strictly between 0 and 1"),
    (["calibrate", "{ck}", "--data", "{ds}", "--alpha", "0.01"],
     "too few for alpha `0.01`: split conformal needs at least 99 (n >= 1/alpha - 1)"),
    (["predict", "{ck}", "--data", "{ds}", "--alpha", "1", "--out", "{tmp}/p.csv"],
     "gridtune predict: error: alpha `1.0` is not valid"),
    (["predict", "{ck}", "--data", "{ds}", "--out", "{tmp}/p.json"],
     "gridtune predict: error: --out `{tmp}/p.json` must end in `.parquet` or `.csv`"),
    (["predict", "{bare}", "--data", "{ds}", "--out", "{tmp}/p.csv"],
     "has no conformal calibration (`conformal.json`)"),
])
def test_cli_bad_input_is_one_line_and_exit_2(real, capsys, argv, message):
    bare = real / "bare"
    if not bare.exists():
        shutil.copytree(real / "ck", bare)
        for name in ("conformal.json", "familiarity.safetensors"):
            (bare / name).unlink(missing_ok=True)
    fill = {"ck": str(real / "ck"), "ds": str(real / "ds"), "tmp": str(real), "bare": str(bare)}
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message.format(**fill) in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_recalibrating_on_other_data_keeps_the_familiarity_reference(synthetic):
    ck, data = synthetic
    first = calibrate(ck, data, alpha=0.1)
    other = graphs("case14", 300, seed=11, scale=(0.8, 1.8))  # the grid after a change of regime
    again = calibrate(ck, other, alpha=0.1, calibration_share=1.0)
    assert again["familiarity"]["threshold"] == first["familiarity"]["threshold"]
    assert again["familiarity"]["kept_from"] == "case14"
    _, _, record = load_calibration(ck)
    assert not record["same_data_as_training"] and record["n_labelled"] == again["n_calibration"]


@pytest.mark.slow
def test_opf_head_intervals_cover_each_target(tmp_path, capsys):
    from gridtune.grids.features import OPF_TARGETS

    data = graphs("case14", 400, seed=3)
    pretrain(data, task="opf", out_dir=tmp_path / "opf", epochs=4, hidden=16, layers=2, batch_size=32,
             split=(0.4, 0.3, 0.3))
    r = calibrate(tmp_path / "opf", data, alpha=0.1)
    assert r["task"] == "opf" and set(r["half_widths"]) == set(OPF_TARGETS)
    frame = predict(tmp_path / "opf", data, out=tmp_path / "opf.csv")
    assert list(frame.columns[:3]) == ["scenario_id", "bus", "vm_pu"]
    assert {"vm_pu_lo", "vm_pu_hi", "pg_pu_lo", "qg_pu_hi"} <= set(frame.columns)
    # per-bus coverage on the test split's solved scenarios
    model, meta = load_checkpoint(tmp_path / "opf")
    view = resolve_data(data)
    _, _, te = split_indices(view.statuses, meta["split_seed"], tuple(meta["split_fractions"]))
    solved = [int(view.graphs[i].scenario_id) for i in te if np.isfinite(view.graphs[i].y_opf).all()]
    rows = frame[frame["scenario_id"].isin(solved)].sort_values(["scenario_id", "bus"])
    target = np.concatenate([view.graphs[s].y_opf.numpy() for s in sorted(solved)])
    for j, c in enumerate(OPF_TARGETS):
        inside = (target[:, j] >= rows[f"{c}_lo"].to_numpy() - 1e-9) & (target[:, j] <= rows[f"{c}_hi"].to_numpy() + 1e-9)
        assert inside.mean() >= 0.85, c
    # branch loading from the predicted voltages, against the loading the solution's voltages imply
    from gridtune.workflows.trust import branch_file, loading_outputs

    assert all(w > 0 for w in r["loading_half_width_percent"].values()) and r["n_calibration_branches"] > 0
    branches = pd.read_csv(branch_file(tmp_path / "opf.csv"))
    assert list(branches.columns) == ["scenario_id", "branch", "loading_percent", "loading_percent_lo",
                                      "loading_percent_hi"]
    kept = frame.attrs["branches"]
    assert (branches[["scenario_id", "branch"]].to_numpy() == kept[["scenario_id", "branch"]].to_numpy()).all()
    assert np.allclose(branches["loading_percent_hi"], kept["loading_percent_hi"], rtol=1e-9)
    test = [view.graphs[i] for i in te if np.isfinite(view.graphs[i].y_opf).all()]
    o = loading_outputs(model, test)
    for k in (0, 5):  # a batch numbers branches per graph, as each graph alone does
        alone = loading_outputs(model, test[k:k + 1])
        assert (o["branch"][o["graph"] == k] == alone["branch"]).all() and alone["branch"].size > 0
        assert np.allclose(o["pred"][o["graph"] == k], alone["pred"])
    ids = np.array([int(g.scenario_id) for g in test])[o["graph"]]
    merged = pd.DataFrame({"scenario_id": ids, "branch": o["branch"], "true": o["target"]}).merge(
        branches, on=["scenario_id", "branch"], how="left", validate="one_to_one")
    assert len(merged) == o["target"].size and merged["loading_percent"].notna().all()
    inside = (merged["true"] >= merged["loading_percent_lo"] - 1e-9) & (merged["true"] <= merged["loading_percent_hi"] + 1e-9)
    assert inside.mean() >= 0.85
    assert main(["calibrate", str(tmp_path / "opf"), "--data", "case14", "--alpha", "0"]) == 2
    assert main(["predict", str(tmp_path / "opf"), "--data", "x", "--alpha", "0.001",
                 "--out", str(tmp_path / "o.csv")]) == 2
    assert "too few for alpha `0.001`" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_opf_intervals_include_branch_loading(real, capsys):
    """case9 has rated branches: `calibrate` prints the loading interval, `predict` writes the
    branch rows beside the bus rows."""
    ds = real / "ds"
    pretrain(str(ds), task="opf", out_dir=real / "opf", epochs=2, hidden=16, layers=2, batch_size=16)
    assert main(["calibrate", str(real / "opf"), "--data", str(ds), "--alpha", "0.3",
                 "--calibration-share", "1"]) == 0
    assert "interval   branch loading, percent of RATE_A: +- " in capsys.readouterr().out
    out = real / "opf_pred.parquet"
    assert main(["predict", str(real / "opf"), "--data", str(ds), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    branches = pd.read_parquet(real / "opf_pred_branches.parquet")
    assert f"branches   {len(branches)} rated branch loadings" in text
    assert set(branches["branch"]) <= set(range(9)) and (branches["loading_percent_hi"] >= branches["loading_percent"]).all()
