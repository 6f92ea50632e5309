import json

import numpy as np
import pytest
import torch
from synthetic import graphs, pretrain, tiny_checkpoint  # noqa: I001

from gridtune.core.trainer import make_loader, predict
from gridtune.errors import DataError, SpecError
from gridtune.grids.split import parse_split, split_indices
from gridtune.grids.view import resolve_data
from gridtune.nn.calibration import platt_calibrate
from gridtune.nn.checkpoint import load_checkpoint
from gridtune.nn.model import ModelConfig, build_model
from gridtune.nn.normalizer import Normalizer
from gridtune.nn.tasks import make_task
from gridtune.workflows.evaluate import evaluate_checkpoint


def test_split_is_seeded_stratified_and_disjoint():
    statuses = np.array(["feasible"] * 70 + ["infeasible"] * 20 + ["unknown"] * 10)
    tr, va, te = split_indices(statuses, seed=4)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(100))
    assert (len(tr), len(va), len(te)) == (70, 15, 15)
    for part in (va, te):
        assert set(statuses[part]) == {"feasible", "infeasible", "unknown"}
        assert (statuses[part] == "infeasible").sum() == 3
    again = split_indices(statuses, seed=4)
    assert all((a == b).all() for a, b in zip((tr, va, te), again, strict=True))
    assert not (split_indices(statuses, seed=5)[2] == te).all()


def test_split_fractions_are_stored_and_evaluation_scores_the_same_test_split(tmp_path, capsys):
    from gridtune.cli import main

    gs = graphs("case14", 60, seed=2)
    m = pretrain(gs, task="feasibility", out_dir=tmp_path, epochs=1, hidden=8, layers=1,
                 split="0.4,0.2,0.4")
    assert m["split"]["fractions"] == [0.4, 0.2, 0.4]
    _, _, te = split_indices(resolve_data(gs).statuses, 0, (0.4, 0.2, 0.4))
    assert m["split"]["test"] == te.size and te.size > 60 * 0.15 + 3
    report = evaluate_checkpoint(tmp_path, gs, plots=False)
    assert report["n_test_all"] == te.size  # not the default 15% split, which would overlap training
    for bad in ("0.7,0.3", "0.8,0.15,0.15", "a,b,c", "0.7,0,0.3"):
        with pytest.raises(SpecError, match="three positive fractions"):
            parse_split(bad)
    assert main(["pretrain", "--data", "case9", "--task", "feasibility", "--split", "0.9,0.2,0.1",
                 "--out", str(tmp_path / "x")]) == 2
    assert "split `0.9,0.2,0.1` is not valid" in capsys.readouterr().err


def test_training_is_deterministic_for_a_seed(tmp_path):
    a = tiny_checkpoint(tmp_path / "a", "feasibility", n=40, epochs=2, seed=1)
    b = tiny_checkpoint(tmp_path / "b", "feasibility", n=40, epochs=2, seed=1)
    assert a["best_val"] == b["best_val"]
    ma, _ = load_checkpoint(tmp_path / "a")
    mb, _ = load_checkpoint(tmp_path / "b")
    for (name, pa), pb in zip(ma.state_dict().items(), mb.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    history = json.loads((tmp_path / "a" / "history.json").read_text())
    assert len(history) == a["epochs_run"]


def test_pretrain_learns_a_topology_dependent_rule(tmp_path):
    gs = graphs("case14", 160, seed=0, unknown_share=0.05)
    m = pretrain(gs, task="feasibility", out_dir=tmp_path, epochs=40, hidden=32, layers=3, patience=15)
    test = m["test"]
    # ~24 test graphs: the bar is "clearly learned", not a quality figure (see benchmarks/)
    assert test["model"]["auroc"] > 0.8
    history = json.loads((tmp_path / "history.json").read_text())
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert test["n_test"] <= test["n_test_all"]
    assert m["train_graphs_per_s"] > 0 and m["split"]["train"] + m["split"]["val"] + m["split"]["test"] == 160
    assert (tmp_path / "metrics.json").is_file()


def test_platt_calibration_lowers_validation_log_loss():
    torch.manual_seed(0)
    gs = [g for g in graphs("case14", 60, seed=3)]
    model = build_model(ModelConfig(hidden=16, layers=2), "feasibility", Normalizer().fit(gs)).eval()
    # a head that ranks by total load over capacity (the first context column) but says
    # "infeasible" almost everywhere: right ranking, bad calibration
    linear = torch.nn.Linear(model.embed_dim, 1)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[0, model.embed_dim - 2] = 2.0
        linear.bias.fill_(3.0)
    model.head = torch.nn.Sequential(linear, torch.nn.Flatten(0))  # (B, 1) -> (B,)
    task = make_task("feasibility")
    loader = make_loader(gs, 64, shuffle=False)
    before = task.metrics(*predict(model, loader, task))["log_loss"]
    fitted = platt_calibrate(model, gs)
    after = task.metrics(*predict(model, loader, task))["log_loss"]
    assert fitted is not None and after < before


def test_too_little_data_is_a_clear_error(tmp_path):
    gs = graphs("case9", 3, scale=(2.0, 2.1))  # all infeasible: no OPF targets at all
    with pytest.raises(DataError, match=r"data `case9` has too few graphs with a `opf` target"):
        pretrain(gs, task="opf", out_dir=tmp_path, epochs=1)


def test_unknown_scenarios_are_left_out_unless_asked(tmp_path):
    gs = graphs("case14", 60, seed=5, unknown_share=0.3)
    n_unknown = sum(int(g.status) == 2 for g in gs)
    assert n_unknown > 5
    strict = pretrain(gs, task="feasibility", out_dir=tmp_path / "a", epochs=1, hidden=8, layers=1)
    loose = pretrain(gs, task="feasibility", out_dir=tmp_path / "b", epochs=1, hidden=8, layers=1,
                     include_unknown=True)
    assert loose["split"]["train_used"] > strict["split"]["train_used"]
    assert loose["split"]["train_used"] + loose["split"]["val_used"] + loose["test"]["n_test"] == 60
    _, meta = load_checkpoint(tmp_path / "b")
    assert meta["include_unknown"] is True
    assert all(torch.isnan(g.y_infeasible).all() for g in gs if int(g.status) == 2)  # input untouched


def test_cosine_schedule_anneals_the_learning_rate_each_epoch():
    import math

    from gridtune.core.trainer import TrainConfig, fit
    from gridtune.errors import SpecError

    torch.manual_seed(0)
    gs = graphs("case14", 16)
    model = build_model(ModelConfig(hidden=8, layers=1), "feasibility", Normalizer().fit(gs))
    group = {"params": list(model.parameters())}
    seen: list[float] = []
    fit(model, make_loader(gs, 8, shuffle=True), None, make_task("feasibility"),
        TrainConfig(epochs=4, lr=0.01, lr_schedule="cosine"), param_groups=[group],
        on_epoch_start=lambda epoch, m: seen.append(group["lr"]))
    expected = [0.01 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert seen == pytest.approx(expected)
    with pytest.raises(SpecError, match=r"lr_schedule must be one of None, 'cosine', got `step`"):
        TrainConfig(lr_schedule="step")


def test_multi_source_pretraining_splits_each_grid_and_reports_each(tmp_path):
    a, b = graphs("case9", 40, seed=1), graphs("case14", 40, seed=2)
    m = pretrain([a, b], task="feasibility", out_dir=tmp_path, epochs=2, hidden=8, layers=1)
    assert set(m["per_source"]) == {"case9", "case14"}
    # each grid's test split is the one `split_indices` gives for that grid alone
    for gs in (a, b):
        _, _, te = split_indices(resolve_data(gs).statuses, 0)
        assert m["per_source"][str(gs[0].grid)]["n_test_all"] == te.size
    assert m["split"]["test"] == sum(r["n_test_all"] for r in m["per_source"].values())
    assert m["data"] == "case9+case14"
    report = evaluate_checkpoint(tmp_path, b, plots=False)  # evaluation on one source alone
    assert report["n_test_all"] == m["per_source"]["case14"]["n_test_all"]


def test_leave_one_grid_out_scores_each_held_out_grid_zero_shot(tmp_path):
    import gridtune
    from gridtune.workflows.pretrain import leave_one_out

    sources = [graphs("case9", 30, seed=1), graphs("case14", 30, seed=2), graphs("case30", 30, seed=3)]
    summary = leave_one_out(sources, tmp_path, task="feasibility",
                            model=gridtune.ModelConfig(hidden=8, layers=1),
                            train=gridtune.TrainConfig(epochs=1))
    assert set(summary) == {"case9", "case14", "case30"}
    assert summary["case30"]["trained_on"] == ["case9", "case14"]
    assert (tmp_path / "without-case30" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "leave_one_out.json").read_text())["case9"]["n_test"] > 0
    with pytest.raises(DataError, match="at least two data sources"):
        leave_one_out([sources[0]], tmp_path)


def test_self_supervised_epochs_run_before_training_and_change_the_encoder(tmp_path):
    gs = graphs("case14", 60, seed=2)
    plain = pretrain(gs, task="feasibility", out_dir=tmp_path / "plain", epochs=1, hidden=8, layers=1)
    ssl = pretrain(gs, task="feasibility", out_dir=tmp_path / "ssl", epochs=1, hidden=8, layers=1,
                   self_supervised_epochs=3)
    assert plain["self_supervised"] is None
    rec = ssl["self_supervised"]
    tr, _, _ = split_indices(resolve_data(gs).statuses, 0)
    assert rec["epochs"] == 3 and rec["graphs"] == tr.size and rec["drawn"] == 0 and len(rec["loss"]) == 3
    a, b = load_checkpoint(tmp_path / "plain")[0], load_checkpoint(tmp_path / "ssl")[0]
    assert any(not torch.equal(p, q) for p, q in zip(a.encoder.parameters(), b.encoder.parameters(), strict=True))
    with pytest.raises(DataError, match="needs sources with a recipe to draw from"):
        pretrain(gs, task="feasibility", out_dir=tmp_path / "x", epochs=1, hidden=8, layers=1,
                 self_supervised_epochs=1, unlabeled=5)
    with pytest.raises(SpecError, match="also give self_supervised_epochs > 0"):
        pretrain(gs, task="feasibility", out_dir=tmp_path / "x", epochs=1, unlabeled=5)


@pytest.mark.slow
def test_self_supervised_pretraining_draws_unlabelled_scenarios_from_the_recipe(tmp_path, capsys):
    from gridtune.cli import main
    from gridtune.grids.build import build_dataset
    from gridtune.grids.recipe import load_recipe
    from tests.grids.recipes import recipe_file

    build_dataset(load_recipe(recipe_file(tmp_path, samples=30)), tmp_path / "ds", workers=1, progress=False)
    assert main(["pretrain", "--data", str(tmp_path / "ds"), "--task", "feasibility", "--epochs", "1",
                 "--hidden", "8", "--layers", "1", "--self-supervised", "2", "--unlabeled", "12",
                 "--out", str(tmp_path / "ck")]) == 0
    assert "self-supervised 2 epochs on" in capsys.readouterr().out
    rec = json.loads((tmp_path / "ck" / "metrics.json").read_text())["self_supervised"]
    assert rec["drawn"] == 12 and rec["graphs"] > 12
    assert main(["pretrain", "--data", str(tmp_path / "ds"), "--task", "feasibility",
                 "--unlabeled", "-1", "--out", str(tmp_path / "bad")]) == 2
    assert "unlabeled must be a non-negative integer, got `-1`" in capsys.readouterr().err


@pytest.mark.slow
def test_unlabelled_draws_never_label_more_scenarios_of_a_recipe(tmp_path):
    from gridtune.grids.dataset import open_dataset
    from tests.grids.recipes import recipe_file

    recipe = recipe_file(tmp_path, samples=40)
    built = open_dataset(str(recipe), samples=24, progress=False)
    pretrain(str(recipe), task="feasibility", out_dir=tmp_path / "ck", epochs=1, hidden=8, layers=1,
             samples=24, self_supervised_epochs=1, unlabeled=6)
    assert json.loads((built.directory / "manifest.json").read_text())["samples"] == 24
