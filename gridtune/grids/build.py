"""Build, resume and extend a dataset directory from a recipe.

recipe -> grid (repaired, re-rated) -> calibrated topologies -> seeded scenarios -> labels ->
part files -> scenarios.parquet + manifest.json -> checksums.json. Finished scenarios are written
as they arrive, so an interrupted build (even by SIGKILL) loses at most the scenarios in flight; a
rerun does only the rest. A rerun also checks what is there (`repair`): a damaged file is named,
removed and rebuilt, and only the parts that depend on it are redone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

from gridtune import __version__
from gridtune.errors import DataError
from gridtune.grids import storage
from gridtune.grids.labels import Label
from gridtune.grids.model import GridModel, grid_from_dict, grid_hash, grid_to_dict
from gridtune.grids.rating import rerate
from gridtune.grids.recipe import LabelSpec, Recipe
from gridtune.grids.scenarios import (
    Topology,
    candidate_topologies,
    sample_scenario,
)
from gridtune.grids.schema import SCHEMA_VERSION

CHUNK_SCENARIOS = 4        # scenarios per task: amortises task overhead, keeps resume granular
# write finished rows at least this often (env override: tests interrupt a build early)
FLUSH_EVERY_S = float(os.environ.get("GRIDTUNE_FLUSH_EVERY_S", "5.0"))


def dataset_key(recipe: Recipe) -> str:
    """Identity of a dataset: the recipe (without `samples`) and the grid's content.

    The grid's hash is taken after the case repairs and the recipe's `[changes]`, so a change in
    the stored case data, the repairs or the changes gives a new dataset rather than silently
    mixing labels of two grids.
    """
    import hashlib

    from gridtune.grids.changes import recipe_grid
    from gridtune.grids.keys import remember_key

    blob = f"{recipe.cache_key()}:{grid_hash(recipe_grid(recipe))}:{SCHEMA_VERSION}"
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    remember_key(recipe, key)  # lets `keys.finished_dataset` find it without building the grid
    return key


def default_directory(recipe: Recipe) -> Path:
    from gridtune.grids.keys import dataset_directory

    return dataset_directory(recipe, dataset_key(recipe))


# ---- grid preparation ------------------------------------------------------------------------

def prepare_grid(recipe: Recipe, directory: Path) -> tuple[GridModel, dict[str, Any]]:
    """The grid as labelled: loaded from the dataset dir on resume, else built and saved there."""
    path = directory / "grid.json"
    if path.is_file():
        saved = storage.read_json(path)
        return grid_from_dict(saved["grid"]), saved["rating"]
    from gridtune.grids.cases import FORMULATIONS, formulation, load_grid

    grid = load_grid(recipe.case)
    form = formulation(recipe.case)
    # which limits the labels obey: the grid's own ratings, or ratings set by `[limits]`
    limits = {"formulation": form, "formulation_text": FORMULATIONS[form],
              "flow_limit": grid.flow_limit,
              "own_rated_branches": int(((grid.rate_a_mva > 0) & grid.branch_in_service).sum()),
              "angle_limited_branches": int((grid.angle_limited & grid.branch_in_service).sum())}
    rating: dict[str, Any] = {"rerated": False, "branch_limits": "the grid's own", **limits}
    if recipe.limits.rating_factor is not None:
        grid, info = rerate(grid, recipe.limits.rating_factor, recipe.limits.min_rating_mva)
        rating = {"rerated": True, **info, **limits,
                  "branch_limits": "re-rated by [limits] (every branch); angle and voltage limits "
                                   "the grid's own"}
    if recipe.changes:  # changed after the re-rating: the changes meet the base grid's ratings
        from gridtune.grids.changes import recipe_grid

        grid = recipe_grid(recipe, ratings=grid)
    storage.write_json(path, {"grid": grid_to_dict(grid), "rating": rating, "grid_hash": grid_hash(grid)})
    return grid, rating


def prepare_topologies(recipe: Recipe, grid: GridModel, directory: Path, *, workers: int | None,
                       backend: str, progress: bool = False) -> tuple[list[Topology], dict[str, Any]]:
    """Candidate topologies, calibrated when the load scale is "auto" (cached in the directory)."""
    path = directory / "calibration.json"
    if path.is_file():
        saved = storage.read_json(path)
        topos = [Topology(tuple(t["branch_out"]), tuple(t["gen_out"]), t["critical_scale"])
                 for t in saved["topologies"]]
        return topos, saved["summary"]
    topo = recipe.topology
    table = None
    if topo.contingencies is not None:
        from gridtune.grids.profiles import load_contingencies

        table = [Topology(c.branch_out, c.gen_out) for c in
                 load_contingencies(topo.contingencies, recipe.case, grid)]
    cands = candidate_topologies(grid, seed=recipe.seed, n_minus_1=topo.n_minus_1,
                                 gen_outages=topo.gen_outages, candidates=topo.candidates,
                                 contingencies=table)
    rejected: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"candidates": len(cands), "calibrated": recipe.loads.scale == "auto"}
    if table is not None:
        from gridtune.grids.scenarios import usable_contingencies

        usable = usable_contingencies(grid, table)
        summary["contingency_table"] = {"contingencies": len(table), "branch_usable": len(usable[0]),
                                        "generator_usable": len(usable[1])}
    if recipe.loads.scale == "auto":
        from gridtune.grids.calibration import calibrate

        start = time.perf_counter()
        from gridtune.grids.regions import region_mask

        results = calibrate(grid, cands, workers=workers, backend=backend, progress=progress,
                            vary=region_mask(recipe, grid), solver=recipe.loads.calibration_solver)
        if results[0].topology is None:
            raise DataError(f"grid `{grid.name}`: the base topology cannot be calibrated "
                            f"({results[0].rejected_reason}); check the grid data"
                            + (" and the recipe's [changes]" if recipe.changes else ""))
        topos = []
        for cand, res in zip(cands, results):
            if res.topology is None:
                rejected.append({"branch_out": list(cand.branch_out), "gen_out": list(cand.gen_out),
                                 "reason": res.rejected_reason})
            else:
                topos.append(res.topology)
        crit = [t.critical_scale for t in topos]
        summary.update(kept=len(topos), rejected=rejected, critical_scale_min=min(crit),
                       critical_scale_max=max(crit), base_critical_scale=topos[0].critical_scale,
                       solves=sum(r.solves for r in results), time_s=time.perf_counter() - start)
    else:
        topos = cands
        summary.update(kept=len(topos), rejected=[])
    storage.write_json(path, {"topologies": [dataclasses.asdict(t) for t in topos], "summary": summary})
    return topos, summary


# ---- labelling tasks (run in worker processes) -------------------------------------------------

_LABELLER_CACHE: dict[tuple[str, LabelSpec], Any] = {}


def labeller_for(grid: GridModel, labels: LabelSpec) -> Any:
    """The `Labeller` of `grid` with a recipe's `[labels]` settings, one kept per process."""
    from gridtune.grids.labeller import Labeller

    key = (grid_hash(grid), labels)
    if key not in _LABELLER_CACHE:
        _LABELLER_CACHE.clear()
        _LABELLER_CACHE[key] = Labeller(grid, solutions=labels.solutions, dc=labels.dc,
                                        sdp=labels.sdp, solver=labels.solver, cycles=labels.cycles,
                                        obbt=labels.obbt)
    return _LABELLER_CACHE[key]


@dataclasses.dataclass(frozen=True)
class _Chunk:
    grid: GridModel
    topologies: tuple[Topology, ...]
    recipe: Recipe
    ids: tuple[int, ...]


def draw(recipe: Recipe, grid: GridModel, topologies: list[Topology] | tuple[Topology, ...],
         scenario_id: int):
    """Scenario `scenario_id` of `recipe` (a pure function of its arguments)."""
    profile = None
    if recipe.loads.profile is not None:
        from gridtune.grids.profiles import cached_profile

        profile = cached_profile(recipe.loads.profile, recipe.case, grid, recipe.loads.hours)
    from gridtune.grids.regions import region_mask

    return sample_scenario(
        grid, list(topologies), scenario_id, seed=recipe.seed,
        n_minus_1=recipe.topology.n_minus_1, gen_outages=recipe.topology.gen_outages,
        scale=recipe.loads.scale, band=recipe.loads.band, load_noise=recipe.loads.noise,
        cost_noise=recipe.costs.noise, profile=profile, vary=region_mask(recipe, grid))


def _label_chunk(chunk: _Chunk) -> list[dict[str, Any]]:
    import warnings

    # solver chatter ("solution may be inaccurate") is handled by the labeller's status logic
    warnings.simplefilter("ignore")
    labeller = labeller_for(chunk.grid, chunk.recipe.labels)
    rows = []
    for sid in chunk.ids:
        scenario = draw(chunk.recipe, chunk.grid, chunk.topologies, sid)
        start = time.perf_counter()
        try:
            label = labeller.label(scenario)
        except Exception as exc:  # the labeller should not raise; if it does, record, go on
            label = Label(status="error", certificate="crash", reason=f"{type(exc).__name__}: {exc}",
                          solve_time_s=time.perf_counter() - start)
        rows.append(storage.scenario_row(scenario, label))
    return rows


# ---- the build -------------------------------------------------------------------------------

def claim_directory(recipe: Recipe, directory: Path) -> None:
    """Make `directory` this recipe's, or refuse when it holds something else.

    A damaged `recipe.json` is written again when the directory's manifest (or the digest the
    seal recorded) shows it was this recipe's; otherwise the build refuses, naming the file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "recipe.json"
    key = dataset_key(recipe)
    content = {"cache_key": key, "recipe": recipe.to_dict(), "source": recipe.source}
    if path.is_file() or (directory / "manifest.json").is_file():
        saved = _readable_recipe(directory)
        if saved is None:
            _restore_recipe(directory, key, content)
            return
        if saved.get("cache_key") != key:
            raise DataError(f"output directory `{directory}` holds a different recipe's data "
                            f"(`{saved.get('recipe', {}).get('case')}`, key `{saved.get('cache_key')}`, "
                            f"this recipe and grid give `{key}`); choose another --out or remove it")
        return
    if any(p for p in directory.iterdir() if not p.name.startswith(".")):
        raise DataError(f"output directory `{directory}` is not empty and is not a gridtune "
                        "dataset; choose an empty or new directory")
    storage.write_json(path, content)


def _readable_recipe(directory: Path) -> dict[str, Any] | None:
    """recipe.json when it is whole (readable and matching its seal), else None."""
    from gridtune.files import check_file, read_checksums

    path = directory / "recipe.json"
    expected = (read_checksums(directory) or {}).get("recipe.json")
    if check_file(directory, "recipe.json", expected, deep=True, remedy="") is not None:
        return None
    try:
        saved = storage.read_json(path)
    except DataError:
        return None
    return saved if isinstance(saved.get("cache_key"), str) else None


def _restore_recipe(directory: Path, key: str, content: dict[str, Any]) -> None:
    import hashlib
    import json
    import sys

    from gridtune.files import read_checksums

    path = directory / "recipe.json"
    try:
        owner = storage.read_json(directory / "manifest.json").get("cache_key")
    except DataError:
        owner = None
    sealed = (read_checksums(directory) or {}).get("recipe.json", {}).get("sha256")
    ours = hashlib.sha256(json.dumps(content, indent=2, sort_keys=True).encode()).hexdigest()
    if owner != key and sealed != ours:
        if owner is not None:
            raise DataError(f"output directory `{directory}` holds a different recipe's data (key "
                            f"`{owner}`, this recipe and grid give `{key}`) and its `recipe.json` "
                            "is damaged; choose another --out or remove it")
        raise DataError(f"`{path}` is damaged or missing and nothing else in `{directory}` says "
                        "which recipe the data belong to; remove the directory and build again")
    print(f"dataset `{directory}`: `recipe.json` is damaged or missing; rewriting it",
          file=sys.stderr)
    storage.write_json(path, content)


def repair(directory: Path) -> list[str]:
    """Name and remove every damaged file of `directory` so that the build redoes that part.

    Called under the directory lock. Each damaged file is reported on stderr with what is
    rebuilt: grid.json -> the grid (from the recipe), calibration.json -> the calibration,
    scenarios.parquet -> its scenarios are labelled again, manifest.json -> the summary.
    Leftover temporary files of a killed writer are removed. Returns the names removed.
    """
    import sys

    from gridtune.files import CHECKSUMS, unseal

    for tmp in [*directory.glob(".*.tmp"), *directory.glob("parts/.*.tmp")]:
        tmp.unlink(missing_ok=True)
    what = {"grid.json": "the grid is prepared again from the recipe",
            "calibration.json": "the topologies are calibrated again",
            "scenarios.parquet": "its scenarios are labelled again",
            "manifest.json": "the summary is written again",
            CHECKSUMS: "the files are sealed again"}
    removed = []
    for damage in storage.check_dataset(directory, deep=True):
        name = damage.path.name
        if name == "recipe.json" or damage.kind == "unsealed":  # claim_directory / finalize's
            continue
        print(f"dataset `{directory}`: `{name}` {damage.problem}; rebuilding it "
              f"({what.get(name, 'it is written again')})", file=sys.stderr)
        damage.path.unlink(missing_ok=True)
        removed.append(name)
    if removed:
        unseal(directory, removed)
    return removed


def build_dataset(recipe: Recipe, out_dir: Path | None = None, *, workers: int | None = None,
                  backend: str = "local", progress: bool = True,
                  flush_every_s: float = FLUSH_EVERY_S) -> Path:
    """Build (or resume, or extend) the dataset of `recipe`; returns its directory.

    Finished rows are written to a new part file at least every `flush_every_s` seconds and
    when the build stops for any reason (including Ctrl-C), so a rerun redoes only the rest.
    """
    from gridtune.parallel import check_backend, check_workers

    check_backend(backend)
    workers = check_workers(workers)
    directory = Path(out_dir) if out_dir is not None else default_directory(recipe)
    claim_directory(recipe, directory)
    with storage.DirectoryLock(directory):
        _build_locked(recipe, directory, workers=workers, backend=backend, progress=progress,
                      flush_every_s=flush_every_s)
    return directory


def _build_locked(recipe: Recipe, directory: Path, *, workers: int, backend: str, progress: bool,
                  flush_every_s: float) -> None:
    from gridtune.parallel import run_tasks

    repair(directory)
    grid, rating = prepare_grid(recipe, directory)
    from gridtune.grids.regions import region_mask

    region_mask(recipe, grid)  # a region the grid does not have fails here, once
    if recipe.loads.profile is not None:  # a profile that does not fit the grid fails here, once
        from gridtune.grids.profiles import cached_profile

        cached_profile(recipe.loads.profile, recipe.case, grid, recipe.loads.hours)
    topologies, calib = prepare_topologies(recipe, grid, directory, workers=workers,
                                           backend=backend, progress=progress)
    done = storage.finished_ids(directory)
    todo = [i for i in range(recipe.samples) if i not in done]
    chunks = [_Chunk(grid, tuple(topologies), recipe, tuple(todo[i:i + CHUNK_SCENARIOS]))
              for i in range(0, len(todo), CHUNK_SCENARIOS)]
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=recipe.samples, initial=recipe.samples - len(todo), unit="scenario",
                   desc=f"labelling {grid.name}", dynamic_ncols=True)
    pending: list[dict[str, Any]] = []
    last_flush = time.monotonic()
    try:
        for _, rows in run_tasks(_label_chunk, chunks, workers=workers, backend=backend):
            pending += rows
            if bar is not None:
                bar.update(len(rows))
            if time.monotonic() - last_flush >= flush_every_s:
                storage.write_part(directory, pending)
                pending, last_flush = [], time.monotonic()
    finally:
        if pending:
            storage.write_part(directory, pending)
        if bar is not None:
            bar.close()
    finalize(directory, recipe, grid, rating, calib)


def finalize(directory: Path, recipe: Recipe, grid: GridModel, rating: dict[str, Any],
             calib: dict[str, Any]) -> dict[str, Any]:
    """Join the part files into scenarios.parquet and write manifest.json.

    The join goes batch by batch (`storage.join_rows`); the content hash and the summary are
    taken from the batches as they pass, so no step holds the whole table.
    """
    import shutil

    import pandas as pd

    from gridtune.files import seal, unseal
    from gridtune.grids.summary import summarize, summary_rows

    unseal(directory, ["scenarios.parquet", "manifest.json"])
    digest = storage.ContentHash()
    rows: list[pd.DataFrame] = []

    def visit(batch: pd.DataFrame) -> None:
        digest.update(batch)
        rows.append(summary_rows(batch, grid))

    storage.join_rows(directory, visit)
    if (directory / "parts").is_dir():
        shutil.rmtree(directory / "parts")
    manifest = {
        "gridtune_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "recipe": recipe.to_dict(),
        "recipe_source": recipe.source,
        "cache_key": dataset_key(recipe),
        "content_hash": digest.hexdigest(),
        "grid": {"name": grid.name, "hash": grid_hash(grid), "buses": grid.n_bus,
                 "branches": grid.n_branch, "generators": grid.n_gen},
        "ratings": rating,
        "calibration": calib,
        **summarize(pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(), grid),
    }
    storage.write_json(directory / "manifest.json", manifest)
    seal(directory, storage.DATASET_FILES, merge=False)
    return manifest
