"""Recalled dataset keys: a rerun of a finished build answers without building the grid."""

import os
import subprocess
import sys

import pytest

from gridtune.grids.build import build_dataset, dataset_key
from gridtune.grids.keys import finished_dataset, inputs_digest, recall_key
from gridtune.grids.recipe import load_recipe
from tests.grids.recipes import recipe_file

HEAVY = "('torch', 'pandapower', 'cvxpy', 'torch_geometric')"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keys")
    recipe_path = recipe_file(tmp, samples=6)
    out = tmp / "ds"
    build_dataset(load_recipe(recipe_path), out, workers=1, progress=False)
    return recipe_path, out


def _cli_build(*args: str) -> subprocess.CompletedProcess:
    code = ("import sys; from gridtune.cli import main; code = main(['data', 'build', *sys.argv[1:]]); "
            f"heavy = [m for m in {HEAVY} if m in sys.modules]; "
            "print('HEAVY', ','.join(heavy)); sys.exit(code)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=os.environ.copy())


def test_a_computed_key_is_recalled(finished):
    recipe_path, out = finished
    recipe = load_recipe(recipe_path)
    assert recall_key(recipe) == dataset_key(recipe)
    assert finished_dataset(recipe, out) == out


def test_rerun_of_a_finished_build_loads_no_pandapower_or_torch(finished):
    recipe_path, out = finished
    run = _cli_build(str(recipe_path), "--out", str(out))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[-1] == "HEAVY"
    assert any(line.startswith("hash") for line in lines)


def test_other_inputs_recall_nothing(finished, tmp_path):
    recipe_path, out = finished
    bigger = load_recipe(recipe_path, samples=7)   # same key, but the dataset has 6: work to do
    assert recall_key(bigger) is not None and finished_dataset(bigger, out) is None
    other = load_recipe(recipe_file(tmp_path, samples=6, scale="[0.8, 2.0]"))
    assert inputs_digest(other) != inputs_digest(load_recipe(recipe_path))
    assert recall_key(other) is None and finished_dataset(other, out) is None


def test_a_damaged_file_sends_the_rerun_to_the_build_which_repairs_it(finished, tmp_path):
    import shutil

    recipe_path, out = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    table = copy / "scenarios.parquet"
    data = bytearray(table.read_bytes())
    data[len(data) // 2] ^= 0xFF
    table.write_bytes(bytes(data))
    assert finished_dataset(load_recipe(recipe_path), copy) is None
    run = _cli_build(str(recipe_path), "--out", str(copy))
    assert run.returncode == 0, run.stderr
    assert "scenarios.parquet" in run.stderr and "rebuilding" in run.stderr
    assert finished_dataset(load_recipe(recipe_path), copy) == copy
