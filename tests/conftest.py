"""Shared fixtures: tiny real grids and an isolated cache directory."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

# Tiny models on a 2-core machine: two intra-op threads made a small training step ~150x slower
# than one (measured while other processes ran); tests use one thread.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Never touch the user's cache from tests (session-wide, so module fixtures see it too)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIDTUNE_CACHE", str(tmp_path_factory.getbasetemp() / "gridtune-cache"))
        yield


@pytest.fixture(scope="session")
def case14_grid():
    import pandapower.networks as pn

    from gridtune.grids.model import grid_from_net

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return grid_from_net(pn.case14(), "case14")


@pytest.fixture(scope="session")
def case9_grid():
    import pandapower.networks as pn

    from gridtune.grids.model import grid_from_net

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return grid_from_net(pn.case9(), "case9")


_CASE9 = Path(__file__).resolve().parents[1] / "gridtune" / "resources" / "datasets" / "case9.toml"


@pytest.fixture(scope="session")
def public_checkpoint(tmp_path_factory) -> str:
    """A small feasibility model pre-trained on case9 scenarios of another seed than the
    federated tests' sites (a public model for `init`)."""
    from gridtune.core.trainer import TrainConfig
    from gridtune.nn.model import ModelConfig
    from gridtune.workflows.pretrain import pretrain

    root = tmp_path_factory.mktemp("fed-public")
    recipe = root / "case9_public.toml"
    recipe.write_text(_CASE9.read_text().replace("seed = 0", "seed = 11"))
    out = root / "model"
    pretrain(str(recipe), out, samples=40, workers=1,
             model=ModelConfig(hidden=8, layers=1, head_hidden=8, dc_loadability=False, input_clip=5.0),
             train=TrainConfig(epochs=3, patience=3))
    return str(out)
