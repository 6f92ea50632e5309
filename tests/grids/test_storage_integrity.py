"""Damage to a dataset directory is named, never read; a rebuild redoes only the damaged part.

Each fault is applied to a copy of one real case9 dataset: a file truncated to half, a flipped
bit, a missing file, another dataset's table, a damaged part file, an unfinished seal.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest

from gridtune.cli import main
from gridtune.errors import DataError
from gridtune.files import unseal
from gridtune.grids.build import build_dataset
from gridtune.grids.dataset import open_dataset
from gridtune.grids.recipe import load_recipe
from gridtune.grids.storage import DATASET_FILES, check_dataset
from tests.grids.recipes import recipe_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("integrity")
    out = tmp / "ds"
    recipe = recipe_file(tmp)
    build_dataset(load_recipe(recipe), out, workers=1, progress=False)
    return out, recipe, json.loads((out / "manifest.json").read_text())["content_hash"]


def _copy(built, tmp_path):
    src, recipe, content = built
    dst = tmp_path / "ds"
    shutil.copytree(src, dst)
    return dst, recipe, content


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_built_dataset_is_sealed_and_verifies(built, capsys):
    out, _, _ = built
    sealed = json.loads((out / "checksums.json").read_text())["files"]
    assert set(sealed) == set(DATASET_FILES)
    code, text, _ = _run(["data", "info", out, "--verify"], capsys)
    assert code == 0 and "verified   5 files" in text
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("name, redo", [
    ("scenarios.parquet", "its scenarios are labelled again"),
    ("calibration.json", "the topologies are calibrated again"),
    ("grid.json", "the grid is prepared again from the recipe"),
    ("recipe.json", "rewriting it"),
    ("manifest.json", "the summary is written again"),
])
def test_a_file_truncated_to_half_is_named_then_rebuilt(built, tmp_path, capsys, name, redo):
    ds, recipe, content = _copy(built, tmp_path)
    path = ds / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    code, _, err = _run(["data", "info", ds], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert f"`{path}` is" in err and "rerun `gridtune data build`" in err
    with pytest.raises(DataError, match=name.replace(".", r"\.")):
        open_dataset(ds)
    code, _, err = _run(["data", "build", recipe, "--out", ds, "--workers", "1"], capsys)
    assert code == 0 and "Traceback" not in err
    assert f"`{name}`" in err and redo in err
    if name != "scenarios.parquet":  # nothing else is labelled again
        assert "labelled again" not in err and "labelling" not in err
    assert json.loads((ds / "manifest.json").read_text())["content_hash"] == content
    assert check_dataset(ds) == []


@pytest.mark.parametrize("fault", ["flip", "foreign", "missing"])
def test_a_flipped_foreign_or_missing_table_is_named(built, tmp_path, capsys, fault):
    ds, recipe, content = _copy(built, tmp_path)
    path = ds / "scenarios.parquet"
    if fault == "flip":
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 3] ^= 0x04
        path.write_bytes(bytes(raw))
        problem = "has other content than was written"
    elif fault == "foreign":  # a valid table of other data (here: one scenario short)
        pq.write_table(pq.read_table(path).slice(1), path)
        problem = "is truncated"
    else:
        path.unlink()
        problem = "is missing"
    code, _, err = _run(["data", "info", ds, "--verify"], capsys)
    assert code == 2 and err.count("\n") == 1 and f"`{path}` {problem}" in err, err
    code, _, err = _run(["data", "build", recipe, "--out", ds, "--workers", "1"], capsys)
    assert code == 0 and "its scenarios are labelled again" in err
    assert json.loads((ds / "manifest.json").read_text())["content_hash"] == content


def test_a_damaged_part_file_is_named_and_its_scenarios_labelled_again(built, tmp_path, capsys):
    ds, recipe, content = _copy(built, tmp_path)
    (ds / "parts").mkdir()
    frame = pd.read_parquet(ds / "scenarios.parquet")
    frame.iloc[6:].to_parquet(ds / "parts" / "part-000000-1.parquet", index=False)
    frame.iloc[:6].to_parquet(ds / "scenarios.parquet", index=False)
    part = ds / "parts" / "part-000000-1.parquet"
    part.write_bytes(part.read_bytes()[:50])
    unseal(ds, ["scenarios.parquet", "manifest.json"])  # an extend in progress
    code, _, err = _run(["data", "build", recipe, "--out", ds, "--workers", "1"], capsys)
    assert code == 0 and "part `part-000000-1.parquet` is damaged" in err
    assert json.loads((ds / "manifest.json").read_text())["content_hash"] == content


def test_an_unfinished_seal_is_reported_and_finished_without_relabelling(built, tmp_path, capsys):
    ds, recipe, content = _copy(built, tmp_path)
    unseal(ds, ["scenarios.parquet", "manifest.json"])  # killed between the table and the seal
    [damage] = [d for d in check_dataset(ds) if d.path.name == "scenarios.parquet"]
    assert damage.kind == "unsealed"
    code, _, err = _run(["data", "info", ds], capsys)
    assert code == 2 and "is not sealed by checksums.json" in err
    code, _, err = _run(["data", "build", recipe, "--out", ds, "--workers", "1"], capsys)
    assert code == 0 and "labelled again" not in err and "labelling" not in err
    assert check_dataset(ds) == []
    assert json.loads((ds / "manifest.json").read_text())["content_hash"] == content


def test_a_foreign_directory_with_a_damaged_recipe_is_refused(built, tmp_path, capsys):
    ds, recipe, _ = _copy(built, tmp_path)
    (ds / "recipe.json").write_text("{")
    other = tmp_path / "other.toml"
    other.write_text(recipe.read_text().replace("seed = 5", "seed = 6"))
    code, _, err = _run(["data", "build", other, "--out", ds, "--workers", "1"], capsys)
    assert code == 2 and "holds a different recipe's data" in err and "recipe.json` is damaged" in err
