"""Dataset recipes: TOML files that say which grid, how many scenarios and how to perturb them.

Example (the shipped case14 recipe, gridtune/resources/datasets/case14.toml):

    case = "case14"          # default case name, "matpower:<case>" (the MATPOWER library, e.g.
                             # "matpower:case_ACTIVSg200"), or a path to a pandapower .json / MATPOWER .m
    samples = 1000
    seed = 0

    [loads]
    scale = "auto"           # or [low, high]: uniform global load scale
    noise = 0.05             # std of the per-load multiplicative noise (Q follows P)
    band = 0.08              # with "auto": sample within +-band around each topology's boundary
    calibration_solver = "pips"  # with "auto": the AC solver of the boundary bisection; "ipopt"
                             # is several times faster on large grids (PIPS: about 15 s a solve on
                             # case_ACTIVSg2000) and may place a boundary slightly elsewhere
    # profile = "matpower:scenarios_ACTIVSg200"  # hourly loads (MATPOWER change table): each scenario
                             # takes a random hour's loads, times `scale` (then a range) and noise
    # hours = [4345, 6552]   # with a profile: only these hours (1-based, inclusive)
    # zone = 2               # a region: only the loads of this zone (pandapower `bus.zone`, from
                             # MATPOWER's BUS_AREA) vary; every other load stays nominal
    # buses = [9, 20, 21]    # or a region by bus indices (as in [changes]); see grids/regions.py

    [topology]
    n_minus_1 = 0.5          # share of scenarios with one branch out (grid stays connected)
    gen_outages = 0.0        # share of scenarios with one generator out
    candidates = 40          # distinct outages drawn (seeded); each is calibrated separately
    # contingencies = "matpower:contab_ACTIVSg200"  # draw outages from this contingency table instead

    [costs]
    noise = 0.0              # relative std of per-generator cost multipliers

    [limits]
    rating_factor = 1.3      # re-rate: each branch gets F x its flow at the nominal AC-OPF ...
    min_rating_mva = 5.0     # ... but never less than this floor

    [labels]
    solutions = true         # full AC-OPF for feasible scenarios (regression targets); false:
                             # a point recovered from the relaxation is enough (labels only)
    dc = true                # also solve the DC-OPF (baseline for OPF predictions)
    cycles = true            # run the cycle relaxation (SOC + PSD cuts on cycles) where SOC is
                             # feasible but the first AC solver failed (certifies most infeasibles
                             # SOC misses, ~0.3 s on case118)
    sdp = true               # run the chordal SDP where SOC is feasible but AC failed (certifies
                             # more infeasibles; 0.3 s on case57, 0.35-0.5 s on case118)
    solver = "ipopt"         # AC-OPF solver tried first, "ipopt" or "pips"; the other one is the
                             # second solver (docs/data.md, "AC-OPF solvers")
    obbt = false             # last certificate before `unknown`: the cycle relaxation with
                             # bounds tightened by optimization (seconds per scenario it runs on)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from gridtune.errors import SpecError
from gridtune.grids.changes import ChangesSpec
from gridtune.specs import from_table, read_toml, shipped_path, to_table

CALIBRATION_SOLVERS = ("pips", "ipopt")


@dataclasses.dataclass(frozen=True)
class LoadSpec:
    scale: str | tuple[float, float] = "auto"
    noise: float = 0.05
    band: float = 0.08
    profile: str | None = None  # MATPOWER load scenarios (grids/profiles.py)
    hours: tuple[int, int] | None = None
    zone: int | str | None = None  # a region whose loads alone vary (grids/regions.py)
    buses: tuple[int, ...] | None = None
    calibration_solver: str = "pips"  # AC solver of the boundary bisection (grids/calibration.py)

    def __post_init__(self) -> None:
        if self.zone is not None and self.buses is not None:
            raise SpecError("a region is one of `zone` and `buses`, not both")
        if self.buses is not None and not self.buses:
            raise SpecError("key `buses` is empty; list at least one bus of the region")
        if (self.zone is not None or self.buses is not None) and self.profile is not None:
            raise SpecError("a load profile sets every bus's load; a region (`zone` / `buses`) "
                            "varies only its own: use one of them")
        if self.profile is not None and self.scale == "auto":
            raise SpecError(f"with `profile` = `{self.profile}`, key `scale` multiplies the profile's "
                            "hourly loads: give a range, e.g. `scale = [0.95, 1.05]` (\"auto\" calibrates "
                            "the grid's own nominal load)")
        if self.hours is not None:
            if self.profile is None:
                raise SpecError("key `hours` selects hours of a load profile: set `profile` too")
            if not 1 <= self.hours[0] <= self.hours[1]:
                raise SpecError(f"key `hours` = `{list(self.hours)}` must satisfy 1 <= first <= last")
        if isinstance(self.scale, str):
            if self.scale != "auto":
                raise SpecError(f"key `scale` has bad value `{self.scale!r}`; expected \"auto\" or [low, high]")
        else:
            low, high = self.scale
            if not 0 < low < high:
                raise SpecError(f"key `scale` range `{list(self.scale)}` must satisfy 0 < low < high")
        if not 0 <= self.noise < 0.5:
            raise SpecError(f"key `noise` = `{self.noise}` must lie in [0, 0.5)")
        if not 0 < self.band < 0.5:
            raise SpecError(f"key `band` = `{self.band}` must lie in (0, 0.5)")
        if self.calibration_solver not in CALIBRATION_SOLVERS:
            raise SpecError(f"key `calibration_solver` = `{self.calibration_solver}` is not known; "
                            f"valid: {', '.join(f'`{x}`' for x in CALIBRATION_SOLVERS)}")


@dataclasses.dataclass(frozen=True)
class TopologySpec:
    n_minus_1: float = 0.5
    gen_outages: float = 0.0
    candidates: int = 40
    contingencies: str | None = None  # MATPOWER contingency table (grids/profiles.py)

    def __post_init__(self) -> None:
        for key in ("n_minus_1", "gen_outages"):
            v = getattr(self, key)
            if not 0 <= v <= 1:
                raise SpecError(f"key `{key}` = `{v}` must be a share in [0, 1]")
        if self.n_minus_1 + self.gen_outages > 1:
            raise SpecError(f"`n_minus_1` + `gen_outages` = `{self.n_minus_1 + self.gen_outages}` must not exceed 1")
        if self.candidates < 1:
            raise SpecError(f"key `candidates` = `{self.candidates}` must be at least 1")


@dataclasses.dataclass(frozen=True)
class CostSpec:
    noise: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.noise < 1:
            raise SpecError(f"key `noise` = `{self.noise}` must lie in [0, 1)")


@dataclasses.dataclass(frozen=True)
class LimitSpec:
    rating_factor: float | None = None
    min_rating_mva: float = 5.0

    def __post_init__(self) -> None:
        if self.rating_factor is not None and self.rating_factor <= 1.0:
            raise SpecError(f"key `rating_factor` = `{self.rating_factor}` must be above 1 (the "
                            "nominal OPF must stay feasible)")
        if self.min_rating_mva < 0:
            raise SpecError(f"key `min_rating_mva` = `{self.min_rating_mva}` must be >= 0")


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    solutions: bool = True
    dc: bool = True
    sdp: bool = True
    solver: Literal["ipopt", "pips"] = "ipopt"
    cycles: bool = True
    obbt: bool = False


# Keys added after datasets were first cached, with the value that reproduces the behaviour from
# before they existed. At that value they stay out of `Recipe.cache_key`, so datasets built before
# the key was added keep their cache entry instead of being labelled again.
KEYS_ADDED_LATER: dict[tuple[str, str], Any] = {("labels", "sdp"): True, ("labels", "solver"): "pips",
                                                ("labels", "cycles"): False, ("labels", "obbt"): False,
                                                ("loads", "calibration_solver"): "pips"}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A dataset recipe (see module docstring). `source` is the file it came from, if any."""

    case: str
    samples: int = 1000
    seed: int = 0
    loads: LoadSpec = LoadSpec()
    topology: TopologySpec = TopologySpec()
    costs: CostSpec = CostSpec()
    limits: LimitSpec = LimitSpec()
    labels: LabelSpec = LabelSpec()
    changes: ChangesSpec = ChangesSpec()  # a changed grid derived from `case` (grids/changes.py)
    source: str | None = None

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise SpecError(f"key `samples` = `{self.samples}` must be at least 1")
        if self.changes and (self.loads.profile or self.topology.contingencies):
            raise SpecError("a load profile or contingency table applies to the unchanged case "
                            "file: remove `[changes]` or the profile / contingency table")

    def data_files(self) -> dict[str, str]:
        """The recipe's data files besides the case: `loads.profile`, `topology.contingencies`."""
        files = {"profile": self.loads.profile, "contingencies": self.topology.contingencies}
        return {k: v for k, v in files.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        d = to_table(self)
        d.pop("source", None)
        d.pop("changes", None)
        if self.changes:  # without changes a recipe reads (and hashes) as before the table existed
            d["changes"] = self.changes.to_table()
        return d

    def cache_key(self) -> str:
        """Hash of everything that decides the scenarios and their labels except `samples`.

        Scenario i depends only on (recipe, i), so a dataset built with more samples extends
        one built with fewer: they share a cache entry.
        """
        d = self.to_dict()
        d.pop("samples")
        for (table, key), before in KEYS_ADDED_LATER.items():
            if d.get(table, {}).get(key) == before:
                del d[table][key]  # the behaviour from before the key existed: same data, same key
        case_path = Path(self.case)
        if self.case.startswith("matpower:"):  # a MATPOWER library case: its file's bytes
            from gridtune.grids.library import library_path

            case_path = library_path(self.case)
        if case_path.suffix in (".json", ".m") and case_path.is_file():
            d["case_file_sha256"] = hashlib.sha256(case_path.read_bytes()).hexdigest()
            if case_path.suffix == ".m":  # labelled in MATPOWER's formulation (grids/cases.py)
                d["formulation"] = "matpower"
            if not self.case.startswith("matpower:"):
                d["case"] = case_path.name
        for key, ref in self.data_files().items():  # by content, as the case file
            from gridtune.grids.library import data_file

            table = "loads" if key == "profile" else "topology"
            path = data_file(ref)
            if path.is_file():
                d[table][key] = path.name
                d[table][f"{key}_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def load_recipe(path: str | Path, *, samples: int | None = None) -> Recipe:
    """Read and validate a recipe file; `samples` overrides the file's value."""
    table = read_toml(path)
    table.pop("source", None)
    recipe = from_table(Recipe, table, where=str(path))
    case = recipe.case
    if Path(case).suffix in (".json", ".m") and not Path(case).is_absolute():
        # a grid file is relative to the recipe that names it
        candidate = Path(path).parent / case
        if candidate.is_file():
            case = str(candidate)
    recipe = dataclasses.replace(recipe, case=case, source=str(path))
    here = Path(path).parent  # data files, too, are relative to the recipe that names them
    def relative(ref: str | None) -> bool:  # a path relative to the recipe, not a library file
        return bool(ref) and not Path(ref).is_absolute() and not ref.startswith("matpower:")

    if relative(recipe.loads.profile):
        recipe = dataclasses.replace(recipe, loads=dataclasses.replace(
            recipe.loads, profile=str(here / recipe.loads.profile)))
    if relative(recipe.topology.contingencies):
        recipe = dataclasses.replace(recipe, topology=dataclasses.replace(
            recipe.topology, contingencies=str(here / recipe.topology.contingencies)))
    if samples is not None:
        if samples < 1:
            raise SpecError(f"--samples must be at least 1, got `{samples}`")
        recipe = dataclasses.replace(recipe, samples=samples)
    return recipe


def recipe_for(case_or_recipe: str | Path, *, samples: int | None = None) -> Recipe:
    """A recipe from a recipe file, or the shipped recipe of a name (a default case, or a
    shipped variant such as `case30_rerated`; see `shipped_names("datasets")`)."""
    p = Path(case_or_recipe)
    if p.suffix == ".toml":
        return load_recipe(p, samples=samples)
    shipped = shipped_path("datasets", str(case_or_recipe))
    if shipped is not None:
        return load_recipe(shipped, samples=samples)
    recipe = Recipe(case=str(case_or_recipe))
    return dataclasses.replace(recipe, samples=samples) if samples else recipe

