import json
import shutil

import pytest

from gridtune.cli import main


def _spec(tmp_path, body: str):
    path = tmp_path / "fed.toml"
    path.write_text(body)
    return path


def _fails(capsys, tmp_path, body: str, match: str) -> None:
    code = main(["federated", str(_spec(tmp_path, body)), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert match in err, err


@pytest.mark.parametrize(("body", "match"), [
    ('sites = ["case9"]', "needs at least 2 sites, got 1"),
    ('sites = ["case9", "case9"]', "site `case9` is listed twice"),
    ('sites = ["case9", "case14"]\n[privacy]\nkind = "record"\nepsilon = -1.0', "epsilon must be a positive finite"),
    ('sites = ["case9", "case14"]\n[privacy]\nkind = "record"\nepsilon = 8.0\ndelta = 1.5', "delta must lie in (0, 1)"),
    ('sites = ["case9", "case14"]\n[privacy]\nkind = "record"', "epsilon must be a positive finite number, got `None`"),
    ('sites = ["case9", "case14"]\n[privacy]\nepsilon = 8.0', "set kind to `record` or `client`"),
    ('sites = ["case9", "case14"]\nstrategy = "fedsgd"', "strategy `fedsgd` is unknown; valid: `fedavg`, `fedprox`, `reptile`"),
    ('sites = ["case9", "case14"]\nrounds = 3\nround = 4', "unknown key `round`"),
    ('sites = ["case9", "case14"]\n[personalise]\nmethods = ["maml"]', "unknown method `maml`"),
])
def test_bad_specs_are_one_line_and_exit_2(tmp_path, capsys, body, match):
    _fails(capsys, tmp_path, body, match)


def test_a_noise_multiplier_that_cannot_reach_epsilon_stops_before_training(tmp_path, capsys, site_dirs):
    body = (f"sites = {json.dumps(site_dirs)}\nrounds = 50\n[privacy]\nkind = \"record\"\nepsilon = 1.0\n"
            "noise_multiplier = 0.5\n")
    _fails(capsys, tmp_path, body, "noise_multiplier `0.5` cannot reach epsilon `1.0` at delta `1e-05` on site `case9`")
    assert not (tmp_path / "out" / "results.json").exists()


def test_a_site_with_another_feature_schema_is_named(tmp_path, capsys, site_dirs):
    old = tmp_path / "old_site"
    shutil.copytree(site_dirs[1], old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["schema_version"] = "0"
    (old / "manifest.json").write_text(json.dumps(manifest))
    _fails(capsys, tmp_path, f"sites = {json.dumps([site_dirs[0], str(old)])}", "has feature schema `v0`")
