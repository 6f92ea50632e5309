"""`gridtune verify PATH ...`: datasets, checkpoints and study directories checked against their
seals, one line per damaged path, exit 2; a path of no known kind is named as such."""

from __future__ import annotations

import shutil

import pytest

from gridtune.cli import main
from gridtune.grids.build import build_dataset
from gridtune.grids.recipe import load_recipe
from tests.grids.recipes import recipe_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A real case9 dataset and a checkpoint trained on it."""
    from gridtune.core.trainer import TrainConfig
    from gridtune.nn.model import ModelConfig
    from gridtune.workflows.pretrain import pretrain

    tmp = tmp_path_factory.mktemp("verify")
    data = build_dataset(load_recipe(recipe_file(tmp, samples=24)), tmp / "ds", workers=1,
                         progress=False)
    pretrain(data, tmp / "ckpt", task="feasibility", model=ModelConfig(hidden=8, layers=1),
             train=TrainConfig(epochs=2, batch_size=8))
    return data, tmp / "ckpt"


def _run(argv, capsys):
    code = main(["verify", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_whole_paths_verify_and_say_their_kind(made, capsys):
    data, ckpt = made
    code, out, err = _run([data, ckpt], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("ok  dataset") and "5 files match their checksums" in lines[0]
    assert lines[1].startswith("ok  checkpoint") and str(ckpt) in lines[1]


def test_each_damaged_path_is_named_in_one_line_and_the_others_still_checked(made, tmp_path, capsys):
    data, ckpt = made
    bad_data, bad_ckpt = tmp_path / "ds", tmp_path / "ckpt"
    shutil.copytree(data, bad_data)
    shutil.copytree(ckpt, bad_ckpt)
    table = bad_data / "scenarios.parquet"
    raw = bytearray(table.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    table.write_bytes(bytes(raw))
    weights = bad_ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    code, out, err = _run([bad_data, ckpt, bad_ckpt], capsys)
    assert code == 2
    assert out.startswith("ok  checkpoint")  # the whole one between them is still checked
    lines = err.splitlines()
    assert len(lines) == 2
    assert "scenarios.parquet" in lines[0] and "gridtune data build" in lines[0]
    assert "model.safetensors` is truncated" in lines[1]


def test_paths_of_no_known_kind(tmp_path, capsys):
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "study.json").write_text("{not json")
    code, out, err = _run([tmp_path, tmp_path / "missing", tmp_path / "study"], capsys)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 3
    assert "is not a dataset, checkpoint or study directory" in lines[0]
    assert "does not exist" in lines[1]
    assert "study" in lines[2]
