"""Study specs: valid files load, every mistake is caught before work, naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridtune.errors import SpecError
from gridtune.specs import shipped_path
from gridtune.studies.plan import expand, make_plan
from gridtune.studies.spec import load_study

MONOTONE = shipped_path("constraints", "monotone_load")

BASE = """
name = "tiny"
sources = ["case9"]
targets = ["case14"]
strategies = ["full", "linear-probe"]
labels = [10, 20]
seeds = [0, 1]
"""


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_spec_loads_with_defaults(tmp_path):
    spec = load_study(write(tmp_path, BASE))
    assert spec.task == "feasibility"
    assert spec.labels == (10, 20)
    assert spec.headline == ("auroc", True)
    assert spec.base_dir == str(tmp_path.resolve())


def test_overrides_replace_file_values(tmp_path):
    spec = load_study(write(tmp_path, BASE), seeds=(3,))
    assert spec.seeds == (3,)


@pytest.mark.parametrize("extra, match", [
    ("colour = 3", r"study\.toml: unknown key `colour`; valid keys: .*`labels`"),
    ("task = \"regression\"", r"key `task` has bad value `'regression'`; expected one of `cost`, `feasibility`, `opf`"),
    ("pairs = \"some\"", r"key `pairs` has bad value `'some'`"),
    ("unlabeled = -1", r"key `unlabeled` = `-1` must be >= 0"),
    ("[pretrain]\nepochs = 0", r"\[pretrain\]: key `epochs` = `0` must be at least 1"),
    ("[pretrain]\nrate = 0.1", r"\[pretrain\]: unknown key `rate`"),
    ("[pretrain]\nmodel = \"gcn\"", r"\[pretrain\]: key `model` = `gcn`; valid: `gatv2`, `gine`, `transformer`"),
    ("[data]\nsamples = 15", r"budget `20` must be below `data.samples` = `15`"),
    ("constraints = [\"missing.toml\"]", r"key `constraints` names `missing.toml`, which does not exist"),
])
def test_bad_values_are_rejected_naming_file_and_key(tmp_path, extra, match):
    path = write(tmp_path, BASE + extra + "\n")
    with pytest.raises(SpecError, match=match):
        load_study(path)


def test_bad_list_values(tmp_path):
    with pytest.raises(SpecError, match=r"key `labels` has budget `1`"):
        load_study(write(tmp_path, BASE.replace("[10, 20]", "[1, 20]")))
    with pytest.raises(SpecError, match=r"key `strategies` lists `full` twice"):
        load_study(write(tmp_path, BASE.replace('"linear-probe"', '"full"')))
    with pytest.raises(SpecError, match=r"key `labels` has bad value `\['a'\]`"):
        load_study(write(tmp_path, BASE.replace("[10, 20]", '["a"]')))
    with pytest.raises(SpecError, match=r"missing required key `strategies`"):
        load_study(write(tmp_path, BASE.replace('strategies = ["full", "linear-probe"]', "")))


def test_unknown_case_and_missing_recipe(tmp_path):
    with pytest.raises(SpecError, match=r"key `targets` names unknown case `case15`"):
        load_study(write(tmp_path, BASE.replace('"case14"', '"case15"')))
    with pytest.raises(SpecError, match=r"key `sources` names recipe `grids/a.toml`, which does not exist"):
        load_study(write(tmp_path, BASE.replace('"case9"', '"grids/a.toml"')))


def test_only_same_grid_pair_is_rejected(tmp_path):
    with pytest.raises(SpecError, match=r"only pair `case9` -> `case9` is skipped"):
        load_study(write(tmp_path, BASE.replace('"case14"', '"case9"')))


def test_syntax_error_names_line(tmp_path):
    with pytest.raises(SpecError, match=r"malformed TOML: .*line 3"):
        load_study(write(tmp_path, 'name = "x"\n\nlabels = [1,, 2]\n'))


def test_data_overrides_are_validated_as_recipes(tmp_path):
    good = BASE + "[data]\nsamples = 40\n[data.overrides]\ntopology = { candidates = 4 }\n"
    plan = make_plan(load_study(write(tmp_path, good)))
    table = plan.dataset("case14").recipe
    assert table["topology"]["candidates"] == 4 and table["samples"] == 40
    assert table["case"] == "case14" and plan.dataset("case14").samples == 40
    bad = BASE + "[data.overrides]\ntopology = { candidates = 0 }\n"
    with pytest.raises(SpecError, match=r"\[data.overrides\] on `case9` \[topology\]: .*`candidates` = `0`"):
        make_plan(load_study(write(tmp_path, bad)))
    bad = BASE + "[data.overrides]\ntopology = { cand = 4 }\n"
    with pytest.raises(SpecError, match=r"unknown key `cand`"):
        make_plan(load_study(write(tmp_path, bad)))


def test_recipe_paths_are_relative_to_the_spec(tmp_path):
    (tmp_path / "grids").mkdir()
    (tmp_path / "grids" / "small9.toml").write_text('case = "case9"\nsamples = 30\n')
    spec = load_study(write(tmp_path, BASE.replace('"case9"', '"grids/small9.toml"')))
    cells = expand(spec)
    assert {c.source for c in cells} == {"small9"}
    assert make_plan(spec).dataset("small9").ref == str((tmp_path / "grids" / "small9.toml").resolve())


def test_matrix_expands_every_combination_once(tmp_path):
    (tmp_path / "mono.toml").write_text(MONOTONE.read_text())
    text = BASE.replace('targets = ["case14"]', 'targets = ["case14", "case9"]')
    text += 'constraints = ["mono.toml"]\nformulations = ["penalty", "lagrangian"]\n'
    spec = load_study(write(tmp_path, text))
    cells = expand(spec)
    # case9 -> case9 skipped (cross); 1 unconstrained + 2 formulations; 2 labels x 2 seeds x 2 strategies
    assert len(cells) == 1 * 3 * 2 * 2 * 2
    assert len({c.cell_id for c in cells}) == len(cells)
    assert {(c.constraint, c.formulation) for c in cells} == {
        ("none", "none"), ("mono", "penalty"), ("mono", "lagrangian")}
    # exactly one scratch carrier per group, and it is the first strategy
    carriers = [c for c in cells if c.with_scratch]
    assert len(carriers) == len({c.scratch_group for c in cells}) == 3 * 2 * 2
    assert all(c.strategy == "full" for c in carriers)
    all_pairs = load_study(write(tmp_path, text + 'pairs = "all"\n'))
    assert len(expand(all_pairs)) == 2 * len(cells)


def test_registry_checks_run_before_work(tmp_path):
    with pytest.raises(SpecError, match=r"key `strategies` names unknown strategy `fine`; valid: .*`linear-probe`"):
        load_study(write(tmp_path, BASE.replace('"full"', '"fine"')))
    (tmp_path / "mono.toml").write_text(MONOTONE.read_text())
    text = BASE + 'constraints = ["mono.toml"]\n'
    with pytest.raises(SpecError, match=r"key `formulations` names unknown formulation `dual`; valid: .*`penalty`"):
        load_study(write(tmp_path, text + 'formulations = ["dual"]\n'))
    with pytest.raises(SpecError, match=r"key `constraints`: .*mono.toml.*`cost`"):
        load_study(write(tmp_path, text + 'task = "cost"\n'))
    assert load_study(write(tmp_path, text)).constraints == ("mono.toml",)


def test_command_line_overrides_are_validated(tmp_path):
    from gridtune.studies.overrides import parse_assignment

    path = write(tmp_path, BASE)
    spec = load_study(path, **dict([parse_assignment("data.samples=50"),
                                    parse_assignment("seeds=[4]"), parse_assignment("task=cost")]))
    assert (spec.data.samples, spec.seeds, spec.task) == (50, (4,), "cost")
    with pytest.raises(SpecError, match=r"\[data\]: unknown key `sample`"):
        load_study(path, **dict([parse_assignment("data.sample=50")]))
    with pytest.raises(SpecError, match=r"expected KEY=VALUE"):
        parse_assignment("seeds")


@pytest.mark.parametrize("name", ["quickstart", "ieee_transfer", "constraints", "changed_grid"])
def test_shipped_studies_load(name):
    spec = load_study(name)
    assert spec.name == name
    assert len(expand(spec)) > 0


def test_demo_tells_the_changed_grid_story_with_verdicts_on_enough_data():
    from gridtune.commands.demo import demo_path

    assert demo_path() == shipped_path("studies", "changed_grid")
    spec = load_study(demo_path())
    assert spec.sources == ("case30",) and spec.targets == ("case30_changed",)
    assert len(spec.seeds) >= 3  # a verdict needs several seeds
    test_share = spec.finetune.split[2]
    assert spec.data.samples * test_share >= 1000  # each verdict on about a thousand scenarios


def test_finetune_settings_are_validated_and_change_the_fingerprint(tmp_path):
    from gridtune.studies.plan import bind

    spec = load_study(write(tmp_path, BASE + "[finetune]\nepochs = 30\n"))
    assert spec.finetune.epochs == 30 and spec.finetune.patience == 20
    other = load_study(write(tmp_path, BASE + "[finetune]\nepochs = 31\n"))
    one, two = make_plan(spec).cells[0], make_plan(other).cells[0]
    assert one.cell_id == two.cell_id and one.fingerprint != two.fingerprint
    assert bind(one.fingerprint, "a") != bind(one.fingerprint, "b")
    with pytest.raises(SpecError, match=r"\[finetune\]: key `lr` = `2.0` must lie in \(0, 1\)"):
        load_study(write(tmp_path, BASE + "[finetune]\nlr = 2.0\n"))


def test_conformal_alpha_reaches_the_cells_and_leaves_other_fingerprints_alone(tmp_path):
    plain = make_plan(load_study(write(tmp_path, BASE))).cells[0]
    spec = load_study(write(tmp_path, BASE + "[finetune]\nconformal_alpha = 0.05\n"))
    cell = make_plan(spec).cells[0]
    assert cell.config.conformal_alpha == 0.05 and plain.config.conformal_alpha is None
    assert cell.fingerprint != plain.fingerprint
    # a fingerprint computed before the key existed: the config without it
    import dataclasses

    from gridtune.studies.plan import _config_dict

    assert "conformal_alpha" not in _config_dict(plain.config, hashed=True)
    assert "conformal_alpha" in dataclasses.asdict(plain.config)
    with pytest.raises(SpecError, match=r"key `conformal_alpha` = `1.0` is not valid"):
        load_study(write(tmp_path, BASE + "[finetune]\nconformal_alpha = 1.0\n"))


def test_metric_must_belong_to_the_task(tmp_path):
    spec = load_study(write(tmp_path, BASE + 'metric = "ece"\n'))
    assert spec.headline == ("ece", False)
    assert load_study(write(tmp_path, BASE + 'task = "opf"\n')).headline == ("std_mse", False)
    with pytest.raises(SpecError, match=r"key `metric` = `mape_cost` is not a `feasibility` metric; valid: .*`auroc`"):
        load_study(write(tmp_path, BASE + 'metric = "mape_cost"\n'))


def test_reach_is_a_finite_number_and_leaves_the_cells_alone(tmp_path):
    base = make_plan(load_study(write(tmp_path, BASE)))
    plan = make_plan(load_study(write(tmp_path, BASE + "reach = [0.95, 0.99]\n")))
    assert list(plan.spec["reach"]) == [0.95, 0.99]  # a report setting: no cell is re-run for it
    assert [c.fingerprint for c in plan.cells] == [c.fingerprint for c in base.cells]
    with pytest.raises(SpecError, match=r"key `reach` holds `nan`; list finite values"):
        load_study(write(tmp_path, BASE + "reach = [0.95, nan]\n"))
    with pytest.raises(SpecError, match=r"reach"):
        load_study(write(tmp_path, BASE + 'reach = ["high"]\n'))


def test_self_supervised_pretraining_reaches_the_plan_and_leaves_other_fingerprints_alone(tmp_path):
    import dataclasses

    from gridtune.studies.plan import _pretrain_dict

    plain = make_plan(load_study(write(tmp_path, BASE))).pretrain[0]
    ssl = make_plan(load_study(write(tmp_path, BASE + "[pretrain]\nself_supervised_epochs = 5\n"
                                                      "unlabeled = 100\n"))).pretrain[0]
    assert (ssl.config.self_supervised_epochs, ssl.config.unlabeled) == (5, 100)
    assert ssl.fingerprint != plain.fingerprint
    assert "self_supervised_epochs" not in _pretrain_dict(plain.config)
    assert "self_supervised_epochs" in dataclasses.asdict(plain.config)
    with pytest.raises(SpecError, match=r"\[pretrain\]: unlabeled = `100` draws scenarios"):
        make_plan(load_study(write(tmp_path, BASE + "[pretrain]\nunlabeled = 100\n")))
