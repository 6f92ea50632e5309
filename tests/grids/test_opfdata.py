"""OPFData interop, checked by PyG's own `OPFDataset` reading the export from disk."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest

from gridtune.errors import DataError
from gridtune.grids.opfdata import (
    EXAMPLES_PER_GROUP,
    export_opfdata,
    groups_needed,
    import_opfdata,
    split_starts,
)

RECIPE = """
case = "case14"
samples = 30
seed = 3
[loads]
scale = [0.9, 1.7]
noise = 0.05
[topology]
n_minus_1 = 0.5
candidates = 4
[labels]
solutions = true
dc = false
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from gridtune.grids.build import build_dataset
    from gridtune.grids.recipe import load_recipe

    root = tmp_path_factory.mktemp("opfdata")
    path = root / "r.toml"
    path.write_text(RECIPE)
    return build_dataset(load_recipe(path), root / "ds", workers=1, progress=False)


@pytest.fixture(scope="module")
def exported(built, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "opf"
    return export_opfdata(built, out)


def _opf(summary, split):
    from torch_geometric.datasets import OPFDataset

    return OPFDataset(summary["root"], split=split, case_name=summary["case_name"],
                      num_groups=summary["num_groups"],
                      topological_perturbations=summary["topological_perturbations"])


def test_split_ranges_follow_opfdataset():
    assert split_starts(1) == (0, 13_500, 14_250)
    assert split_starts(20) == (0, 270_000, 285_000)
    assert groups_needed(10, 3) == 1
    assert groups_needed(13_501, 3) == 2
    assert groups_needed(10, 751) == 2
    assert EXAMPLES_PER_GROUP == 15_000


def test_pyg_opfdataset_reads_the_export(built, exported):
    frame = pd.read_parquet(built / "scenarios.parquet")
    from gridtune.grids.model import grid_from_dict

    grid = grid_from_dict(json.loads((built / "grid.json").read_text())["grid"])
    n_bus, n_gen = grid.n_bus, grid.n_gen
    trafo = grid.is_transformer
    assert trafo.sum() == 3  # case14 has three transformers: both edge types are exercised
    feasible = frame[frame["status"] == "feasible"].set_index("scenario_id")
    seen = 0
    for split in ("train", "val", "test"):
        ds = _opf(exported, split)
        assert len(ds) == exported["examples"][split] > 0
        for data in ds[:4]:
            sid = _scenario_id(exported, data)
            row = feasible.loc[sid]
            lines = data["bus", "ac_line", "bus"].edge_index.shape[1]
            trafos = data["bus", "transformer", "bus"].edge_index.shape[1]
            assert data["bus"].x.shape == (n_bus, 4) and data["bus"].y.shape == (n_bus, 2)
            out = list(row["outages"])
            assert lines == int((~trafo).sum() - (~trafo[out]).sum())
            assert trafos == int(trafo.sum() - trafo[out].sum())
            assert data["generator"].x.shape == (n_gen - len(row["gen_outages"]), 11)
            assert data["load"].x.shape[0] == int(np.count_nonzero(row["pd_mw"]))
            assert float(data.objective) == pytest.approx(row["objective"], rel=1e-6)
            # the objective is the cost polynomial (per-unit coefficients) at the stored dispatch
            pg = data["generator"].y[:, 0].double()
            c = data["generator"].x.double()
            assert float((c[:, 8] * pg**2 + c[:, 9] * pg + c[:, 10]).sum()) == pytest.approx(
                row["objective"], rel=1e-6)
            assert np.allclose(data["bus"].y[:, 1].numpy(), row["vm_pu"], atol=1e-5)
            seen += 1
    assert seen >= 6


def _scenario_id(summary, data):
    """The example's scenario id, found through the side file (objective is unique per example)."""
    raw = _raw(summary)
    for path in raw.rglob("example_*.json"):
        obj = json.loads(path.read_text())
        if abs(obj["metadata"]["objective"] - float(data.objective)) < 1e-3:
            return obj["metadata"]["gridtune"]["scenario_id"]
    raise AssertionError("example not found")


def _raw(summary):
    from pathlib import Path

    return Path(summary["root"]) / summary["release"] / summary["case_name"] / "raw"


def test_statuses_travel_in_the_side_file(built, exported):
    frame = pd.read_parquet(built / "scenarios.parquet")
    with (_raw(exported) / "gridtune" / "statuses.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["scenario_id"]) for r in rows] == frame["scenario_id"].tolist()
    assert [r["status"] for r in rows] == frame["status"].tolist()
    solved = [r for r in rows if r["example"] != ""]
    assert len(solved) == sum(exported["examples"].values())
    assert all(r["status"] == "feasible" for r in solved)
    starts = dict(zip(("train", "val", "test"), split_starts(exported["num_groups"])))
    assert all(int(r["example"]) >= starts[r["split"]] for r in solved)
    unsolved = list((_raw(exported) / "gridtune" / "unsolved").glob("*.json"))
    assert len(unsolved) == len(rows) - len(solved) == exported["unsolved"]


def test_round_trip_export_import(built, exported, tmp_path):
    import gridtune

    out = import_opfdata(_raw(exported).parents[2], tmp_path / "imported")
    a = pd.read_parquet(built / "scenarios.parquet")
    b = pd.read_parquet(out / "scenarios.parquet")
    assert b["scenario_id"].tolist() == a["scenario_id"].tolist()
    assert b["status"].tolist() == a["status"].tolist()
    assert np.allclose(np.stack(b["pd_mw"]), np.stack(a["pd_mw"]), atol=1e-9)
    assert [len(o) for o in b["outages"]] == [len(o) for o in a["outages"]]
    fe = (a["status"] == "feasible").to_numpy()
    assert np.allclose(b["objective"][fe], a["objective"][fe], rtol=1e-9)
    assert np.allclose(np.stack(b["pg_mw"][fe]), np.stack(a["pg_mw"][fe]), atol=1e-9)
    ds = gridtune.open_dataset(out)
    assert len(ds) == len(a)
    grid0 = gridtune.open_dataset(built).grid
    assert np.allclose(np.sort(ds.grid.x_pu), np.sort(grid0.x_pu))
    assert np.allclose(ds.grid.gen_cost(), grid0.gen_cost())


def test_imported_data_pretrains(exported, tmp_path):
    import gridtune
    from gridtune.core.trainer import TrainConfig

    src = _raw(exported) / "gridopt-dataset-tmp"  # the OPFData part only: no side files
    out = import_opfdata(src, tmp_path / "opf_only")
    ds = gridtune.open_dataset(out)
    assert set(ds.statuses) == {"feasible"}
    result = gridtune.pretrain(out, tmp_path / "ckpt", task="opf", train=TrainConfig(epochs=2))
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    scores = [v for v in result.best_val.values() if isinstance(v, float)]
    assert result.epochs_run == 2 and scores and all(np.isfinite(scores))
    assert result.data_hash == ds.content_hash


def test_bad_input(built, exported, tmp_path):
    with pytest.raises(DataError, match="not empty"):
        export_opfdata(built, exported["root"])
    with pytest.raises(DataError, match="holds no OPFData examples"):
        import_opfdata(tmp_path, tmp_path / "x")
    bad = tmp_path / "bad" / "group_0"
    bad.mkdir(parents=True)
    (bad / "example_0.json").write_text(json.dumps({"grid": {"context": [[[100.0]]]}}))
    with pytest.raises(DataError, match="has no `grid/nodes/bus`"):
        import_opfdata(tmp_path / "bad", tmp_path / "y")


def test_cli_export_and_import(built, tmp_path, capsys):
    from gridtune.cli import main

    assert main(["data", "export", str(built), "--format", "opfdata", "--out", str(tmp_path / "o"),
                 "--case-name", "pglib_opf_case14_ieee"]) == 0
    out = capsys.readouterr().out
    assert "load with: OPFDataset(" in out and "case_name='pglib_opf_case14_ieee'" in out
    assert main(["data", "import", str(tmp_path / "o"), "--format", "opfdata",
                 "--out", str(tmp_path / "i")]) == 0
    assert "scenarios  30:" in capsys.readouterr().out
    assert main(["data", "import", str(tmp_path / "none"), "--format", "opfdata",
                 "--out", str(tmp_path / "j")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a directory" in err
