"""The transfer workflow (`finetune`) and the `gridtune finetune` command, on synthetic grid data.

Source: a tiny model pre-trained on case9; target: case14 (another topology), labels from a known
rule (tests/nn/synthetic.py).
"""

import json

import pytest
import torch

from gridtune.cli import main
from gridtune.core.trainer import TrainConfig, make_loader
from gridtune.errors import DataError, GridtuneError
from gridtune.grids.split import split_indices
from gridtune.nn.checkpoint import load_checkpoint
from gridtune.workflows import transfer
from gridtune.workflows.transfer import sample_labels
from tests.nn.synthetic import graphs, tiny_checkpoint

FAST = TrainConfig(epochs=3, patience=3)


def finetune(*args, **kwargs) -> dict:
    """The workflow's result as the JSON dict it writes (the vocabulary of docs/results.md)."""
    return transfer.finetune(*args, **kwargs).to_dict()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    d = tmp_path_factory.mktemp("src")
    tiny_checkpoint(d, name="case9", n=60, epochs=2)
    return d


@pytest.fixture(scope="module")
def target():
    return graphs("case14", 100, seed=1)


def test_strategies_report_metrics_scratch_and_parameter_counts(source, target, tmp_path):
    out = {}
    for name, unl in (("full", 0), ("linear-probe", 0), ("adapter", 0), ("dann", 16)):
        r = finetune(source, target, labels=20, strategy=name, unlabeled=unl,
                     out_dir=tmp_path / name, train=FAST)
        out[name] = r
        saved = json.loads((tmp_path / name / "finetune.json").read_text())
        assert saved["strategy"] == name and saved["labels"] == 20
        assert saved["n_train"] + saved["n_val"] == 20
        assert 0.0 <= saved["metrics"]["auroc"] <= 1.0
        assert saved["scratch"]["metrics"]["auroc"] == pytest.approx(out["full"]["scratch"]["metrics"]["auroc"])
        assert "transfer_gain" in saved and saved["wall_time_s"] > 0
        cal = saved["calibration"]
        assert 0.05 <= cal["temperature"] <= 20 and 0 <= cal["ece_after"] <= 1
        assert len(saved["decision_curve"]["threshold"]) == 99
        assert (tmp_path / name / "reliability.png").is_file()
        assert (tmp_path / name / "decision_curve.png").is_file()
    head = sum(p.numel() for p in load_checkpoint(source)[0].head.parameters())
    assert out["linear-probe"]["trainable_parameters"] == head
    assert out["full"]["trainable_parameters"] == out["full"]["scratch"]["trainable_parameters"]
    # two 16-wide blocks, bottleneck 16: 2 * (16*16 + 16 + 16*16 + 16)
    assert out["adapter"]["trainable_parameters"] == head + 2 * 544
    # dann's discriminator trains too but is not part of the model
    assert out["dann"]["trainable_parameters"] == out["full"]["trainable_parameters"]
    assert out["dann"]["auxiliary_parameters"] > 0 == out["full"]["auxiliary_parameters"]


def test_saved_checkpoints_reload_with_the_same_predictions(source, target, tmp_path):
    batch = next(iter(make_loader(target[:8], 8, shuffle=False)))
    for name in ("full", "adapter", "lora"):
        finetune(source, target, labels=16, strategy=name, out_dir=tmp_path / name,
                 train=FAST, with_scratch=False)
        model, meta = load_checkpoint(tmp_path / name)
        assert meta["finetune"]["strategy"] == name
        with torch.no_grad():
            assert torch.allclose(transfer_model_output(tmp_path / name, batch), model(batch))
    with torch.no_grad():
        assert not torch.allclose(load_checkpoint(tmp_path / "full")[0](batch),
                                  load_checkpoint(source)[0](batch))


def transfer_model_output(path, batch):
    """A second, independent load of the same checkpoint (adapters rebuilt from its config)."""
    import gridtune

    model, _ = gridtune.load_model(path)
    return model(batch)


def test_result_carries_the_documented_vocabulary(source, target, tmp_path):
    r = finetune(source, target, tmp_path, labels=16, strategy="full", train=FAST)
    for key in ("metrics", "scratch", "transfer_gain", "negative_transfer", "negative_transfer_reason",
                "trainable_parameters", "auxiliary_parameters", "strategy_config", "train"):
        assert key in r, key
    assert r["negative_transfer"] is None and "one seed" in r["negative_transfer_reason"]
    gain = r["transfer_gain"]
    assert gain["metric"] == "auroc" and gain["higher_is_better_metric"] is True
    assert gain["value"] == pytest.approx(r["metrics"]["auroc"] - r["scratch"]["metrics"]["auroc"])
    assert json.loads((tmp_path / "finetune.json").read_text()) == json.loads(json.dumps(r))
    from gridtune.workflows.results import FinetuneResult

    assert FinetuneResult.load(tmp_path).to_dict() == json.loads(json.dumps(r))
    # zero-shot: the source checkpoint itself scored on the same test split, before training
    test = split_indices(transfer.resolve_data(target).statuses, 0, tuple(r["split"]))[2]
    source_on_test = transfer._test_scores(load_checkpoint(source)[0], [target[int(i)] for i in test])[0]
    assert r["zero_shot"]["auroc"] == pytest.approx(source_on_test["auroc"])
    assert finetune(source, target, tmp_path / "s", labels=16, strategy="scratch", train=FAST)["zero_shot"] is None
    with pytest.raises(DataError, match="cannot read FinetuneResult"):
        FinetuneResult.load(tmp_path / "missing")


def test_label_sampling_is_seeded_stratified_and_within_the_training_split(target):
    statuses = __import__("numpy").array(["feasible" if float(g.y_infeasible) == 0 else "infeasible"
                                          for g in target])
    tr, _, te = split_indices(statuses, 0)
    a = sample_labels(target, tr, 20, "feasibility", 0)
    assert a == sample_labels(target, tr, 20, "feasibility", 0)
    assert a != sample_labels(target, tr, 20, "feasibility", 1)
    train, val = a
    assert len(train) + len(val) == 20 and len(val) == 4
    assert set(train + val) <= set(tr.tolist()) and not set(train) & set(val)
    for part in (train, val):
        assert {float(target[i].y_infeasible) for i in part} == {0.0, 1.0}


def test_errors_name_the_bad_value(source, target, tmp_path):
    with pytest.raises(GridtuneError, match="unknown strategy `fulll`; valid strategies:"):
        finetune(source, target, labels=20, strategy="fulll", out_dir=tmp_path)
    with pytest.raises(DataError, match="--labels `500` exceeds the `7[0-9]` labelled target graphs"):
        finetune(source, target, labels=500, strategy="full", out_dir=tmp_path)
    with pytest.raises(GridtuneError, match="strategy `coral` needs unlabelled target data: pass `--unlabeled N`"):
        finetune(source, target, labels=20, strategy="coral", out_dir=tmp_path)
    with pytest.raises(GridtuneError, match="unknown normalizer `mean`; valid: `source`, `target`"):
        finetune(source, target, labels=20, strategy="full", normalizer="mean", out_dir=tmp_path)


def test_target_normalizer_refits_input_statistics_and_keeps_weights(source, target, tmp_path):
    """`normalizer="target"`: statistics from the target's labelled + unlabelled graphs; with no
    training at all (0 epochs of linear-probe would be a no-op), the weights stay the source's."""
    from gridtune.nn.normalizer import Normalizer

    src, _ = load_checkpoint(source)
    r = finetune(source, target, labels=20, strategy="linear-probe", unlabeled=30, normalizer="target",
                 out_dir=tmp_path / "t", train=FAST, with_scratch=False)
    assert r["normalizer"] == "target"
    tuned, _ = load_checkpoint(tmp_path / "t")
    pool_and_train = Normalizer().fit(target)  # a superset's statistics differ from the source's ...
    assert not torch.allclose(tuned.normalizer.x_mean, src.normalizer.x_mean)
    # ... and the refit ones are target statistics: close to those of the whole target set
    assert torch.allclose(tuned.normalizer.x_mean, pool_and_train.x_mean, atol=0.05 * float(pool_and_train.x_std.max()))
    for (name, a), (_, b) in zip(tuned.encoder.state_dict().items(), src.encoder.state_dict().items()):
        assert torch.equal(a, b), name  # linear-probe: frozen encoder
    kept = finetune(source, target, labels=20, strategy="linear-probe", out_dir=tmp_path / "s",
                    train=FAST, with_scratch=False)
    assert kept["normalizer"] == "source"
    assert torch.equal(load_checkpoint(tmp_path / "s")[0].normalizer.x_mean, src.normalizer.x_mean)


def test_cli_lists_strategies_and_reports_a_verdict(source, tmp_path, capsys, monkeypatch):
    assert main(["finetune", "--list-strategies"]) == 0
    listed = capsys.readouterr().out
    for name in ("scratch", "linear-probe", "adapter", "lora", "dann", "coral", "mmd"):
        assert f"  {name} " in listed
    assert main(["finetune", "--from", str(source), "--data", "x"]) == 2
    assert "missing `--labels`, `--strategy`, `--out`" in capsys.readouterr().err
    assert main(["finetune", "--from", str(source), "--data", "x", "--labels", "5",
                 "--strategy", "warp", "--out", str(tmp_path)]) == 2
    assert "unknown strategy `warp`" in capsys.readouterr().err
    assert "  replay " in listed
    assert main(["finetune", "--from", str(source), "--data", "x", "--labels", "5", "--strategy", "full",
                 "--source-data", "case9", "--out", str(tmp_path)]) == 2
    assert "--source-data is read by strategy `replay` only, not `full`" in capsys.readouterr().err


def test_constraints_are_trained_and_reported(source, target, tmp_path):
    spec = "monotone_load"  # a shipped constraint set, by name
    r = finetune(source, target, labels=20, strategy="full", out_dir=tmp_path, train=FAST,
                 constraints=spec, with_scratch=False)
    rep = r["constraints"]["test"]["monotone_load"]
    assert 0.0 <= rep["violation_rate"] <= 1.0
    assert r["constraints"]["formulation"]["formulation"] == "lagrangian"
    assert (tmp_path / "constraint_history.json").is_file()
    with pytest.raises(GridtuneError, match="bounds|opf"):  # an OPF-only spec on a feasibility model
        finetune(source, target, labels=20, strategy="full", out_dir=tmp_path, train=FAST,
                 constraints="bounds")


def test_opf_unlabelled_draws_keep_only_dc_feasible_scenarios(tmp_path):
    """An OPF head is scored on scenarios with an OPF solution: its unlabelled draw (no solve)
    keeps the ones whose load the DC network can carry (lam >= 1); other heads take all."""
    from gridtune.grids.build import build_dataset
    from gridtune.grids.dataset import open_dataset
    from gridtune.grids.recipe import load_recipe
    from gridtune.nn.loadability import dc_load_scale
    from gridtune.workflows.transfer import unlabeled_pool
    from tests.grids.recipes import recipe_file

    out = tmp_path / "ds"
    build_dataset(load_recipe(recipe_file(tmp_path, samples=4, scale="[1.0, 4.0]")), out,
                  workers=1, progress=False)
    ds = open_dataset(out, progress=False)
    raw = ds.unlabeled(24, 0)
    lam = [dc_load_scale(g) for g in raw]
    assert min(lam) < 1.0 < max(lam)  # the load range straddles the DC limit
    everything = unlabeled_pool(ds, [], 24, 0, "feasibility")
    assert all(torch.equal(a.x, b.x) for a, b in zip(everything, raw, strict=True))
    kept = unlabeled_pool(ds, [], 6, 0, "opf")
    assert len(kept) == 6 and all(dc_load_scale(g) >= 1.0 for g in kept)
    first = [g for g, v in zip(raw, lam, strict=True) if v >= 1.0][:6]
    assert all(torch.equal(a.x, b.x) for a, b in zip(kept, first, strict=True))  # same draw order
    few = unlabeled_pool(None, raw, 1000, 0, "opf")
    assert len(few) == sum(v >= 1.0 for v in lam)  # a plain list: filtered, never topped up


def test_a_larger_test_share_scores_more_graphs_with_the_same_labels(source, target, tmp_path):
    r = finetune(source, target, tmp_path, labels=12, strategy="linear-probe", train=FAST,
                 split="0.3,0.1,0.6", with_scratch=False, save=False)
    statuses = __import__("numpy").array(["feasible" if float(g.y_infeasible) == 0 else "infeasible"
                                          for g in target])
    _, _, te = split_indices(statuses, 0, (0.3, 0.1, 0.6))
    assert r["n_test"] == te.size > 0.5 * len(target) and r["split"] == [0.3, 0.1, 0.6]
    assert r["n_train"] + r["n_val"] == 12


def test_conformal_alpha_calibrates_on_the_target_validation_split_and_scores_the_fallback(source, tmp_path):
    data = graphs("case14", 240, seed=3)
    r = finetune(source, data, tmp_path, labels=20, strategy="full", train=FAST, seed=1,
                 split="0.5,0.25,0.25", with_scratch=False, conformal_alpha=0.1)
    meta = load_checkpoint(tmp_path)[1]
    assert (meta["split_seed"], meta["split_fractions"]) == (1, [0.5, 0.25, 0.25])
    statuses = __import__("numpy").array(["feasible" if float(g.y_infeasible) == 0 else "infeasible"
                                          for g in data])
    _, va, te = split_indices(statuses, 1, (0.5, 0.25, 0.25))
    t = r["trust"]
    assert t["alpha"] == 0.1 and t["n_calibration"] == va.size and t["n_test"] == te.size == r["n_test"]
    record = json.loads((tmp_path / "conformal.json").read_text())
    assert record["calibration_set"] == "validation split" and record["n_calibration"] == va.size
    assert 0.0 <= t["coverage"] <= 1.0 and 0.0 <= t["answered_share"] <= 1.0
    assert t["error_among_answered"] is None or 0.0 <= t["error_among_answered"] <= 1.0
    with pytest.raises(GridtuneError, match="conformal alpha `1.5` is not valid"):
        finetune(source, data, tmp_path / "bad", labels=20, strategy="full", conformal_alpha=1.5)


def test_replay_rehearses_the_source_training_split(target, tmp_path):
    """A checkpoint pre-trained on a dataset directory, fine-tuned with `replay` on it: the replayed
    graphs are exactly the source's training split (the checkpoint's split seed and fractions),
    the run completes, and the settings it cannot use are refused in one line each."""
    from gridtune.grids.dataset import open_dataset
    from gridtune.nn.checkpoint import load_checkpoint
    from tests.nn.synthetic import pretrain, write_dataset

    data = tmp_path / "case9-data"
    write_dataset(data, "case9", n=60, seed=0)
    ckpt = tmp_path / "ckpt"
    pretrain(str(data), task="feasibility", out_dir=ckpt, epochs=2, hidden=16, layers=2, batch_size=16,
             split=(0.6, 0.2, 0.2), seed=3)
    _, meta = load_checkpoint(ckpt)
    replayed = transfer.replay_graphs([str(data)], meta, "feasibility", None)
    ds = open_dataset(data)
    train_idx, _, _ = split_indices(ds.statuses, 3, (0.6, 0.2, 0.2))
    expected = {int(ds[i].scenario_id) for i in train_idx if ds.statuses[i] in ("feasible", "infeasible")}
    assert {int(g.scenario_id) for g in replayed} == expected
    r = finetune(ckpt, target, labels=20, strategy="replay", source_data=(str(data),),
                 out_dir=tmp_path / "replay", train=FAST)
    assert r["strategy"] == "replay" and 0.0 <= r["metrics"]["auroc"] <= 1.0
    assert r["strategy_config"]["weight"] == 1.0 and len(r["strategy_config"]["history"]) > 0
    with pytest.raises(GridtuneError, match="strategy `replay` needs the source's labelled data: "
                                            "pass `--source-data DATA`"):
        finetune(ckpt, target, labels=20, strategy="replay", out_dir=tmp_path / "x", train=FAST)
    with pytest.raises(GridtuneError, match="--source-data is read by strategy `replay` only, not `full`"):
        finetune(ckpt, target, labels=20, strategy="full", source_data=(str(data),),
                 out_dir=tmp_path / "x", train=FAST)
