"""A recipe's dataset key, recalled without building its grid.

A dataset's key (`gridtune.grids.build.dataset_key`) hashes the recipe and the *built* grid, so
that a change in the stored case data, the repairs or the recipe's `[changes]` gives a new
dataset. Building the grid needs pandapower (seconds to import), which a command that only finds
an existing dataset should not pay. So each computed key is remembered under
`$GRIDTUNE_CACHE/keys/`, filed by a digest of everything the built grid is made from, read from
files without importing pandapower: the recipe's own key (which already holds the bytes of a
user's case, profile and contingency files), the case's source (`cases.content_key`: the stored
case JSON and pandapower's version, or the grid file's bytes) and the code that turns it into a
grid. A different input gives a different digest, so a recalled key is never stale; a digest not
seen yet recalls nothing, and the caller builds the grid as before.

`finished_dataset` uses the recalled key to answer a rerun of a finished build: the directory is
returned only when its manifest is this recipe's at this size and every file matches its seal.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from gridtune.errors import DataError
from gridtune.files import atomic_write_text
from gridtune.grids.cases import cache_root, content_key, grid_name
from gridtune.grids.schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from gridtune.grids.recipe import Recipe

# the modules that turn a case (and a recipe's [changes]) into the grid whose hash is keyed
GRID_CODE = ("cases.py", "changes.py", "library.py", "matpower.py", "model.py", "rating.py",
             "regions.py", "repairs.py")


def inputs_digest(recipe: Recipe) -> str:
    """Digest of everything `dataset_key(recipe)` depends on, computed from files alone."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    h.update(f"{recipe.cache_key()} {content_key(recipe.case)} schema {SCHEMA_VERSION}".encode())
    for module in GRID_CODE:
        h.update((here / module).read_bytes())
    return h.hexdigest()[:24]


def _memo(recipe: Recipe) -> Path:
    return cache_root() / "keys" / f"{inputs_digest(recipe)}.json"


def recall_key(recipe: Recipe) -> str | None:
    """The dataset key remembered for these inputs, or None (never computed, or unreadable)."""
    try:
        key = json.loads(_memo(recipe).read_text()).get("dataset_key")
    except (OSError, ValueError, AttributeError):
        return None
    return key if isinstance(key, str) else None


def remember_key(recipe: Recipe, key: str) -> None:
    """File `key` under the recipe's inputs digest (atomic; a failure to write only costs speed)."""
    path = _memo(recipe)
    try:
        atomic_write_text(path, json.dumps({"dataset_key": key, "case": recipe.case}))
    except OSError:
        pass


def dataset_directory(recipe: Recipe, key: str) -> Path:
    """Where the cache keeps the dataset of `recipe` whose key is `key`."""
    return cache_root() / "datasets" / f"{grid_name(recipe.case)}-{key}"


def finished_dataset(recipe: Recipe, out_dir: Path | None = None) -> Path | None:
    """The directory of `recipe`'s finished, undamaged dataset when that is known without
    building the grid; None when a build has anything to do (or cannot tell cheaply)."""
    from gridtune.grids import storage

    key = recall_key(recipe)
    if key is None:
        return None
    directory = Path(out_dir) if out_dir is not None else dataset_directory(recipe, key)
    if (directory / "parts").exists() or not (directory / "manifest.json").is_file():
        return None
    try:
        manifest = storage.read_json(directory / "manifest.json")
    except DataError:  # unreadable: the build names and repairs it
        return None
    recipe_as_stored = json.loads(json.dumps(recipe.to_dict(), sort_keys=True, default=str))
    if manifest.get("cache_key") != key or manifest.get("recipe") != recipe_as_stored:
        return None
    if storage.check_dataset(directory, deep=True):
        return None
    return directory
