"""Two small real sites built by gridtune (case9 and a case9 recipe with other scenarios), shared
by the federated tests; one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

CASE9 = Path(__file__).resolve().parents[2] / "gridtune" / "resources" / "datasets" / "case9.toml"


@pytest.fixture(scope="session")
def site_dirs(tmp_path_factory) -> list[str]:
    """Built dataset directories of two sites (40 scenarios each, real OPF labels)."""
    from gridtune.grids.dataset import open_dataset

    root = tmp_path_factory.mktemp("fed-sites")
    other = root / "case9_other.toml"
    other.write_text(CASE9.read_text().replace("seed = 0", "seed = 7"))
    dirs = []
    for name, recipe in (("case9", CASE9), ("case9_other", other)):
        ds = open_dataset(recipe, samples=40, workers=1, progress=False, cache_dir=root / name)
        dirs.append(str(ds.directory))
    return dirs


@pytest.fixture(scope="session")
def tiny_spec():
    """A factory of small specs: `tiny_spec(sites, **fields)`."""
    return _tiny_spec


def _tiny_spec(sites: list[str], **fields):
    from gridtune.federated.spec import FederatedSpec, Personalisation
    from gridtune.nn.model import ModelConfig

    # a generous round timeout: Flower expires a round's messages after it, and on a loaded
    # machine (two cores, a test suite beside other jobs) Ray's start-up alone can take minutes
    base = dict(sites=tuple(sites), split=(0.5, 0.25, 0.25), rounds=2, round_timeout_s=1800.0,
                model=ModelConfig(hidden=8, layers=1, head_hidden=8, dc_loadability=False),
                personalise=Personalisation(methods=("finetune", "head"), epochs=2, patience=2, local_epochs=2))
    base.update(fields)
    return FederatedSpec(**base)


@pytest.fixture(scope="session")
def simulated(site_dirs, tmp_path_factory):
    """One end-to-end run in Flower's simulation under record-level DP (epsilon 8): the spec, the
    result and the output directory, shared by the workflow and loopback tests."""
    from gridtune.federated.run import run_federated
    from gridtune.federated.spec import Privacy

    spec = _tiny_spec(site_dirs, privacy=Privacy(kind="record", epsilon=8.0, delta=1e-5))
    out = tmp_path_factory.mktemp("simulated")
    return spec, run_federated(spec, out), out

