import dataclasses
import json

import pytest
import torch
from synthetic import graphs, tiny_checkpoint
from torch_geometric.loader import DataLoader

from gridtune.errors import CheckpointError
from gridtune.grids.features import SCHEMA_VERSION
from gridtune.grids.view import check_schema, resolve_data
from gridtune.nn.checkpoint import load_checkpoint, save_checkpoint
from gridtune.nn.model import ModelConfig, build_model
from gridtune.nn.normalizer import Normalizer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    metrics = tiny_checkpoint(out, "feasibility")
    return out, metrics


@pytest.mark.parametrize("task", ["feasibility", "opf", "cost"])
@pytest.mark.parametrize("conv", ["gine", "transformer"])
def test_round_trip_gives_identical_predictions(tmp_path, task, conv):
    torch.manual_seed(3)
    gs = graphs("case9", 6) + graphs("case14", 6)
    model = build_model(ModelConfig(conv=conv, hidden=16, layers=2), task, Normalizer().fit(gs)).eval()
    model.logit_bias.fill_(0.7)  # calibration buffers travel too
    save_checkpoint(model, tmp_path, {"data_hash": "abc", "metrics": {"auroc": float("nan")}})
    loaded, meta = load_checkpoint(tmp_path)
    batch = next(iter(DataLoader(gs, batch_size=12)))
    torch.testing.assert_close(loaded(batch), model(batch), rtol=0, atol=0)
    assert meta["task"] == task and meta["model"]["conv"] == conv
    assert meta["schema_version"] == SCHEMA_VERSION and meta["data_hash"] == "abc"
    assert meta["metrics"]["auroc"] is None  # NaN is not JSON; stored as null
    assert len(meta["normalizer"]["x_mean"]) == gs[0].x.shape[1]


def test_config_records_what_a_reader_needs(trained):
    out, metrics = trained
    config = json.loads((out / "config.json").read_text())
    for key in ("gridtune_version", "schema_version", "task", "model", "normalizer", "data_hash", "metrics"):
        assert key in config
    assert config["data_hash"] == metrics["data_hash"]
    # the weights are safetensors: an 8-byte header length then a JSON header, no pickle
    raw = (out / "model.safetensors").read_bytes()
    assert raw[8:9] == b"{"


def test_missing_and_corrupt_checkpoints_fail_clearly(tmp_path, trained):
    with pytest.raises(CheckpointError, match=r"checkpoint `.*nowhere` does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"is not a checkpoint: expected a directory with `config.json`"):
        load_checkpoint(tmp_path / "empty")
    src, _ = trained
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((src / "config.json").read_text())
    (bad / "model.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match=r"corrupt weights `model.safetensors`"):
        load_checkpoint(bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"corrupt `config.json`"):
        load_checkpoint(bad)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, trained):
    src, _ = trained
    config = json.loads((src / "config.json").read_text())
    config["model"]["hidden"] = 32
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=r"weights do not fit its config"):
        load_checkpoint(tmp_path)


def test_schema_mismatch_names_both_sides(tmp_path, trained):
    src, _ = trained
    config = json.loads((src / "config.json").read_text())
    config["schema_version"] = "0"
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=rf"feature schema `v0`, this gridtune's data use `v{SCHEMA_VERSION}`"):
        load_checkpoint(tmp_path)
    old = [g.clone() for g in graphs("case9", 3)]
    for g in old:
        g.x = g.x[:, :10]  # data written under another schema
    with pytest.raises(CheckpointError, match=r"expects feature schema `v1` \(16 bus features\) but data "
                                              r"`case9` has schema `v1` \(10 bus features\)"):
        check_schema(resolve_data(old), "1")


def test_checkpoint_written_before_new_model_settings_loads_with_the_old_behaviour(tmp_path):
    """A config.json without the settings added since (outage feature, edge readout, ...) must
    load as the model it was: old architecture, same predictions."""
    from gridtune.nn.model import LEGACY_MODEL_SETTINGS

    torch.manual_seed(0)
    gs = graphs("case14", 6)
    model = build_model(ModelConfig(hidden=16, layers=2, **LEGACY_MODEL_SETTINGS), "feasibility",
                        Normalizer().fit(gs)).eval()
    save_checkpoint(model, tmp_path)
    (tmp_path / "checksums.json").unlink()  # as written before checkpoints were sealed
    config = json.loads((tmp_path / "config.json").read_text())
    for key in LEGACY_MODEL_SETTINGS:
        del config["model"][key]
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded, _ = load_checkpoint(tmp_path)
    assert all(getattr(loaded.config, k) == v for k, v in LEGACY_MODEL_SETTINGS.items())
    batch = next(iter(DataLoader(gs, batch_size=6)))
    torch.testing.assert_close(loaded(batch), model(batch), rtol=0, atol=0)


def test_a_missing_model_setting_is_read_as_its_legacy_value_not_the_current_default(tmp_path, monkeypatch):
    import gridtune.nn.model as model_module

    gs = graphs("case14", 4)
    model = build_model(ModelConfig(hidden=16, layers=2, edge_readout=True), "feasibility",
                        Normalizer().fit(gs)).eval()
    save_checkpoint(model, tmp_path)
    (tmp_path / "checksums.json").unlink()  # as written before checkpoints were sealed
    config = json.loads((tmp_path / "config.json").read_text())
    del config["model"]["edge_readout"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    # were the key read with a default of True, these weights would load; read as legacy, they do not fit
    monkeypatch.setattr(model_module, "ModelConfig", dataclasses.make_dataclass(
        "ModelConfig", [("edge_readout", bool, dataclasses.field(default=True))], bases=(ModelConfig,),
        frozen=True))
    with pytest.raises(CheckpointError, match=r"weights do not fit its config"):
        load_checkpoint(tmp_path)


def test_a_checkpoint_without_the_stress_settings_loads_without_them(tmp_path):
    """A branch-readout checkpoint written before the stress inputs existed has no `stress_features` / `dc_loadability`: it
    must load with both off (its weights have no columns for them) and predict as it did."""
    torch.manual_seed(0)
    gs = graphs("case14", 5)
    model = build_model(ModelConfig(hidden=16, layers=2, edge_readout=True, stress_features=False,
                                    dc_loadability=False), "feasibility", Normalizer().fit(gs)).eval()
    save_checkpoint(model, tmp_path)
    (tmp_path / "checksums.json").unlink()  # as written before checkpoints were sealed
    config = json.loads((tmp_path / "config.json").read_text())
    del config["model"]["stress_features"], config["model"]["dc_loadability"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded, _ = load_checkpoint(tmp_path)
    assert not loaded.config.stress_features and not loaded.config.dc_loadability
    batch = next(iter(DataLoader(gs, batch_size=5)))
    torch.testing.assert_close(loaded(batch), model(batch), rtol=0, atol=0)


# ---- integrity: newer formats, tampered files, configs that do not fit, seals -------------------

def _copy(src, dst, *, seal=True):
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        if path.is_file() and (seal or path.name != "checksums.json"):
            (dst / path.name).write_bytes(path.read_bytes())
    return dst


def test_a_checkpoint_is_sealed_and_verifies(trained):
    from gridtune.nn.checkpoint import verify_checkpoint

    out, _ = trained
    sealed = json.loads((out / "checksums.json").read_text())["files"]
    assert {"config.json", "model.safetensors", "metrics.json", "history.json"} == set(sealed)
    assert verify_checkpoint(out) == len(sealed)
    assert not list(out.glob(".*.tmp"))


def test_a_newer_format_is_refused_by_name(tmp_path, trained):
    src, _ = trained
    dst = _copy(src, tmp_path / "newer", seal=False)
    config = json.loads((dst / "config.json").read_text())
    config["format_version"] = 99
    (dst / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"format version `99` .* reads up to 1: upgrade gridtune"):
        load_checkpoint(dst)


def test_tampered_weights_are_refused_by_name(tmp_path, trained):
    src, _ = trained
    dst = _copy(src, tmp_path / "flip")
    raw = bytearray((dst / "model.safetensors").read_bytes())
    raw[-5] ^= 0x10  # one bit of one weight: still a valid safetensors file
    (dst / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"`.*model.safetensors` has other content than was "
                                              r"written \(SHA-256 differs.*; retrain it or restore"):
        load_checkpoint(dst)
    (dst / "model.safetensors").write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(CheckpointError, match=r"model.safetensors` is truncated \(\d+ of \d+ bytes\)"):
        load_checkpoint(dst)
    (dst / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"is not a checkpoint"):
        load_checkpoint(dst)


def test_an_edited_config_is_refused_by_its_seal_and_without_one_by_its_shapes(tmp_path, trained):
    src, _ = trained
    dst = _copy(src, tmp_path / "edited")
    config = json.loads((dst / "config.json").read_text())
    config["model"]["hidden"] = 32
    (dst / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    with pytest.raises(CheckpointError, match=r"config.json` (is truncated|is longer than written|has other content)"):
        load_checkpoint(dst)
    (dst / "checksums.json").unlink()
    with pytest.raises(CheckpointError, match=r"weights do not fit its config"):
        load_checkpoint(dst)


def test_weights_from_another_checkpoint_are_refused(tmp_path, trained):
    """A foreign weights file of the same architecture loads fine as safetensors: only the seal
    tells it apart."""
    src, _ = trained
    other = tmp_path / "other"
    tiny_checkpoint(other, "feasibility", seed=1)
    dst = _copy(src, tmp_path / "foreign")
    (dst / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=r"model.safetensors` .*SHA-256 differs"):
        load_checkpoint(dst)
