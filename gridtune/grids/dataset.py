"""Open a dataset (building it when needed) as a PyG dataset of graphs.

`open_dataset("case14")` (a shipped recipe's name, or a recipe `.toml` path) builds the recipe's
dataset in the cache (or resumes it) and returns a `GridDataset`; `open_dataset(DIR)` opens a
built dataset directory. Graphs are made from `scenarios.parquet` and `grid.json` on load:
nothing is unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data, InMemoryDataset

from gridtune.errors import DataError
from gridtune.grids import storage
from gridtune.grids.features import GraphBuilder
from gridtune.grids.model import GridModel, grid_from_dict
from gridtune.grids.scenarios import UNLABELED_ID_OFFSET, Topology
from gridtune.grids.storage import read_manifest, verify_dataset


class GridDataset(InMemoryDataset):
    """The labelled scenarios of one dataset directory as PyG graphs.

    Attributes:
        directory: the dataset directory.
        manifest: the parsed manifest.json.
        content_hash: hash of the labels (same recipe and seed -> same hash).
        grid: the grid as labelled (`GridModel`).
        grid_name: its name.
        statuses: status of each graph, shape (len,).
        frame: the scenario rows (pandas), aligned with the graphs.
    """

    def __init__(self, directory: Path, *, samples: int | None = None) -> None:
        super().__init__(root=None)
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        verify_dataset(self.directory, deep=True)
        saved = storage.read_json(self.directory / "grid.json")
        self.grid: GridModel = grid_from_dict(saved["grid"])
        self.grid_name = self.grid.name
        df = storage.read_table(self.directory / "scenarios.parquet")
        if samples is not None:
            df = df[df["scenario_id"] < samples]
        self.frame = df.reset_index(drop=True)
        self.content_hash = (self.manifest["content_hash"] if samples is None
                             else storage.content_hash(self.frame))
        self.statuses = self.frame["status"].to_numpy().astype(str)
        build = GraphBuilder(self.grid)
        graphs = [build(storage.row_to_scenario(r), storage.row_to_label(r))
                  for r in self.frame.to_dict("records")]
        if not graphs:
            raise DataError(f"dataset `{self.directory}` holds no scenarios")
        self.data, self.slices = self.collate(graphs)

    def unlabeled(self, n: int, seed: int = 0) -> list[Data]:
        """`n` extra scenarios of the same recipe, without labels (no OPF solve: cheap)."""
        build = GraphBuilder(self.grid)
        return [build(sc, None) for sc in self.unlabeled_scenarios(n, seed)]

    def unlabeled_scenarios(self, n: int, seed: int = 0) -> list[Any]:
        """The scenarios behind `unlabeled` (loads and outages drawn, no graph built)."""
        from gridtune.grids.build import draw

        recipe = _recipe_from_manifest(self.manifest)
        calib = storage.read_json(self.directory / "calibration.json")
        topos = [Topology(tuple(t["branch_out"]), tuple(t["gen_out"]), t["critical_scale"])
                 for t in calib["topologies"]]
        first = UNLABELED_ID_OFFSET + seed * 10_000_000
        return [draw(recipe, self.grid, topos, first + i) for i in range(n)]

    def summary(self) -> dict[str, Any]:
        return {k: self.manifest.get(k) for k in ("samples", "counts", "unknown_share",
                                                  "load_scale_range", "baseline")}


def _recipe_from_manifest(manifest: dict[str, Any]):
    from gridtune.grids.recipe import Recipe
    from gridtune.specs import from_table

    if manifest.get("recipe") is None:  # imported data (e.g. OPFData): nothing to draw from
        raise DataError(f"dataset of grid `{manifest['grid']['name']}` was imported, not built from "
                        "a recipe: it has no unlabelled draws; give unlabelled data another way")
    return from_table(Recipe, manifest["recipe"], where="manifest.json [recipe]")


def open_dataset(recipe_or_dir: str | Path, *, samples: int | None = None,
                 workers: int | None = None, backend: str = "local",
                 cache_dir: Path | None = None, progress: bool = True) -> GridDataset:
    """A built dataset directory, or a recipe / default case name (built or resumed as needed).

    Args:
        recipe_or_dir: dataset directory, recipe `.toml`, or a default case name (its shipped
            recipe is used).
        samples: use (and if needed, build) the first `samples` scenarios.
        workers, backend: labelling parallelism (see `gridtune.parallel`).
        cache_dir: build directory (default: the cache, keyed by the recipe's content hash).
    """
    from gridtune.grids.build import build_dataset, default_directory
    from gridtune.grids.recipe import recipe_for

    p = Path(recipe_or_dir)
    if p.is_dir():
        manifest = read_manifest(p)
        if samples is not None and samples > manifest["samples"]:
            raise DataError(f"dataset `{p}` has `{manifest['samples']}` scenarios, `{samples}` "
                            "asked; build more with `gridtune data build RECIPE --samples N`")
        return GridDataset(p, samples=samples)
    recipe = recipe_for(recipe_or_dir, samples=samples)
    directory = Path(cache_dir) if cache_dir is not None else default_directory(recipe)
    if storage.needs_build(directory, recipe.samples):
        build_dataset(recipe, directory, workers=workers, backend=backend, progress=progress)
    return GridDataset(directory, samples=recipe.samples)


def labelled_mask(dataset: GridDataset, include_unknown: bool = False) -> np.ndarray:
    """Boolean mask of graphs with a feasibility label (feasible / infeasible)."""
    ok = np.isin(dataset.statuses, ["feasible", "infeasible"] + (["unknown"] if include_unknown else []))
    return ok


def as_tensor_index(mask: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.flatnonzero(mask), dtype=torch.long)
