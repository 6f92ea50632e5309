"""End-to-end dataset builds on case9 with real solves: statuses, determinism, resume, errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from gridtune.cli import main
from gridtune.errors import DataError
from gridtune.grids.build import build_dataset
from gridtune.grids.dataset import open_dataset
from gridtune.grids.features import GraphBuilder
from gridtune.grids.recipe import load_recipe
from tests.grids.recipes import recipe_file


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("build")
    out = tmp / "ds"
    build_dataset(load_recipe(recipe_file(tmp)), out, workers=1, progress=False)
    return out


def test_directory_layout_manifest_and_rows(built):
    m = json.loads((built / "manifest.json").read_text())
    assert m["samples"] == 12 and sum(m["counts"].values()) == 12
    assert m["schema_version"] == "1" and m["recipe"]["case"] == "case9"
    assert m["counts"]["feasible"] > 0 and m["counts"]["infeasible"] > 0  # the range straddles the boundary
    df = pd.read_parquet(built / "scenarios.parquet")
    for col in ("scenario_id", "status", "load_scale", "pd_mw", "qd_mvar", "outages", "objective",
                "solve_time_s"):
        assert col in df.columns
    assert df["scenario_id"].tolist() == list(range(12))
    assert len(df["pd_mw"][0]) == 9
    feas = df[df.status == "feasible"]
    assert feas["objective"].notna().all() and df[df.status != "feasible"]["objective"].isna().all()
    assert not (built / "parts").exists()


def test_dataset_loads_as_pyg_graphs(built):
    ds = open_dataset(built)
    assert len(ds) == 12 and ds.grid_name == "case9"
    g = ds[0]
    assert g.x.shape[0] == 9 and g.edge_attr.shape[0] == 18
    assert set(ds.statuses) <= {"feasible", "infeasible", "unknown", "error"}
    extra = ds.unlabeled(5)
    assert len(extra) == 5 and all(e.status.item() == 2 for e in extra)
    scenarios = ds.unlabeled_scenarios(5)  # the draws behind them, fresh scenario ids
    assert [torch.equal(GraphBuilder(ds.grid)(sc, None).x, e.x) for sc, e in zip(scenarios, extra)] == [True] * 5
    assert not {sc.scenario_id for sc in scenarios} & set(ds.frame.scenario_id)


def test_manifest_hash_and_summary_are_those_of_the_whole_table(built):
    # the build hashes and summarises the joined table batch by batch: the figures must be
    # those of the table read whole (the hash as it was always computed)
    from gridtune.grids.model import grid_from_dict
    from gridtune.grids.storage import read_json, read_rows
    from gridtune.grids.summary import summarize
    from tests.grids.test_storage import reference_hash

    m = json.loads((built / "manifest.json").read_text())
    whole = read_rows(built)
    assert m["content_hash"] == reference_hash(whole)
    expected = summarize(whole, grid_from_dict(read_json(built / "grid.json")["grid"]))
    for key in ("samples", "counts", "certificates", "load_scale_range", "baseline"):
        assert m[key] == expected[key], key
    assert m["solve_time_s"]["total"] == pytest.approx(expected["solve_time_s"]["total"])


def test_same_recipe_same_content_hash(tmp_path, built):
    out = tmp_path / "again"
    build_dataset(load_recipe(recipe_file(tmp_path)), out, workers=2, progress=False)
    a = json.loads((built / "manifest.json").read_text())["content_hash"]
    b = json.loads((out / "manifest.json").read_text())["content_hash"]
    assert a == b


def test_extend_keeps_finished_scenarios(tmp_path, built):
    out = tmp_path / "grow"
    build_dataset(load_recipe(recipe_file(tmp_path), samples=6), out, workers=1, progress=False)
    first = pd.read_parquet(out / "scenarios.parquet")
    build_dataset(load_recipe(recipe_file(tmp_path), samples=12), out, workers=1, progress=False)
    df = pd.read_parquet(out / "scenarios.parquet")
    assert len(df) == 12
    # the first six were not solved again: their recorded solve times are unchanged
    pd.testing.assert_series_equal(df["solve_time_s"][:6], first["solve_time_s"])
    full = json.loads((built / "manifest.json").read_text())["content_hash"]
    assert json.loads((out / "manifest.json").read_text())["content_hash"] == full


def test_sigterm_stops_a_build_cleanly_and_keeps_finished_rows(tmp_path):
    # 4000 scenarios: far more than any machine labels before the signal lands (~110 a second on
    # a fast one); the process is stopped after its first part file, so the size costs nothing
    n = 4000
    recipe = recipe_file(tmp_path, samples=n)
    out = tmp_path / "cut"
    # flush after every chunk, so a part exists long before the build could finish
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]),
               GRIDTUNE_FLUSH_EVERY_S="0")
    proc = subprocess.Popen([sys.executable, "-m", "gridtune.cli", "data", "build", str(recipe),
                             "--out", str(out), "--workers", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "parts").glob("part-*.parquet")):
        assert proc.poll() is None, proc.communicate()[1].decode()
        time.sleep(0.05)
    # SIGTERM, handled like Ctrl-C by the CLI: a test run started in the background (nohup, CI
    # scripts) inherits an ignored SIGINT, and Python then never raises KeyboardInterrupt
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 130, err
    assert "rerun to resume" in err
    assert not (out / "manifest.json").exists()
    kept = pd.concat([pd.read_parquet(p) for p in (out / "parts").glob("*.parquet")])
    assert 0 < len(kept) < n


def test_interrupted_build_resumes_where_it_stopped(tmp_path, built, monkeypatch):
    # the third chunk of four scenarios is interrupted (in this process: workers=1 labels in
    # order), so exactly the first eight rows are on disk when the rerun starts
    from gridtune.grids import build as build_module

    label_chunk, calls = build_module._label_chunk, []

    def interrupted(chunk):
        calls.append(chunk)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return label_chunk(chunk)

    recipe = load_recipe(recipe_file(tmp_path))
    out = tmp_path / "cut"
    monkeypatch.setattr(build_module, "_label_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(recipe, out, workers=1, progress=False, flush_every_s=0)
    monkeypatch.undo()
    assert not (out / "manifest.json").exists()
    kept = pd.concat([pd.read_parquet(p) for p in (out / "parts").glob("*.parquet")])
    assert sorted(kept.scenario_id) == list(range(8))
    build_dataset(recipe, out, workers=1, progress=False)
    df = pd.read_parquet(out / "scenarios.parquet").set_index("scenario_id")
    assert len(df) == 12
    kept = kept.set_index("scenario_id")
    # the eight were not solved again: their recorded solve times are unchanged
    pd.testing.assert_series_equal(df.loc[kept.index, "solve_time_s"], kept["solve_time_s"])
    full = json.loads((built / "manifest.json").read_text())["content_hash"]
    assert json.loads((out / "manifest.json").read_text())["content_hash"] == full


def test_directory_of_another_recipe_is_refused(tmp_path, built, capsys):
    other = recipe_file(tmp_path, samples=3, scale="[0.5, 0.9]", name="other.toml")
    with pytest.raises(DataError, match=r"holds a different recipe's data"):
        build_dataset(load_recipe(other), built, workers=1, progress=False)
    assert main(["data", "build", str(other), "--out", str(built)]) == 2
    assert "holds a different recipe's data" in capsys.readouterr().err
    assert json.loads((built / "manifest.json").read_text())["samples"] == 12  # nothing lost


def test_cli_info_json_and_bad_inputs(built, tmp_path, capsys):
    assert main(["data", "info", str(built), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["counts"]["feasible"] + info["counts"]["infeasible"] + info["counts"]["unknown"] \
        + info["counts"]["error"] == 12
    assert "auroc" in info["baseline"] or "reason" in info["baseline"]
    assert main(["data", "info", str(tmp_path)]) == 2
    assert "is not a built dataset" in capsys.readouterr().err
    assert main(["data", "build", "case9000"]) == 2
    assert "case9000" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('case = "case9"\n[loads]\nscale = [2.0, 1.0]\n')
    assert main(["data", "build", str(bad)]) == 2
    assert "must satisfy 0 < low < high" in capsys.readouterr().err


@pytest.mark.slow
def test_auto_calibration_straddles_each_topology_boundary(tmp_path):
    out = tmp_path / "auto"
    build_dataset(load_recipe(recipe_file(tmp_path, samples=16, scale='"auto"')), out, workers=2,
                  progress=False)
    calib = json.loads((out / "calibration.json").read_text())
    crit = {tuple(t["branch_out"]): t["critical_scale"] for t in calib["topologies"]}
    assert len(crit) >= 2 and all(0.3 < c < 4.0 for c in crit.values())
    df = pd.read_parquet(out / "scenarios.parquet")
    for row in df.itertuples():
        c = crit[tuple(row.outages)]
        assert c * 0.92 - 1e-9 <= row.load_scale <= c * 1.08 + 1e-9


@pytest.mark.slow
def test_ray_backend_gives_the_same_labels(tmp_path, built):
    import ray

    out = tmp_path / "ray"
    try:
        build_dataset(load_recipe(recipe_file(tmp_path)), out, workers=2, backend="ray", progress=False)
    finally:
        ray.shutdown()
    a = json.loads((built / "manifest.json").read_text())["content_hash"]
    assert json.loads((out / "manifest.json").read_text())["content_hash"] == a


def test_data_info_reads_the_manifest_without_torch_or_pandapower(built):
    """`gridtune data info` answers at once: it loads neither torch nor pandapower."""
    import subprocess
    import sys

    code = ("import sys; from gridtune.cli import main; code = main(['data', 'info', sys.argv[1], '--json']); "
            "heavy = [m for m in ('torch', 'pandapower', 'cvxpy', 'torch_geometric') if m in sys.modules]; "
            "print('HEAVY', ','.join(heavy)); sys.exit(code)")
    out = subprocess.run([sys.executable, "-c", code, str(built)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY"


def test_data_build_does_not_import_torch(tmp_path):
    """Labelling needs pandapower and the solvers, never torch (seconds of start-up per process)."""
    import subprocess
    import sys

    code = ("import sys; from gridtune.cli import main; "
            "code = main(['data', 'build', sys.argv[1], '--out', sys.argv[2], '--workers', '1']); "
            "print('TORCH', [m for m in ('torch', 'torch_geometric') if m in sys.modules]); sys.exit(code)")
    out = subprocess.run([sys.executable, "-c", code, str(recipe_file(tmp_path, samples=4)),
                          str(tmp_path / "ds")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "TORCH []"
