"""Sites: each a grid's data, split once by its own statuses; opened the same way in every process.

A site is named by its source (a recipe or case name, or a dataset directory's name), or is a
region of a grid (`RegionSite`: the grid's recipe with only the region's loads varying, a
dataset of its own, content-hashed like any recipe). The coordinating process builds a recipe's
data once (`resolve_sites`); clients then open the built directory (`open_site`), so no client
solves an OPF.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from gridtune.errors import CheckpointError, DataError, SpecError
from gridtune.federated.spec import RegionSite, Source


@dataclasses.dataclass
class Site:
    """One site's graphs with a `feasibility` target, split train / validation / test."""

    name: str
    train: list[Any]
    val: list[Any]
    test: list[Any]
    content_hash: str


def site_name(source: Source) -> str:
    """`case30_changed` for a recipe or case name, the directory's name for a dataset directory,
    the region's name (`case30-zone1`) for a region of a grid."""
    if isinstance(source, RegionSite):
        return source.site_name
    return Path(str(source)).stem


def region_recipe(site: RegionSite, samples: int | None) -> Any:
    """The recipe of a region site: its grid's recipe with `[loads]` limited to the region,
    checked against the grid (a zone or bus the grid lacks: `SpecError`, one line)."""
    from gridtune.grids.changes import recipe_grid
    from gridtune.grids.recipe import recipe_for
    from gridtune.grids.regions import region_mask
    from gridtune.grids.storage import read_manifest

    if Path(site.grid).is_dir():
        read_manifest(site.grid)  # not a dataset: its own message
        raise SpecError(f"site `{site.site_name}`: `{site.grid}` is a built dataset; a region's scenarios are "
                        "drawn from a recipe: name the recipe .toml or case it was built from")
    recipe = recipe_for(site.grid, samples=samples)
    try:
        loads = dataclasses.replace(recipe.loads, zone=site.zone, buses=site.buses)
        recipe = dataclasses.replace(recipe, loads=loads)
        region_mask(recipe, recipe_grid(recipe))
    except SpecError as exc:
        raise SpecError(f"site `{site.site_name}`: {exc}") from None
    return recipe


def resolve_sites(sources: tuple[Source, ...], *, samples: int | None, workers: int | None = None,
                  progress: bool = False) -> list[str]:
    """Build (or resume) each site's data and return the dataset directories, checking that every
    site uses this gridtune's feature schema. Every region is checked before any data are built."""
    from gridtune.grids.build import build_dataset, default_directory
    from gridtune.grids.dataset import open_dataset
    from gridtune.grids.storage import needs_build

    names = [site_name(s) for s in sources]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"two sites are both named `{dup}`; give each site a distinct recipe or directory")
    recipes = {i: region_recipe(s, samples) for i, s in enumerate(sources) if isinstance(s, RegionSite)}
    dirs = []
    for i, source in enumerate(sources):
        if i in recipes:
            directory = default_directory(recipes[i])
            if needs_build(directory, recipes[i].samples):
                build_dataset(recipes[i], directory, workers=workers, progress=progress)
            ds = open_dataset(directory, samples=recipes[i].samples)
        else:
            ds = open_dataset(source, samples=samples, workers=workers, progress=progress)
        check_site_schema(site_name(source), _view(ds))
        dirs.append(str(ds.directory))
    return dirs


def check_site_schema(name: str, view: Any) -> None:
    """One line naming the site when its data use another feature schema than this gridtune."""
    from gridtune.grids.features import SCHEMA_VERSION
    from gridtune.grids.view import check_schema

    try:
        check_schema(view, SCHEMA_VERSION)
    except CheckpointError:
        width = view.graphs[0].x.shape[1]
        raise DataError(f"site `{name}` uses feature schema `v{view.schema_version}` ({width} bus features); "
                        f"every site must use `v{SCHEMA_VERSION}`: rebuild its data with this gridtune") from None


def _view(dataset: Any) -> Any:
    from gridtune.grids.view import resolve_data

    return resolve_data(dataset)


@functools.lru_cache(maxsize=16)
def open_site(name: str, directory: str, samples: int | None, seed: int,
              split: tuple[float, float, float]) -> Site:
    """The site's split (`gridtune.grids.split.split_indices`, seeded); cached per process, since
    a simulated client is rebuilt every round."""
    from gridtune.grids.dataset import open_dataset
    from gridtune.grids.split import split_indices
    from gridtune.grids.view import task_graphs

    view = _view(open_dataset(directory, samples=samples, progress=False))
    check_site_schema(name, view)
    tr, va, te = split_indices(view.statuses, seed, split)
    parts = [task_graphs([view.graphs[i] for i in idx], "feasibility") for idx in (tr, va, te)]
    if len(parts[0]) < 4 or not parts[1] or not parts[2]:
        raise DataError(f"site `{name}` has too few labelled scenarios ({[len(p) for p in parts]} train / "
                        "validation / test) for a federated run; build more samples")
    return Site(name, *parts, content_hash=view.content_hash)
