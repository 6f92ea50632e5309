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


@pytest.mark.parametrize(("body", "match"), [
    ('shared = "head"', 'shared = "head" trains a head on a pre-trained encoder: set `init` to a checkpoint'),
    ('shared = "encoder"', "shared `encoder` is unknown; valid: `all`, `head`"),
    ('init = "no_such_checkpoint"', "init: checkpoint `no_such_checkpoint` does not exist"),
])
def test_bad_init_or_shared_is_one_line(tmp_path, capsys, body, match):
    _fails(capsys, tmp_path, f'sites = ["case9", "case14"]\n{body}', match)


def test_init_brings_the_checkpoints_model_and_a_different_model_table_is_refused(tmp_path, capsys,
                                                                                 public_checkpoint):
    import os

    from gridtune.federated.spec import load_spec, spec_from_table
    from gridtune.nn.model import ModelConfig
    from gridtune.specs import to_table

    relative = os.path.relpath(public_checkpoint, tmp_path)  # resolved against the spec's directory
    body = f'sites = ["case9", "case14"]\ninit = "{relative}"\nshared = "head"\n'
    spec = load_spec(_spec(tmp_path, body))
    assert spec.init == public_checkpoint
    assert spec.model == ModelConfig(hidden=8, layers=1, head_hidden=8, dc_loadability=False, input_clip=5.0)
    assert spec_from_table(to_table(spec), tmp_path, where="config.json") == spec  # the run's config reads back
    _fails(capsys, tmp_path, body + "[model]\nhidden = 16\n",
           "[model] differs from the init checkpoint's: hidden 16 (checkpoint: 8); drop [model]")


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


@pytest.mark.parametrize(("body", "match"), [
    ('sites = [{grid = "case30", zone = 7}, {grid = "case30", zone = 1}]',
     "names no bus zone of the base grid; valid zones: `1`, `2`, `3`"),
    ('sites = [{grid = "case30", zone = 1}, {grid = "case30", buses = [500]}]',
     "key `buses` names `500`, which is not an in-service bus of the base grid"),
    ('sites = [{grid = "case30"}, "case9"]', "site `case30`: name its region with exactly one of `zone` and `buses`"),
    ('sites = [{grid = "case30", zone = 1, area = 2}, "case9"]', "site 1: unknown key `area`"),
])
def test_bad_regions_are_one_line_and_exit_2_before_any_build(tmp_path, capsys, body, match):
    _fails(capsys, tmp_path, body, match)
    assert not any((tmp_path / "out").glob("seed-*"))


def test_region_sites_are_named_and_survive_the_loopback_job_format(tmp_path):
    from gridtune.federated.client import Job
    from gridtune.federated.sites import site_name
    from gridtune.federated.spec import RegionSite, load_spec

    recipe = tmp_path / "north.toml"
    recipe.write_text('case = "case30"\n')
    spec = load_spec(_spec(tmp_path, 'sites = [{grid = "north.toml", zone = 1}, {grid = "case30", zone = "3"},'
                                     ' {grid = "case30", buses = [2, 3], name = "east"}, "case9"]'))
    assert spec.sites[0] == RegionSite(grid=str(recipe.resolve()), zone=1)
    assert [site_name(s) for s in spec.sites] == ["north-zone1", "case30-zone3", "east", "case9"]
    job = Job(spec, 0, ("a", "b", "c", "d"), ("", "", "", ""))
    assert Job.from_dict(json.loads(json.dumps(job.to_dict()))).spec == spec


@pytest.mark.parametrize("name", ["federated_sites", "federated_sites_dp", "federated_sites_b128",
                                  "federated_sites_dp_b128", "federated_sites_few_labels"])
def test_benchmark_specs_load(name):
    from pathlib import Path

    from gridtune.federated.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.toml")
    assert len(spec.sites) == 4 and len(spec.seeds) == 3
    assert spec.samples * spec.split[2] >= 500  # every site scored on at least 500 scenarios


def test_the_public_encoder_benchmark_specs_load_with_their_checkpoint(public_checkpoint):
    import dataclasses
    from pathlib import Path

    from gridtune.federated.spec import Privacy, load_spec

    root = Path(__file__).resolve().parents[2] / "benchmarks"
    # each spec names the checkpoint its comment builds
    dp = load_spec(root / "federated_sites_dp_public.toml", init=public_checkpoint)
    plain = load_spec(root / "federated_sites_public.toml", init=public_checkpoint)
    assert dp.shared == "head" and dp.privacy.epsilon == 8.0 and len(dp.seeds) == 3
    assert dp.samples * dp.split[2] >= 500
    assert plain == dataclasses.replace(dp, privacy=Privacy())  # the same run without DP


@pytest.mark.parametrize(("train", "match"), [
    ('round_optimizer = "rmsprop"', "round_optimizer `rmsprop` is unknown; valid: `adamw`, `sgd`"),
    ("round_lr = 0.0", "round_lr must be a positive number, got `0.0`"),
    ("momentum = 0.5", "momentum is for round_optimizer = \"sgd\""),
    ('round_optimizer = "sgd"\nmomentum = 1.0', "momentum must lie in [0, 1), got `1.0`"),
])
def test_a_bad_round_optimizer_is_one_line(capsys, tmp_path, train, match):
    _fails(capsys, tmp_path, f'sites = ["case9", "case14"]\n[train]\n{train}', match)


def test_defaults_leave_the_spec_table_and_so_study_fingerprints_unchanged():
    from gridtune.federated.spec import FederatedSpec
    from gridtune.specs import to_table

    assert set(to_table(FederatedSpec(sites=("a", "b")))["train"]) == {"lr", "batch_size"}


def test_a_round_with_sgd_steps_by_round_lr_on_the_clipped_gradient(site_dirs, tiny_spec):
    """One local step (the whole training split as one batch, momentum 0): the new weights are
    the old minus `round_lr` times the gradient, clipped to norm 5 as every round step is."""
    import numpy as np
    import torch

    from gridtune.core.trainer import make_loader
    from gridtune.federated.client import Job, local_round, site_model, site_task
    from gridtune.federated.spec import LocalTraining
    from gridtune.federated.weights import get_weights

    spec = tiny_spec(site_dirs, local_epochs=1, train=LocalTraining(
        lr=1e-3, batch_size=10_000, round_optimizer="sgd", round_lr=0.05, momentum=0.0))
    job = Job(spec, 0, ("case9", "case9_other"), tuple(site_dirs))
    site = job.site(0)
    model = site_model(job, site)
    start = get_weights(model)
    new, n, _ = local_round(job, 0, start, server_round=1)
    assert n == len(site.train)
    batch = next(iter(make_loader(site.train, 10_000, shuffle=False)))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    site_task(site).loss(model(batch), batch).backward()
    torch.nn.utils.clip_grad_norm_(params, 5.0)
    expected = [p.detach().numpy() - 0.05 * p.grad.numpy() for p in params]
    assert len(new) == len(expected)
    for got, want in zip(new, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
