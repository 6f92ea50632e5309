"""A study with a federated cell: it runs, is stored with per-site metrics and epsilon, is reused
on a rerun, appears in the report; a bad federated entry is one line, exit 2."""

import json
from pathlib import Path

import pytest

from gridtune.cli import main

CASE9 = Path(__file__).resolve().parents[2] / "gridtune" / "resources" / "datasets" / "case9.toml"


@pytest.fixture(scope="module")
def study_file(tmp_path_factory) -> Path:
    """A study of one federated entry over two built case9 sites (40 scenarios each), under
    record-level DP, one seed."""
    from gridtune.grids.dataset import open_dataset

    root = tmp_path_factory.mktemp("fed-study")
    other = root / "case9_other.toml"
    other.write_text(CASE9.read_text().replace("seed = 0", "seed = 7"))
    dirs = [str(open_dataset(r, samples=40, workers=1, progress=False, cache_dir=root / r.stem).directory)
            for r in (CASE9, other)]
    (root / "fed.toml").write_text(
        f"sites = {json.dumps(dirs)}\nsplit = [0.5, 0.25, 0.25]\nrounds = 1\nseeds = [5]\n"
        "[model]\nhidden = 8\nlayers = 1\nhead_hidden = 8\ndc_loadability = false\n"
        "[personalise]\nmethods = [\"head\"]\nepochs = 1\npatience = 1\nlocal_epochs = 1\n")
    study = root / "study.toml"
    study.write_text('name = "fed"\nseeds = [0]\n[[federated]]\nname = "two-sites"\nspec = "fed.toml"\n'
                     '[federated.privacy]\nkind = "record"\nepsilon = 8.0\n')
    return study


def test_a_federated_cell_runs_is_stored_reported_and_reused(study_file, tmp_path):
    from gridtune.studies.runner import run_study
    from gridtune.studies.store import ResultsStore, verify_study

    out = tmp_path / "study"
    first = run_study(study_file, out, workers=1, log=lambda _: None, progress=False)
    assert (first.cells, first.ran, first.skipped, first.failed) == (1, 1, 0, 0)
    store = ResultsStore(out)
    record = store.load_federated("federated__two-sites__s0")
    assert record["status"] == "ok" and record["sites"] == ["case9", "case9_other"]
    assert set(record["metrics"]["case9"]) == {"global", "head", "local"}
    assert 0 < record["epsilon"] <= 8.0  # the study's seed and the inline privacy table were run
    assert json.loads((out / "cells" / "federated__two-sites__s0" / "config.json").read_text())["seeds"] == [0]
    report = (out / "report.md").read_text()
    assert "## Federated cells" in report and "| case9_other |" in report and "epsilon spent" in report
    assert verify_study(out, data=False) > 0

    again = run_study(study_file, out, workers=1, log=lambda _: None, progress=False)
    assert (again.ran, again.skipped) == (0, 1)
    assert store.load_federated("federated__two-sites__s0")["finished_utc"] == record["finished_utc"]


@pytest.mark.parametrize(("entry", "match"), [
    ('name = "x"\nspec = "missing.toml"', "key `spec` names `missing.toml`, which does not exist"),
    ('name = "x"\nspec = "fed.toml"\nseeds = [1]', "key `seeds` is the study's"),
    ('name = "x"\nspec = "fed.toml"\nround = 2', "unknown key `round`"),
    ('name = "x y"\nspec = "fed.toml"', "key `name` = `x y` must name the cell"),
    ('name = "x"\nsites = [{grid = "case30", zone = 9}, "case9"]\n', "valid zones: `1`, `2`, `3`"),
])
def test_a_bad_federated_cell_is_one_line_and_exit_2(study_file, tmp_path, capsys, entry, match):
    bad = study_file.parent / "bad.toml"
    bad.write_text(f'name = "bad"\n[[federated]]\n{entry}\n')
    code = main(["study", "run", str(bad), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert match in err, err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_a_federated_cell_from_init_is_bound_to_the_checkpoints_weights(study_file, public_checkpoint, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from gridtune.federated.spec import load_spec
    from gridtune.studies.federated_cells import site_hashes
    from gridtune.studies.plan import FederatedPlan

    other = tmp_path / "public"
    shutil.copytree(public_checkpoint, other)
    weights = load_file(str(other / "model.safetensors"))
    name = next(iter(weights))
    weights[name] = weights[name] + 1.0
    save_file(weights, str(other / "model.safetensors"))
    fed = study_file.parent / "fed.toml"
    hashes = [site_hashes(FederatedPlan("public", 0, load_spec(fed, init=str(ckpt), shared="head"), "f"),
                          workers=1) for ckpt in (public_checkpoint, other)]
    plain = site_hashes(FederatedPlan("plain", 0, load_spec(fed), "f"), workers=1)
    assert hashes[0][:-1] == hashes[1][:-1] == plain  # the same sites' data ...
    assert hashes[0][-1] != hashes[1][-1]  # ... from another public model: the cell runs again
