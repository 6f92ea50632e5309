"""The public API at the top of the package: lazy, complete, and the same objects as the layers'."""

import subprocess
import sys

import pytest

import gridtune


def test_import_is_lazy():
    """`import gridtune` (and so `gridtune --help`) loads no heavy library."""
    code = ("import sys, gridtune; heavy = [m for m in ('torch', 'pandapower', 'cvxpy', 'ray', "
            "'torch_geometric') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("name", [n for n in gridtune.__all__ if n != "__version__"])
def test_every_public_name_resolves(name):
    assert getattr(gridtune, name) is not None
    assert name in dir(gridtune)


def test_public_names_are_the_layers_objects():
    from gridtune.nn.checkpoint import load_checkpoint
    from gridtune.workflows.transfer import finetune

    assert gridtune.finetune is finetune and gridtune.load_model is load_checkpoint


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'pretrian'"):
        gridtune.pretrian  # noqa: B018


def test_configs_reject_unknown_fields_and_bad_values(tmp_path):
    with pytest.raises(gridtune.GridtuneError, match="unknown PretrainConfig field.*`epochs`"):
        gridtune.pretrain("case9", tmp_path, epochs=3)
    with pytest.raises(gridtune.GridtuneError, match="unknown task `feasability`"):
        gridtune.PretrainConfig(task="feasability")
    with pytest.raises(gridtune.GridtuneError, match="--labels must be at least 4"):
        gridtune.TransferConfig(labels=2, strategy="full")
    with pytest.raises(gridtune.GridtuneError, match="unknown strategy `ful`"):
        gridtune.TransferConfig(labels=20, strategy="ful")


def test_model_options_from_the_command_line_are_typed():
    from gridtune.errors import SpecError
    from gridtune.workflows.configs import parse_model_options

    assert parse_model_options(["edge_readout=false", "hidden=32", "dropout=0.1"]) == {
        "edge_readout": False, "hidden": 32, "dropout": 0.1}
    with pytest.raises(SpecError, match="unknown key `edge_redout`"):
        parse_model_options(["edge_redout=false"])
    with pytest.raises(SpecError, match="not KEY=VALUE"):
        parse_model_options(["edge_readout"])
