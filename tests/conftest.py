"""Shared fixtures: tiny real grids and an isolated cache directory."""

from __future__ import annotations

import warnings

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
