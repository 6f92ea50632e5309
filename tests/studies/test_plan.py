"""Study plans: a spec resolves once into datasets, configs and cells; every spec key reaches
the workflow configs; the shipped benchmark specs validate. No training here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gridtune.cli import main
from gridtune.errors import SpecError
from gridtune.specs import read_toml
from gridtune.studies.plan import make_plan
from gridtune.studies.spec import load_study

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

BASE = """
name = "tiny"
sources = ["case9"]
targets = ["case14"]
strategies = ["full", "dann"]
labels = [10, 20]
seeds = [0, 1]
unlabeled = 20
"""

EVERY_KEY = BASE + """
report_constraints = ["monotone_load"]

[model]
hidden = 16
layers = 2
balance_pg = false
outage_feature = true

[pretrain]
epochs = 7
seed = 3
lr = 0.002
weight_decay = 0.01
patience = 4
batch_size = 16
lr_schedule = "cosine"
grad_clip_norm = 1.5
split = [0.6, 0.2, 0.2]
include_unknown = true

[finetune]
epochs = 9
patience = 5
lr = 0.003
weight_decay = 0.02
batch_size = 8
lr_schedule = "cosine"
grad_clip_norm = 2.5
normalizer = "target"
pre_adapt_epochs = 2
split = [0.3, 0.1, 0.6]
with_scratch = false
"""


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Formulation variants are written into the cache: a fresh one per test."""
    monkeypatch.setenv("GRIDTUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_spec_key_reaches_the_workflow_configs(tmp_path):
    plan = make_plan(load_study(write(tmp_path, EVERY_KEY)))
    (pre,) = plan.pretrain
    cfg = pre.config
    assert (cfg.task, cfg.samples, cfg.include_unknown, cfg.split) == (
        "feasibility", None, True, (0.6, 0.2, 0.2))
    assert (cfg.model.hidden, cfg.model.layers, cfg.model.balance_pg, cfg.model.outage_feature,
            cfg.model.conv) == (16, 2, False, True, "gine")
    t = cfg.train
    assert (t.epochs, t.seed, t.lr, t.weight_decay, t.patience, t.batch_size, t.lr_schedule,
            t.grad_clip_norm) == (7, 3, 0.002, 0.01, 4, 16, "cosine", 1.5)
    assert len(plan.cells) == 8
    for c in plan.cells:
        tc = c.config
        assert (tc.labels, tc.strategy, tc.seed) == (c.cell.labels, c.cell.strategy, c.cell.seed)
        assert (tc.normalizer, tc.pre_adapt_epochs, tc.split, tc.with_scratch) == (
            "target", 2, (0.3, 0.1, 0.6), False)
        assert tc.unlabeled == 20  # pre-adaptation and the target normaliser use it
        assert tc.report_constraints and tc.report_constraints[0].endswith("monotone_load.toml")
        t = tc.train
        assert (t.epochs, t.seed, t.lr, t.weight_decay, t.patience, t.batch_size, t.lr_schedule,
                t.grad_clip_norm) == (9, c.cell.seed, 0.003, 0.02, 5, 8, "cosine", 2.5)
        assert not c.cell.with_scratch
    assert plan.report_sets == (("monotone_load", plan.cells[0].config.report_constraints[0]),)
    json.dumps(plan.to_dict())  # study.json records the resolved plan


def test_defaults_map_onto_the_config_defaults(tmp_path):
    from gridtune.core.trainer import TrainConfig
    from gridtune.nn.model import ModelConfig
    from gridtune.workflows.configs import PretrainConfig

    plan = make_plan(load_study(write(tmp_path, BASE)))
    cfg = plan.pretrain[0].config
    assert cfg.model == ModelConfig() and cfg.split == PretrainConfig().split
    assert cfg.train == TrainConfig(epochs=60)
    carriers = [c for c in plan.cells if c.cell.with_scratch]
    assert len(carriers) == 4 and all(c.config.with_scratch for c in carriers)
    # unlabelled scenarios are drawn only where they are used: `dann`, not `full`
    assert {c.cell.strategy: c.config.unlabeled for c in plan.cells} == {"full": 0, "dann": 20}


def test_pretrain_shorthands_and_model_table(tmp_path):
    spec = load_study(write(tmp_path, BASE + '[pretrain]\nmodel = "gatv2"\nhidden = 32\n'
                                             "[model]\nheads = 2\n"))
    model = make_plan(spec).pretrain[0].config.model
    assert (model.conv, model.hidden, model.heads) == ("gatv2", 32, 2)
    with pytest.raises(SpecError, match=r"`pretrain.hidden` = `32` contradicts `model.hidden` = `16`"):
        load_study(write(tmp_path, BASE + "[pretrain]\nhidden = 32\n[model]\nhidden = 16\n"))


@pytest.mark.parametrize("extra, match", [
    ("[model]\nhiden = 3", r"\[model\]: unknown key `hiden`; valid keys: .*`hidden`"),
    ("[model]\nhidden = \"wide\"", r"\[model\]: key `hidden` has bad value"),
    ("[pretrain]\nlr_schedule = \"step\"", r"\[pretrain\]: key `lr_schedule` = `step`; valid: `cosine`"),
    ("[finetune]\nnormalizer = \"both\"", r"\[finetune\]: key `normalizer` has bad value"),
    ("[finetune]\npre_adapt_epochs = -1", r"key `pre_adapt_epochs` = `-1` must be >= 0"),
    ("[finetune]\nsplit = [0.5, 0.5]", r"\[finetune\]: key `split` has bad value"),
    ("report_constraints = [\"nowhere\"]", r"key `report_constraints` names `nowhere`, which does not exist"),
])
def test_bad_new_keys_are_rejected_before_work(tmp_path, extra, match):
    with pytest.raises(SpecError, match=match):
        load_study(write(tmp_path, BASE + extra + "\n"))


def test_settings_the_configs_refuse_are_errors_of_the_plan(tmp_path):
    text = BASE.replace("unlabeled = 20", "unlabeled = 0").replace('"dann"', '"adapter"')
    with pytest.raises(SpecError, match=r"\[finetune\], cell `case9__case14__full__n10.*--pre-adapt"):
        make_plan(load_study(write(tmp_path, text + "[finetune]\npre_adapt_epochs = 3\n")))
    with pytest.raises(SpecError, match=r"\[pretrain\]: .*split"):
        make_plan(load_study(write(tmp_path, BASE + "[pretrain]\nsplit = [0.9, 0.2, 0.2]\n")))


def test_fingerprints_follow_what_changes_a_result(tmp_path):
    base = make_plan(load_study(write(tmp_path, BASE)))
    wider = make_plan(load_study(write(tmp_path, BASE + "[model]\nhidden = 32\n")))
    cosine = make_plan(load_study(write(tmp_path, BASE + '[finetune]\nlr_schedule = "cosine"\n')))
    assert base.pretrain[0].fingerprint != wider.pretrain[0].fingerprint
    assert base.pretrain[0].fingerprint == cosine.pretrain[0].fingerprint
    for other in (wider, cosine):  # a new source model or fine-tuning setting: every cell stale
        assert all(a.fingerprint != b.fingerprint for a, b in zip(base.cells, other.cells))
    again = make_plan(load_study(write(tmp_path, BASE)))
    assert [c.fingerprint for c in again.cells] == [c.fingerprint for c in base.cells]


SET = BASE.replace('sources = ["case9"]', 'sources = ["small", "case9"]').replace(
    'targets = ["case14"]', 'targets = ["case14", "case30"]') + """
[source_sets]
small = ["case9", "case14"]
"""


def test_a_source_set_is_one_pretraining_across_its_grids(tmp_path):
    plan = make_plan(load_study(write(tmp_path, SET)))
    assert {p.source: p.members for p in plan.pretrain} == {"small": ("case9", "case14"),
                                                            "case9": ("case9",)}
    assert [d.label for d in plan.datasets] == ["case9", "case14", "case30"]  # members built once
    pairs = {(c.cell.source, c.cell.target) for c in plan.cells}
    # cross: a set never targets its own members
    assert pairs == {("small", "case30"), ("case9", "case14"), ("case9", "case30")}
    alone = make_plan(load_study(write(tmp_path, BASE)))
    assert plan.pretrain_for("case9").fingerprint == alone.pretrain[0].fingerprint
    assert plan.pretrain_for("small").fingerprint != alone.pretrain[0].fingerprint
    assert plan.to_dict()["pretrain"]["small"]["members"] == ["case9", "case14"]
    assert "small            " in plan.describe() and "one model across case9, case14" in plan.describe()


@pytest.mark.parametrize("change, match", [
    ('small = ["case9"]', r"key `source_sets.small` must list at least two grids"),
    ('small = ["case9", "case9"]', r"key `source_sets.small` lists a grid twice"),
    ('other = ["case9", "case14"]', r"key `source_sets.other` is not listed in `sources`"),
    ('small = ["case9", "nowhere"]', r"key `sources` names unknown case `nowhere`"),
])
def test_bad_source_sets(tmp_path, change, match):
    with pytest.raises(SpecError, match=match):
        load_study(write(tmp_path, SET.replace('small = ["case9", "case14"]', change)))
    with pytest.raises(SpecError, match=r"key `targets` names source set `small`"):
        load_study(write(tmp_path, SET.replace('targets = ["case14", "case30"]', 'targets = ["small"]')))


def test_study_plan_command_prints_cells_and_runs_nothing(tmp_path, capsys, monkeypatch):
    import gridtune.studies.runner as runner

    monkeypatch.setattr(runner, "run_plan", lambda *a, **k: pytest.fail("plan must not run"))
    path = write(tmp_path, BASE)
    assert main(["study", "plan", str(path), "--set", "seeds=[0]"]) == 0
    out = capsys.readouterr().out
    assert "cells (4; 2 also train the scratch baseline" in out
    assert "case9__case14__dann__n20__s0__none__none" in out and "__s1__" not in out
    assert not (tmp_path / "runs").exists()
    assert main(["study", "explain", str(path)]) == 2
    assert "unknown action `explain`" in capsys.readouterr().err


@pytest.mark.parametrize("name, cells, members", [
    ("changed_grid_case118", 60, ("case118",)),
    ("new_grid_case118", 20, ("case14", "case30", "case39", "case57")),
])
def test_transfer_target_specs_validate(name, cells, members):
    path = BENCHMARKS / f"{name}.toml"
    assert f"gridtune study run benchmarks/{name}.toml --out runs/{name}" in path.read_text()
    plan = make_plan(load_study(path))
    assert len(plan.cells) == cells and plan.pretrain[0].members == members
    assert len({c.cell.seed for c in plan.cells}) == 5  # headline figures: five seeds
    assert {c.cell.strategy: c.config.unlabeled for c in plan.cells}["self-training"] == 1000


def test_changed_grid_variants_spec_keeps_the_targets_changes_out_of_pre_training():
    name = "changed_grid_case118_variants"
    path = BENCHMARKS / f"{name}.toml"
    assert f"gridtune study run benchmarks/{name}.toml --out runs/" in path.read_text()
    plan = make_plan(load_study(path))
    assert plan.pretrain[0].members == ("case118", "case118_variant_east", "case118_variant_central")
    assert len(plan.cells) == 60 and len({c.cell.seed for c in plan.cells}) == 5
    assert plan.pretrain_for("case118_family_6000").members == (
        "case118_6000", "case118_variant_east", "case118_variant_central")
    recipes = {d.label: d.recipe for d in plan.datasets}
    # the control: the base grid alone, as many scenarios as the family, the same cached dataset
    control = plan.pretrain_for("case118_6000")
    assert control.members == ("case118_6000",) and "changes" not in recipes["case118_6000"]
    assert recipes["case118_6000"]["samples"] == 3000 + 2 * 1500
    assert {d.label: d.directory for d in plan.datasets}["case118_6000"] == {
        d.label: d.directory for d in plan.datasets}["case118"]
    target = recipes["case118_changed"]["changes"]
    for member in plan.pretrain[0].members[1:]:
        changes = recipes[member]["changes"]
        assert changes and changes["scale_loads"][0]["factor"] == 1.2
        assert not {g["gen"] for g in changes["remove_generators"]} & {
            g["gen"] for g in target["remove_generators"]}
        assert not set(changes["scale_loads"][0]["buses"]) & set(target["scale_loads"][0]["buses"])
        assert {(b["from_bus"], b["to_bus"]) for b in changes["add_branches"]}.isdisjoint(
            (b["from_bus"], b["to_bus"]) for b in target["add_branches"])
        # the variant is the shipped base recipe plus its changes, at half the size
        assert {k: v for k, v in recipes[member].items() if k not in ("changes", "samples")} == {
            k: v for k, v in recipes["case118"].items() if k != "samples"}


@pytest.mark.parametrize("name, cells, task", [
    ("transfer_curve", 72, "feasibility"),
    ("constraints_monotone", 18, "feasibility"),
    ("constraints_power_balance", 18, "opf"),
])
def test_benchmark_specs_validate(name, cells, task):
    path = BENCHMARKS / f"{name}.toml"
    header = path.read_text().split("\nname = ")[0]
    assert f"gridtune study run benchmarks/{name}.toml --out runs/{name}" in header
    assert "2 CPU cores" in header
    plan = make_plan(load_study(path))
    assert plan.name == name and plan.task == task and len(plan.cells) == cells
    assert {d.label for d in plan.datasets} >= {"case118"}
    if name == "transfer_curve":
        assert plan.datasets[0].label == "case30_rerated"
        assert sorted({c.cell.labels for c in plan.cells}) == [25, 50, 100, 250, 500, 1000]
        assert {c.cell.strategy: c.config.unlabeled for c in plan.cells} == {
            "full": 0, "linear-probe": 0, "adapter": 0, "dann": 1000}
        assert plan.cells[0].config.train.epochs == 150 and plan.pretrain[0].config.train.epochs == 200
    else:
        assert {c.cell.formulation for c in plan.cells} == {
            "none", "penalty_w0.1", "penalty", "penalty_w10", "lagrangian", "augmented-lagrangian"}
        scales = {c.cell.formulation: read_toml(c.config.constraints)["formulation"]
                  .get("penalty", {}).get("scale") for c in plan.cells if c.config.constraints}
        assert (scales["penalty_w0.1"], scales["penalty"], scales["penalty_w10"]) == (0.1, None, 10.0)
        assert not any(c.config.with_scratch for c in plan.cells)
        assert all(c.config.unlabeled == (0 if c.cell.constraint == "none" else 1000)
                   for c in plan.cells)
    if task == "opf":
        assert plan.pretrain[0].config.model.balance_pg is False
        assert [label for label, _ in plan.report_sets] == ["power_balance", "nodal_balance"]
        assert plan.cells[0].config.train.lr_schedule == "cosine"


VARIANTS = BASE.replace('"dann"', '"adapter"') + """
constraints = ["monotone_load"]
formulations = ["lagrangian", "strict", "penalty_w10"]

[formulation_settings.strict]
formulation = "lagrangian"
dual_lr = 5.0
target_rate = {monotone_load = 0.0}

[formulation_settings.penalty_w10]
formulation = "penalty"
scale = 10.0
"""


def test_formulation_variants_train_on_a_copy_with_their_settings(tmp_path, cache):
    from gridtune.constraints.spec import load_constraint_set
    from gridtune.specs import shipped_path

    plan = make_plan(load_study(write(tmp_path, VARIANTS)))
    by_form = {c.cell.formulation: c for c in plan.cells if c.cell.constraint == "monotone_load"}
    assert set(by_form) == {"lagrangian", "strict", "penalty_w10"}
    shipped = str(shipped_path("constraints", "monotone_load"))
    assert by_form["lagrangian"].config.constraints == shipped
    strict, heavy = by_form["strict"].config, by_form["penalty_w10"].config
    assert (strict.formulation, heavy.formulation) == ("lagrangian", "penalty")
    assert Path(strict.constraints).is_relative_to(cache)
    settings = load_constraint_set(strict.constraints, "feasibility").formulation
    assert settings["lagrangian"]["dual_lr"] == 5.0
    assert settings["lagrangian"]["target_rate"] == {"monotone_load": 0.0}
    assert settings["lagrangian"]["dual_signal"] == "rate"  # the set's other settings stay
    assert load_constraint_set(heavy.constraints, "feasibility").formulation["penalty"]["scale"] == 10.0
    # every cell reports the set itself, whichever copy it trained on
    assert plan.report_sets == (("monotone_load", shipped),)
    assert len({c.fingerprint for c in plan.cells}) == len(plan.cells)


@pytest.mark.parametrize("change, match", [
    (('"strict", ', ""), r"`formulation_settings.strict` names no formulation listed"),
    (('formulation = "penalty"', 'formulation = "fixed"'),
     r"`formulation_settings.penalty_w10.formulation` = `fixed`; valid: .*`penalty`"),
    (("scale = 10.0", "weight = 10.0"),
     r"`formulation_settings.penalty_w10`: formulation `penalty` got an unknown setting"),
])
def test_bad_formulation_variants(tmp_path, change, match):
    with pytest.raises(SpecError, match=match):
        make_plan(load_study(write(tmp_path, VARIANTS.replace(*change))))


def test_replay_cells_are_bound_to_their_source_datasets(tmp_path):
    """A `replay` cell gets the directories of every grid its source pre-trained on (and their
    scenario count) when the runner makes its job; its plan fingerprint is the same whichever
    directories those are, since the source's content hash is bound to it at run time."""
    from gridtune.studies.runner import DatasetRef, replay_sources

    text = SET.replace('strategies = ["full", "dann"]', 'strategies = ["full", "replay"]')
    plan = make_plan(load_study(write(tmp_path, text)))
    refs = {label: DatasetRef(label, f"/data/{label}", 300, "h", {}) for label in ("case9", "case14", "case30")}
    replay = [c for c in plan.cells if c.cell.strategy == "replay"]
    assert replay and all(c.config.source_data == () for c in replay)
    by_source = {c.cell.source: replay_sources(c, plan, refs) for c in replay}
    assert by_source["small"].source_data == ("/data/case9", "/data/case14")
    assert by_source["case9"].source_data == ("/data/case9",)
    assert by_source["case9"].source_samples == 300
    full = next(c for c in plan.cells if c.cell.strategy == "full")
    assert replay_sources(full, plan, refs) is full.config
    again = make_plan(load_study(write(tmp_path, text)))
    assert [c.fingerprint for c in again.cells] == [c.fingerprint for c in plan.cells]
