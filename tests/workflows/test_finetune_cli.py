"""`gridtune finetune` end to end on a real (tiny) case9 dataset labelled by AC-OPF solves, from a
checkpoint pre-trained on synthetic case14 graphs: several seeds give a transfer verdict, domain
adaptation draws unlabelled scenarios from the dataset's recipe."""

import json

import pytest

from gridtune.cli import main
from gridtune.grids.build import build_dataset
from gridtune.grids.recipe import load_recipe
from gridtune.nn.checkpoint import load_checkpoint
from tests.grids.recipes import recipe_file
from tests.nn.synthetic import tiny_checkpoint


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    build_dataset(load_recipe(recipe_file(tmp, samples=40)), tmp / "ds", workers=1, progress=False)
    tiny_checkpoint(tmp / "src", name="case14", n=40, epochs=2)
    return tmp


@pytest.mark.slow
def test_multi_seed_run_writes_results_checkpoints_and_verdict(setup, capsys):
    out = setup / "run"
    code = main(["finetune", "--from", str(setup / "src"), "--data", str(setup / "ds"),
                 "--labels", "12", "--strategy", "adapter", "--seed", "0", "1", "2",
                 "--epochs", "2", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["label"] in ("positive transfer", "negative transfer", "inconclusive")
    assert "seed 2: adapter auroc" in text and f"over 3 seeds: {verdict['label']}" in text
    # 40 scenarios: the test split is far below the 1000 a verdict needs, and the line says so
    assert verdict["label"] == "inconclusive" and "too small for a verdict" in text
    if verdict["ci_low"] <= 0 <= verdict["ci_high"]:
        assert verdict["label"] == "inconclusive" and not verdict["negative_transfer"]
    assert verdict["n_seeds"] == 3 and verdict["metric"] == "auroc"
    assert verdict["ci_low"] <= verdict["gain_mean"] <= verdict["ci_high"]
    r = json.loads((out / "seed_1" / "finetune.json").read_text())
    assert r["target"] == "case9" and r["n_train"] + r["n_val"] == 12
    assert r["trainable_parameters"] < r["scratch"]["trainable_parameters"]
    gains = [json.loads((out / f"seed_{s}" / "finetune.json").read_text())["transfer_gain"]["value"]
             for s in range(3)]
    assert verdict["gain_mean"] == pytest.approx(sum(gains) / 3)


@pytest.mark.slow
def test_dann_uses_unlabelled_scenarios_of_the_recipe(setup, capsys):
    out = setup / "dann"
    assert main(["finetune", "--from", str(setup / "src"), "--data", str(setup / "ds"),
                 "--labels", "12", "--strategy", "dann", "--unlabeled", "8", "--epochs", "2",
                 "--pre-adapt", "3", "--no-scratch", "--out", str(out)]) == 0
    r = json.loads((out / "finetune.json").read_text())
    assert r["unlabeled"] == 8 and r["scratch"] is None and r["transfer_gain"] is None
    assert len(r["pre_adapt"]["loss"]) == 3
    model, meta = load_checkpoint(out)
    assert meta["finetune"]["strategy"] == "dann" and model.task == "feasibility"
    assert main(["finetune", "--from", str(setup / "src"), "--data", str(setup / "ds"),
                 "--labels", "12", "--strategy", "dann", "--epochs", "1", "--out", str(out)]) == 2
    assert "strategy `dann` needs unlabelled target data" in capsys.readouterr().err
    assert main(["finetune", "--from", str(setup / "src"), "--data", str(setup / "ds"),
                 "--labels", "12", "--strategy", "full", "--pre-adapt", "5", "--out", str(out)]) == 2
    assert "--pre-adapt `5` needs" in capsys.readouterr().err


@pytest.mark.slow
def test_scratch_over_several_seeds_writes_results_without_a_verdict(setup):
    out = setup / "scratch"
    assert main(["finetune", "--from", str(setup / "src"), "--data", str(setup / "ds"),
                 "--labels", "12", "--strategy", "scratch", "--seed", "0", "1", "--epochs", "1",
                 "--out", str(out)]) == 0
    assert (out / "seed_1" / "finetune.json").is_file() and not (out / "verdict.json").exists()


@pytest.mark.slow
def test_conformal_alpha_prints_coverage_and_the_fallback(setup, capsys):
    out = setup / "conformal"
    assert main(["finetune", "--from", str(setup / "src"), "--data", str(setup / "ds"), "--labels", "12",
                 "--strategy", "full", "--epochs", "2", "--no-scratch", "--split", "0.4,0.3,0.3",
                 "--conformal-alpha", "0.2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    r = json.loads((out / "finetune.json").read_text())
    assert r["trust"]["alpha"] == 0.2 and r["trust"]["n_calibration"] > 0
    assert f"  coverage {r['trust']['coverage']:.4f} at alpha 0.2 ({r['trust']['n_calibration']} calibration" in text
    assert main(["finetune", "--from", str(setup / "src"), "--data", str(setup / "ds"), "--labels", "12",
                 "--strategy", "full", "--conformal-alpha", "2", "--out", str(out / "x")]) == 2
    assert "conformal alpha `2.0` is not valid" in capsys.readouterr().err
